"""One row of a side-by-side results table: train a preset (with overrides) on a cohort's
training split, sample synthetic patients, judge them against the held-out patients, and copy
the run's `metrics.json` (with a `run.json` saying how it was made) into
`docs/results/<name>/`; `make results` then writes the tables.

    python scripts/side_by_side.py --name phantom2d_reflect \\
        --config configs/joint_phantom_2d.yaml --set image.padding=reflect \\
        --compare "Images, 2D phantom" --label "+ reflect padding" --order 1

On the phantom (a config with a `phantom` section and no `--train`) the cohort and its split
are the demo's (same seed, stratified by subtype). A real cohort passes `--train` and `--test`
(the `cohort split` files); an image-only cohort (mini-MIAS) gets the image report, with
its privacy and memorisation, instead of the paired one. Every row of one table shares the cohort, the split and one
segmentation judge (a MONAI U-Net trained once on the training split, kept in
`--work/judges/`), so rows differ only in the model. The budget is the training's CPU seconds
(`time.process_time`, all threads) beside its wall seconds: the machine here is shared, and
CPU time moves less with the load.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cohort_split(cfg, work: Path, args):
    """(train, test) AnnData: `--train`/`--test`, else the demo's phantom and split."""
    from radiogenomics.cli.common import phantom as phantom_from_config
    from radiogenomics.data.cohort import split_cohort
    from radiogenomics.data.h5ad import read_cohort, validate_cohort_file, write_cohort
    from radiogenomics.data.phantom import write_phantom

    if args.train is not None:
        # `cohort split` names every training file train.h5ad: the key tells cohorts apart
        where = hashlib.sha1(str(args.train.resolve()).encode()).hexdigest()[:10]
        key = f"{args.train.resolve().parent.parent.name}-{where}"
        return read_cohort(args.train), read_cohort(args.test), key
    key = hashlib.sha1(f"{cfg.phantom}|{cfg.seed}|{args.test_fraction}".encode()).hexdigest()[:10]
    folder = work / "cohorts" / f"phantom-{key}"
    train_path, test_path = folder / "split" / "train.h5ad", folder / "split" / "test.h5ad"
    if not test_path.is_file():
        path = write_phantom(
            phantom_from_config(cfg, progress=False), folder / "cohort",
            image_format=cfg.phantom.image_format, progress=False, overwrite=True,
        )  # fmt: skip
        adata, _ = validate_cohort_file(path, progress=False)
        train, test = split_cohort(adata, args.test_fraction, stratify="subtype", seed=cfg.seed)
        write_cohort(train, train_path)
        write_cohort(test, test_path)
    return read_cohort(train_path), read_cohort(test_path), folder.name


def judge(train, cfg, work: Path, cohort_key: str, steps: int):
    """The segmentation judge of this cohort: trained once, then loaded."""
    from radiogenomics.config import load_config
    from radiogenomics.models.segmenter import Segmenter

    folder = work / "judges" / cohort_key
    if (folder / "model.json").is_file():
        return Segmenter.load(folder)
    seg_cfg = load_config(None, [f"seed={cfg.seed}", f"segment.steps={steps}"])
    seg_cfg.data = cfg.data
    seg = Segmenter(train, seg_cfg, progress=False)
    seg.train(run_dir=folder, progress=True)
    return seg


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="docs/results/<name>/")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--train", type=Path, help="a real cohort's training split (.h5ad)")
    parser.add_argument("--test", type=Path, help="its held-out split (.h5ad)")
    parser.add_argument("--covariate", default="subtype")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=200, help="synthetic patients")
    parser.add_argument("--compare", required=True, help="the table's title")
    parser.add_argument("--label", required=True, help="the row's label")
    parser.add_argument("--order", type=int, default=0)
    parser.add_argument("--judge-steps", type=int, default=1000, help="the judge's U-Net steps")
    parser.add_argument("--from-run", help="sample another row's trained model (no training)")
    parser.add_argument("--guidance", type=float, help="with --from-run: the flow's guidance")
    parser.add_argument(
        "--evaluate-only", action="store_true",
        help="judge a finished row's synthetic patients again (keeps its run.json budget)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("side_by_side"))
    args = parser.parse_args(argv)
    if (args.train is None) != (args.test is None):
        parser.error("--train and --test go together")

    import dataclasses

    from radiogenomics.config import load_config
    from radiogenomics.data.h5ad import read_cohort
    from radiogenomics.evaluate.paired_report import paired_report
    from radiogenomics.evaluate.pairs import paired_rows
    from radiogenomics.evaluate.report import image_report
    from radiogenomics.models.base import CohortModel

    cfg = load_config(args.config, args.overrides)
    train, test, cohort_key = cohort_split(cfg, args.work, args)
    seg = judge(train, cfg, args.work, cohort_key, args.judge_steps)
    out = args.work / "runs" / args.name
    dest = ROOT / "docs" / "results" / args.name
    run = args.work / "runs" / (args.from_run or args.name) / "run"  # the trained model
    if args.evaluate_only:  # a finished row judged again by today's evaluation
        earlier = json.loads((dest / "run.json").read_text())
        wall, cpu = earlier["wall_s"], earlier["cpu_s"]
        path = out / "synthetic" / "cohort.h5ad"
        size = read_cohort(path).uns["rg"]["image_size"]
    elif args.from_run:  # another row's trained model, sampled with another guidance
        from radiogenomics.models.base import model_class

        model = model_class(run).load(run, train)
        if args.guidance is not None:
            if not hasattr(model.image_side, "guidance"):
                parser.error(f"--guidance: {run} has no flow image side")
            model.image_side.guidance = args.guidance
        earlier = json.loads((ROOT / "docs" / "results" / args.from_run / "run.json").read_text())
        wall, cpu = earlier["wall_s"], earlier["cpu_s"]
        path = model.sample(args.n, seed=cfg.seed).write(out / "synthetic", overwrite=True)
        size = model.meta["image_size"]
    else:
        model = CohortModel.registry[cfg.model](train, cfg, progress=False)
        wall, cpu = time.perf_counter(), time.process_time()
        model.train(run_dir=run, progress=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        path = model.sample(args.n, seed=cfg.seed).write(out / "synthetic", overwrite=True)
        size = model.meta["image_size"]
    data_cfg = dataclasses.replace(cfg.data, image_size=[int(s) for s in size])
    if len(paired_rows(train)):
        paired_report(
            train, test, read_cohort(path), out / "report", data_cfg, covariate=args.covariate,
            log_csv=run / "log.csv", segmenter=seg, seed=cfg.seed, progress=True,
        )  # fmt: skip
    else:  # an image-only cohort (mini-MIAS): the image report, privacy and memorisation
        image_report(
            test, read_cohort(path), out / "report", data_cfg, segmenter=seg, seed=cfg.seed,
            progress=True, train=train,
        )  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "metrics.json").write_text((out / "report" / "metrics.json").read_text())
    overrides = "".join(f" --set {o}" for o in args.overrides)
    if args.from_run:
        overrides += f" --from-run {args.from_run}" + (
            f" --guidance {args.guidance:g}" if args.guidance is not None else ""
        )
    cohort = f" --train {args.train} --test {args.test}" if args.train else ""
    meta = {
        "title": f"{args.compare}: {args.label}",
        "command": f"python scripts/side_by_side.py --name {args.name} --config {args.config}"
        f"{overrides}{cohort}",
        "config": f"{args.config}{overrides}",
        "seed": cfg.seed,
        "steps": cfg.train.steps,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "environment": " ".join(
            f"{k}={os.environ[k]}"
            for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
            if k in os.environ
        ),
        "machine": "a 2-core CPU, shared",
        "cpu_s": round(cpu),
        "wall_s": round(wall),
        "commit": earlier["commit"] if args.evaluate_only else commit(),
        **({"evaluated_with": commit()} if args.evaluate_only else {}),
        "date": datetime.date.today().isoformat(),
        "compare": args.compare,
        "label": args.label,
        "order": args.order,
    }
    (dest / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
