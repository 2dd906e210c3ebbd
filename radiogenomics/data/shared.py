"""The shared real data (`../shared/data`, see its README): find it and prepare image cohorts.

The image sets there are numpy arrays (`.npz`); `prepare_shared` writes them out as PNG files plus
an image table, so that a manifest in `data_manifests/` can build a cohort from them; with
`slices="all"`, TCGA-LGG's every tumour slice, as one NIfTI stack per patient (the cohort of
`data_manifests/tcga_lgg_slices.yaml`, which declares `slice_axis: 2`). The prepared
folder is self-contained: images, masks, `images.csv`, and copies of the small tables the manifest
reads (with `SOURCE.txt`, which carries the licence terms). Expression-only sets (TCGA-GBM, NSCLC)
need no preparation: their manifests read the shared files directly.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radiogenomics._atomic import atomic_write, atomic_write_text
from radiogenomics.data.io import save_image

log = logging.getLogger(__name__)

ENV_VAR = "RADIOGENOMICS_SHARED_DATA"


def find_shared_data() -> Path:
    """The shared data folder: $RADIOGENOMICS_SHARED_DATA, else `../shared/data` beside the repo.

    The folder may not exist (an installed package, a machine without the data); callers check.
    """
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


SHARED_DATA = find_shared_data()

# name -> (folder under the shared data, npz file, tables copied beside the images)
DATASETS = {
    "tcga-lgg": (
        "tcga-lgg",
        "lgg_max_area_slice_256.npz",
        ["data.csv", "expression_24genes.csv", "lgg_clinical_rtcga_110.csv", "SOURCE.txt"],
    ),
    "mini-mias": ("mini-mias", "mias_lesion_crops_128.npz", ["SOURCE.txt", "Licence.txt"]),
    # normal-tissue windows from the lesion-free films: the negatives of the lesion classifier
    "mini-mias-normal": ("mini-mias", "mias_full_256.npz", ["SOURCE.txt", "Licence.txt"]),
}
# name -> the npz with every tumour-bearing slice (prepare_shared's slices="all")
SLICE_SETS = {"tcga-lgg": "lgg_tumour_slices_128.npz"}
NORMAL_WINDOW = 64  # 64 px of the 256 film = the 51 mm field of a 128 px lesion crop
NORMAL_PER_FILM = 2
NORMAL_INSET = 10  # px; matches the lesion crops' share of air (see _normal_rows)
IMAGE_TABLE = "images.csv"


def prepare_shared(
    name: str,
    data_dir: str | Path | None,
    out_dir: str | Path,
    progress: bool = True,
    *,
    slices: str = "largest",
) -> Path:
    """Write a shared image set as PNG images and masks plus `images.csv`; return `out_dir`.

    `data_dir` is the shared data folder (or the data set's own folder; None: `SHARED_DATA`).
    `images.csv` has columns id, image, mask (paths relative to `out_dir`) and, for mini-MIAS,
    the lesion annotations. Running it again overwrites the files; every write is atomic.
    `slices` (TCGA-LGG): "largest", one slice per patient, the one with the largest tumour
    area, at 256x256 (what the 110-patient manifests read); "all", every tumour-bearing slice
    (128x128, 1373 of the 110 patients), one stack per patient as NIfTI `(H, W, S, C)` with a
    mask stack `(H, W, S)` (slice_axis 2), and `images.csv` also has `n_slices` and
    `slice_index` (the slices' positions in the patient's scan).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown shared data set {name!r}; choose one of {sorted(DATASETS)}")
    if slices not in ("largest", "all"):
        raise ValueError(f"slices must be 'largest' or 'all'; got {slices!r}")
    if slices == "all" and name not in SLICE_SETS:
        raise ValueError(
            f"slices='all': only {sorted(SLICE_SETS)} has stacks of slices; {name} has one "
            "image per row"
        )
    folder, npz, tables = DATASETS[name]
    if slices == "all":
        npz = SLICE_SETS[name]
    data_dir = Path(SHARED_DATA if data_dir is None else data_dir)
    source = data_dir / folder if (data_dir / folder).is_dir() else data_dir
    for file in [npz, *tables]:
        if not (source / file).is_file():
            raise FileNotFoundError(f"shared data file not found: {source / file}")
    out_dir = Path(out_dir)
    with np.load(source / npz, allow_pickle=False) as arrays:
        data = {key: arrays[key] for key in arrays.files}
    if slices == "all":
        rows, images, masks = _lgg_stacks(data)
    else:
        rows_of = {"tcga-lgg": _lgg_rows, "mini-mias": _mias_rows, "mini-mias-normal": _normal_rows}
        rows, images, masks = rows_of[name](data)
        # images (N, H, W[, C]) -> channel-first (C, H, W); masks (N, H, W) -> (1, H, W)
        images = [x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0) for x in images]
        masks = [m[None].astype(np.uint8) for m in masks]
    for row, image, mask in zip(
        tqdm(rows, desc=f"writing {name}", disable=not progress), images, masks, strict=True
    ):
        save_image(image, out_dir / row["image"])
        save_image(mask, out_dir / row["mask"])
    for file in tables:
        atomic_write(out_dir / file, lambda tmp, src=source / file: shutil.copyfile(src, tmp))
    atomic_write_text(out_dir / IMAGE_TABLE, pd.DataFrame(rows).to_csv(index=False))
    log.info("prepared %s: %d images in %s", name, len(rows), out_dir)
    return out_dir


def _lgg_rows(data: dict):
    # one slice per patient (the largest tumour area); ids are already 'TCGA-CS-4941'
    rows = [
        {"id": pid, "image": f"images/{pid}.png", "mask": f"masks/{pid}.png"}
        for pid in map(str, data["patient"])
    ]
    return rows, data["images"], data["masks"]


def _lgg_stacks(data: dict):
    """One stack per patient of every tumour slice, in scan order: images (C, H, W, S) and
    masks (1, H, W, S) uint8 (slice_axis 2), patients in the npz's order."""
    patients = [str(p) for p in data["patient"]]
    rows, images, masks = [], [], []
    for pid in dict.fromkeys(patients):
        at = np.flatnonzero(np.asarray(patients) == pid)
        at = at[np.argsort(data["slice_index"][at], kind="stable")]
        rows.append(
            {
                "id": pid,
                "image": f"images/{pid}.nii.gz",
                "mask": f"masks/{pid}.nii.gz",
                "n_slices": len(at),
                "slice_index": ",".join(str(int(k)) for k in data["slice_index"][at]),
            }
        )
        images.append(np.moveaxis(data["images"][at], 0, -1).transpose(2, 0, 1, 3))
        masks.append(np.moveaxis(data["masks"][at], 0, -1)[None].astype(np.uint8))
    return rows, images, masks


def _subject(refnum: str) -> str:
    # films come in left/right pairs of one woman: mdb001+mdb002 -> mias001
    return f"mias{(int(refnum[3:]) + 1) // 2:03d}"


def _normal_rows(data: dict, seed: int = 0):
    """`NORMAL_PER_FILM` distinct windows from every NORM film, centred inside the breast.

    Like a lesion crop, which is centred on a lesion, a window may reach the skin line, the
    air or (zero-padded) past the film's edge, so where a crop was taken does not tell the two
    apart: centres lie `NORMAL_INSET` px inside the breast (the film above its Otsu
    threshold), which gives the windows the lesion crops' share of air and padding (mean
    fraction of pixels <= 20: 0.09 in both). Masks are empty (no lesion). Films of another
    class without annotated coordinates (mdb059, and widespread calcifications) are not normal
    and are left out.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(seed)
    half = NORMAL_WINDOW // 2
    rows, images = [], []
    for i, ref in enumerate(map(str, data["refnum"])):
        if str(data["abnormality"][i]) != "NORM":
            continue
        film = data["images"][i]
        breast = film > threshold_otsu(film)
        inside = ndimage.binary_erosion(breast, np.ones((3, 3)), iterations=NORMAL_INSET)
        centres = np.argwhere(inside)
        padded = np.pad(film, half)  # zeros past the film's edge, as in the lesion crops
        picks = rng.choice(len(centres), NORMAL_PER_FILM, replace=False)
        for j, (r, c) in enumerate(centres[picks]):
            tile_id = f"{ref}_t{j + 1}"
            images.append(padded[r : r + 2 * half, c : c + 2 * half])
            rows.append(
                {
                    "id": tile_id,
                    "image": f"images/{tile_id}.png",
                    "mask": f"masks/{tile_id}.png",
                    "refnum": ref,
                    "subject": _subject(ref),
                    "tissue": data["tissue"][i].item(),
                }
            )
    images = np.stack(images)
    return rows, images, np.zeros_like(images)


def _mias_rows(data: dict):
    # one row per lesion: id = film refnum, with _1, _2, ... where a film has several lesions
    refnums = [str(r) for r in data["refnum"]]
    counts = pd.Series(refnums).value_counts()
    seen: dict[str, int] = {}
    rows = []
    for i, ref in enumerate(refnums):
        seen[ref] = seen.get(ref, 0) + 1
        lesion_id = f"{ref}_{seen[ref]}" if counts[ref] > 1 else ref
        rows.append(
            {
                "id": lesion_id,
                "image": f"images/{lesion_id}.png",
                "mask": f"masks/{lesion_id}.png",
                "refnum": ref,
                "subject": _subject(ref),
                **{key: data[key][i].item() for key in ("tissue", "abnormality", "severity")},
                **{key: int(data[key][i]) for key in ("x", "y", "radius")},
            }
        )
    return rows, data["images"], data["masks"]
