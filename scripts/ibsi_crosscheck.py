"""The report's radiomic features against MIRP (IBSI-compliant) on TCGA-LGG tumour slices and
phantom lesions: one agreement row per feature (`radiogenomics.radiomap.ibsi.agreement`),
printed as Markdown; `--out DIR` also writes each set's full table (lesion x feature) as CSV.
Needs the `ibsi` extra and, for the real slices, the shared data:

    pip install -e ".[ibsi]"
    python scripts/ibsi_crosscheck.py [--slices 110] [--phantom 64] [--out DIR]

The real slices are scaled as the cohort loader does by default (min-max over the image to
[-1, 1]; the features average the 3 channels).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def lgg_slices(n: int):
    """`n` TCGA-LGG tumour slices spread over the 110 patients: images, masks, patient ids."""
    from radiogenomics.data.shared import SHARED_DATA

    path = SHARED_DATA / "tcga-lgg" / "lgg_max_area_slice_256.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set RADIOGENOMICS_SHARED_DATA)")
    raw = np.load(path)
    pick = np.unique(np.linspace(0, len(raw["patient"]) - 1, n).round().astype(int))
    images = np.moveaxis(raw["images"][pick], -1, 1).astype(np.float64)
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    hi = images.max(axis=(1, 2, 3), keepdims=True)
    return (
        (images - lo) / (hi - lo) * 2 - 1,
        (raw["masks"][pick] > 0)[:, None],
        raw["patient"][pick],
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=110, help="TCGA-LGG slices (0: none)")
    parser.add_argument("--phantom", type=int, default=64, help="2D phantom lesions (0: none)")
    parser.add_argument("--out", type=Path, help="folder for the full tables (CSV)")
    args = parser.parse_args(argv)

    from radiogenomics.data.phantom import make_phantom
    from radiogenomics.evaluate.figures import markdown_table
    from radiogenomics.radiomap.ibsi import agreement, ibsi_comparison

    sets = {}
    if args.slices:
        images, masks, patients = lgg_slices(args.slices)
        sets[f"TCGA-LGG, {len(patients)} slices"] = ibsi_comparison(images, masks, patients)
    if args.phantom:
        ph = make_phantom(args.phantom, 2, seed=0, progress=False)
        sets[f"2D phantom, {args.phantom} lesions"] = ibsi_comparison(ph.images, ph.masks)
    for k, (name, table) in enumerate(sets.items()):
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.out / f"ibsi_{k}.csv", index=False)
        summary = agreement(table).drop(columns="note")
        print(f"\n### {name}\n")
        print(markdown_table(summary))


if __name__ == "__main__":
    main()
