"""`radiogenomics demo`: phantom -> split -> joint model -> synthetic patients -> report.html."""

from __future__ import annotations

import json
from pathlib import Path

from radiogenomics.cli.common import phantom as phantom_from_config
from radiogenomics.cli.common import resolve_config, say
from radiogenomics.config import dump_config


def cmd_demo(args) -> int:
    """The README's first command: phantom -> split -> joint model -> synthetic patients ->
    one evaluation with report.html; prints where each file is and the headline numbers."""
    import dataclasses

    from radiogenomics import pl
    from radiogenomics.data.cohort import split_cohort
    from radiogenomics.data.h5ad import read_cohort, validate_cohort_file, write_cohort
    from radiogenomics.data.phantom import write_phantom
    from radiogenomics.evaluate.paired_report import paired_report
    from radiogenomics.models.joint_gan import JointGAN

    if args.config is None:
        if not DEMO_CONFIG.is_file():
            raise ValueError(
                f"the demo's preset {DEMO_CONFIG} is not here (an installed package without the "
                "repository's configs/): pass --config configs/joint_phantom_2d.yaml"
            )
        args.config = DEMO_CONFIG
    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    if args.n_samples < 5:
        raise ValueError(
            f"--n-samples must be >= 5 (the evaluation correlates); got {args.n_samples}"
        )
    out, progress = args.out, not args.quiet
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARK).is_file():
        raise ValueError(f"--out {out} is a non-empty folder the demo did not write; pick another")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("written by `radiogenomics demo`; a rerun replaces it\n")
    phantom = phantom_from_config(cfg, progress=progress)
    # the demo's own folders: a rerun replaces them whole
    path = write_phantom(
        phantom, out / "cohort", image_format=cfg.phantom.image_format,
        progress=progress, overwrite=True,
    )  # fmt: skip
    adata, summary = validate_cohort_file(path, progress=progress)
    say("phantom cohort", path)
    pl.patients(adata, n=16, images=phantom.images, masks=phantom.masks, color_by="subtype",
                save=out / "patients.png")  # fmt: skip
    say("patient figure", out / "patients.png")
    pl.truth_map(adata, save=out / "truth_map.png")
    say("ground-truth map figure", out / "truth_map.png")

    train, test = split_cohort(adata, args.test_fraction, stratify="subtype", seed=cfg.seed)
    write_cohort(train, out / "split" / "train.h5ad")
    write_cohort(test, out / "split" / "test.h5ad")
    say(f"train / test split ({train.n_obs} / {test.n_obs} patients)", out / "split")
    train, test = (
        read_cohort(out / "split" / "train.h5ad"),
        read_cohort(out / "split" / "test.h5ad"),
    )

    run = out / "run"
    if (run / "model.json").exists():
        import shutil

        shutil.rmtree(run)  # a finished earlier demo: train anew (a killed one resumes)
    model = JointGAN(train, cfg, progress=progress)
    trained = model.train(run_dir=run, progress=progress)
    if trained.get("resumed_from") is not None:  # a killed demo goes on from its checkpoint
        say(f"resumed from step {trained['resumed_from']}", run / "checkpoint")
    pl.loss_curves(run / "log.csv", save=run / "loss_curves.png")
    say(f"trained {model!r}", run)

    synth = model.sample(args.n_samples, seed=cfg.seed)
    path = synth.write(out / "synthetic", progress=progress, overwrite=True)
    say(f"{args.n_samples} synthetic patients", path)
    data_cfg = dataclasses.replace(cfg.data, image_size=list(model.meta["image_size"]))
    metrics, report = paired_report(
        train, test, read_cohort(path), out / "report", data_cfg,
        covariate="subtype", log_csv=run / "log.csv", seed=cfg.seed, progress=progress,
    )  # fmt: skip
    say("metrics", out / "report" / "metrics.json")
    say("report", report)
    headline = {k: metrics.get(k) for k in DEMO_HEADLINE if k in metrics}
    print(json.dumps({"cohort": summary, **headline}))
    return 0


# what the demo prints of metrics.json: the planted associations on real and synthetic
# patients (size and contrast are the README's acceptance numbers), gene and pair realism,
# map agreement and privacy
DEMO_HEADLINE = (
    "phantom_size_real", "phantom_size_synthetic", "phantom_contrast_real",
    "phantom_contrast_synthetic", "gene_distance_ratio", "gene_std_ratio_median",
    "pair_spearman", "pair_spearman_reference", "map_rank_correlation",
    "map_reference_heldout", "privacy_joint_mia_auc", "privacy_flag",
)  # fmt: skip


DEMO_MARK = ".radiogenomics-demo"


# the demo's preset when no --config is given: the repository's (an editable install's) copy
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "joint_phantom_2d.yaml"
