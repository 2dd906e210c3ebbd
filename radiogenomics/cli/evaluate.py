"""`radiogenomics evaluate`: the verb's handlers (gene reports and k-fold, image reports, the
phantom's planted-feature checks, the augmentation experiment); its arguments are parsed in
`radiogenomics.cli.parser`."""

from __future__ import annotations

import time

from radiogenomics import _keys as K
from radiogenomics.cli.common import resolve_config, say
from radiogenomics.cli.outputs import EVALUATE_MARK, mark
from radiogenomics.config import dump_config


def _read(path):
    # every cohort is validated as `cohort validate` would (read_valid_cohort), quietly
    from radiogenomics.data.h5ad import read_valid_cohort

    return read_valid_cohort(path)


def cmd_evaluate(args) -> int:
    """Dispatch on the arguments given: --kfold, --image-run, --negatives, then the cohorts:
    paired (expression and images in the synthetic and the real cohort, with --train), images,
    or genes."""
    args.started = time.time()  # outputs older than this are a previous run's: not reported
    check_inputs(args)  # every input, before any work or any file written
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        mark(args.out, EVALUATE_MARK, "evaluate")
    if args.kfold is not None:
        from radiogenomics.models.kfold import gene_kfold

        if args.data is None:
            raise ValueError("--kfold needs --data (the whole real cohort)")
        cfg = resolve_config(args)
        if args.dry_run:
            print(dump_config(cfg), end="")
            return 0
        scores, summary = gene_kfold(
            _read(args.data),
            cfg,
            args.out,
            k=args.kfold,
            covariate=args.covariate,
            stratify=args.stratify,
            progress=not args.quiet,
        )
        say("k-fold scores", args.out / "kfold.csv")
        say("report", args.out / "report.md")
        cols = [c for c in ("distance_ratio", "dendrogram_ratio", "detection_auc") if c in summary]
        print(summary[cols].round(3).to_string())
        from radiogenomics.evaluate.report import fold_means, generated_sets

        means = fold_means(scores)
        for name in generated_sets(means):
            _say_gaussian(means, name)
        return 0
    if args.image_run is not None:
        return _evaluate_phantom(args)
    if args.negatives is not None:
        return _evaluate_augmentation(args)
    synth = _read(args.synthetic) if args.synthetic is not None else None
    # a real cohort with expression and no images (the expression half of a combined-GANs
    # cohort, say) scores the synthetic patients' expression alone: the gene report
    gene_only_real = (
        args.real is not None
        and synth is not None
        and _has(synth, K.HAS_EXPRESSION)
        and not _has(real_ := _read(args.real), K.HAS_IMAGE)
        and _has(real_, K.HAS_EXPRESSION)
    )
    if synth is not None and _has(synth, K.HAS_IMAGE) and not gene_only_real:
        if _has(synth, K.HAS_EXPRESSION) and args.train is not None and args.real is not None:
            train, real = _read(args.train), _read(args.real)
            if _has(real, K.HAS_EXPRESSION) and _has(real, K.HAS_IMAGE):
                return _evaluate_pairs(args, train, real, synth)
        return _evaluate_images(args, synth)
    from radiogenomics.evaluate.report import gene_report

    missing = [f"--{k}" for k in ("train", "real", "synthetic") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"evaluate needs {', '.join(missing)} (or --data with --kfold)")
    train, real = _read(args.train), _read(args.real)
    table, report = gene_report(
        train, real, synth, args.out, covariate=args.covariate, seed=args.seed
    )
    say("metrics", args.out / "metrics.csv")
    say("report", report)
    cols = [c for c in ("distance_ratio", "dendrogram_ratio", "detection_auc") if c in table]
    print(table[cols].round(3).to_string())
    _say_gaussian(table, "synthetic")
    _say_privacy(args.out / "privacy.csv", args)
    return 0


def _say_gaussian(table, name: str) -> None:
    """Print, per gene score, whether set `name` beats the multivariate Gaussian baseline."""
    from radiogenomics.evaluate.report import against_gaussian, gaussian_verdict

    print(gaussian_verdict(table, name))
    print(against_gaussian(table, name).to_string())


def check_inputs(args) -> None:
    """Refuse, naming the flag, an input that is missing or is not what the flag takes: the
    cohorts, the run folders, the training log and the config. (The cohorts' contents are
    validated as they are read, also before any output.)"""
    if args.kfold is None and args.image_run is None and args.negatives is None:
        if args.real is None or args.synthetic is None:  # a cohort report needs both
            missing = [f"--{k}" for k in ("train", "real", "synthetic") if getattr(args, k) is None]
            raise ValueError(f"evaluate needs {', '.join(missing)} (or --data with --kfold)")
    for flag in ("train", "real", "synthetic", "data", "negatives", "config"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            what = "does not exist" if not path.exists() else "is a folder, not a file"
            raise FileNotFoundError(f"--{flag} {path} {what}")
    for flag in ("segmenter", "image_run"):
        path = getattr(args, flag)
        name = "--" + flag.replace("_", "-")
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{name} {path} does not exist")
        if path is not None and not (path / "model.json").is_file():
            raise FileNotFoundError(f"{name} {path} holds no trained run (no model.json)")
    if args.log is not None:
        _check_log(args.log)


def _check_log(path) -> None:
    import pandas as pd

    if not path.is_file():
        what = "does not exist" if not path.exists() else "is a folder, not a file"
        raise FileNotFoundError(f"--log {path} {what}")
    try:
        columns = pd.read_csv(path, nrows=2).columns
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"--log {path} is not a CSV training log ({err})") from None
    if "step" not in columns:
        raise ValueError(
            f"--log {path} is no training log: it has no 'step' column (a run folder's "
            "log.csv has one)"
        )


def _fresh(path, args) -> bool:
    """Whether this run wrote `path` (an --out folder may hold a previous run's files)."""
    return path.is_file() and path.stat().st_mtime >= args.started - 1


def _say_privacy(path, args) -> None:
    """Print where the privacy scores are (`path`: privacy.csv; memorisation_scores.csv beside
    it), their headline and, loudly, a flagged record or flagged images."""
    import pandas as pd

    if _fresh(path, args):
        say("privacy", path)
        table = pd.read_csv(path, index_col=0)
        print(table[["dcr_ratio", "mia_auc", "mia_threshold", "flag"]].round(3).to_string())
        for kind in table.index[table["flag"].astype(bool)]:
            print(f"WARNING: privacy flag on the {kind} records: the synthetic set looks like "
                  "copies of training patients")  # fmt: skip
    memo = path.with_name("memorisation_scores.csv")
    if not _fresh(memo, args):
        return
    say("image memorisation", path.with_name("memorisation.csv"))
    s = pd.read_csv(memo, index_col=0)["value"]
    print(f"median d_train / d_held {float(s['image_memorisation_ratio']):.3f} (held-out real "
          f"{float(s['image_memorisation_ratio_reference']):.3f}); near-copies "
          f"{float(s['image_near_copy_share']):.3f}")  # fmt: skip
    if str(s["image_memorisation_flag"]) == "True":
        print("WARNING: privacy flag on the images: the synthetic images look like copies of "
              "training images (see memorisation.png)")  # fmt: skip


def _evaluate_phantom(args) -> int:
    """Planted-feature and gene-swap checks of an image run on its phantom cohort."""
    from radiogenomics._atomic import atomic_write
    from radiogenomics.evaluate.phantom import mask_fidelity, partner_swap, planted_features
    from radiogenomics.models.image_gan import ImageGAN

    if args.data is None:
        raise ValueError("--image-run needs --data (the phantom cohort the run was trained on)")
    adata = _read(args.data)
    model = ImageGAN.load(args.image_run, adata)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = [
        ("planted_features", planted_features(model, adata, seed=args.seed)),
        ("partner_swap", partner_swap(model, adata, seed=args.seed)),
    ]
    if args.segmenter is not None:
        from radiogenomics.models.segmenter import Segmenter

        judge = Segmenter.load(args.segmenter)
        tables.append(("mask_fidelity", mask_fidelity(model, adata, judge, seed=args.seed)))
    for name, table in tables:
        atomic_write(args.out / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp))
        say(name, args.out / f"{name}.csv")
        print(table.round(3).to_string())
    return 0


def _evaluate_augmentation(args) -> int:
    """Lesion-vs-normal classifier F1 with and without the synthetic lesions."""
    import dataclasses

    from radiogenomics._atomic import atomic_write, atomic_write_text
    from radiogenomics.data.dataset import load_images
    from radiogenomics.evaluate.augmentation import (
        augmentation_experiment,
        split_negatives,
        summarise,
    )

    missing = [f"--{k}" for k in ("train", "real", "synthetic") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"--negatives needs {', '.join(missing)}")
    train, test = _read(args.train), _read(args.real)
    normal, synth = _read(args.negatives), _read(args.synthetic)
    size = normal.uns[K.UNS].get(K.IMAGE_SIZE)  # recorded by the validation that read the files
    if size is None:
        raise ValueError(f"--negatives {args.negatives}: no patient has an image")
    train_normal, test_normal = split_negatives(normal, train, test, seed=args.seed)
    # every set at the negatives' size and field, read the same way
    data = dataclasses.replace(resolve_config(args).data, image_size=[int(s) for s in size])
    crops = [
        load_images(a, data, progress=not args.quiet)[0][:, :1]
        for a in (train, train_normal, test, test_normal, synth)
    ]
    table = augmentation_experiment(
        *crops,
        repeats=args.repeats,
        steps=args.classifier_steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    summary = summarise(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "augmentation.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write_text(args.out / "augmentation_summary.csv", summary.to_csv())
    say("augmentation", args.out / "augmentation.csv")
    print(summary.round(3).to_string())
    return 0


def _has(adata, flag: str) -> bool:
    """Does any patient of `adata` have the modality `flag` (has_image, has_expression)?"""
    return flag in adata.obs and bool(adata.obs[flag].astype(bool).any())


def _image_config(args, synth):
    """The config both cohorts' images are read with, and the --segmenter (or None)."""
    cfg = resolve_config(args)
    segmenter = None
    if args.segmenter is not None:
        from radiogenomics.models.segmenter import Segmenter

        segmenter = Segmenter.load(args.segmenter)
        if args.config is None:  # read both cohorts as the segmentation net was trained
            cfg.data = segmenter.config.data
    if cfg.data.image_size is None:  # compare at the synthetic images' size
        cfg.data.image_size = list(synth.uns["rg"]["image_size"])
    cfg.data.spatial_dims = int(synth.uns["rg"]["spatial_dims"])
    return cfg, segmenter


def _evaluate_pairs(args, train, real, synth) -> int:
    """Paired cohorts (expression and images): genes, images and pairs in one report."""
    import pandas as pd

    from radiogenomics.evaluate.paired_report import paired_report

    cfg, segmenter = _image_config(args, synth)
    metrics, report = paired_report(
        train,
        real,
        synth,
        args.out,
        cfg.data,
        covariate=args.covariate,
        log_csv=args.log,
        segmenter=segmenter,
        seed=args.seed,
        progress=not args.quiet,
    )
    say("metrics", args.out / "metrics.json")
    say("headline table", args.out / "metrics.csv")
    say("report", report)
    say("gene scores", args.out / "genes" / "metrics.csv")
    say("image scores", args.out / "images" / "metrics.csv")
    say("pair consistency", args.out / "pairs" / "consistency.csv")
    if _fresh(args.out / "pairs" / "phantom_associations.csv", args):
        say("phantom associations", args.out / "pairs" / "phantom_associations.csv")
    if _fresh(args.out / "maps" / "map_agreement.csv", args):
        say("map agreement", args.out / "maps" / "map_agreement.csv")
    print(pd.read_csv(args.out / "metrics.csv", index_col=0).iloc[:, :3].round(3).to_string())
    _say_gaussian(pd.read_csv(args.out / "genes" / "metrics.csv", index_col=0), "synthetic")
    _say_privacy(args.out / "privacy" / "privacy.csv", args)
    return 0


def _evaluate_images(args, synth) -> int:
    from radiogenomics.evaluate.report import image_report

    if args.real is None:
        raise ValueError("evaluate needs --real (held-out real patients with images and masks)")
    cfg, segmenter = _image_config(args, synth)
    real = _read(args.real)
    table, report = image_report(
        real,
        synth,
        args.out,
        cfg.data,
        segmenter=segmenter,
        seed=args.seed,
        progress=not args.quiet,
        train=None if args.train is None else _read(args.train),  # --train: privacy too
    )
    say("metrics", args.out / "metrics.csv")
    say("headline numbers", args.out / "metrics.json")
    say("report", report)
    print(table.round(3).to_string())
    _say_privacy(args.out / "privacy.csv", args)
    return 0
