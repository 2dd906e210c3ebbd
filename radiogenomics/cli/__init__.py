"""The `radiogenomics` command line: thin verbs over the Python API, one config tree."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from radiogenomics import _keys as K
from radiogenomics.cli.common import resolve_config, say
from radiogenomics.cli.parser import build_parser
from radiogenomics.config import Config, dump_config, load_config

log = logging.getLogger("radiogenomics")

MAP_COLUMNS = ["genomic", "feature", "effect", "p", "p_adj"]  # DESIGN section 5's contract


def _phantom(cfg: Config, progress: bool):
    from radiogenomics.data.phantom import make_phantom

    p = cfg.phantom
    return make_phantom(
        n=p.n,
        spatial_dims=p.spatial_dims,
        size=p.size,
        n_genes=p.n_genes,
        noise=p.noise,
        seed=cfg.seed,
        frac_image_only=p.frac_image_only,
        frac_expression_only=p.frac_expression_only,
        progress=progress,
    )


def cmd_demo(args) -> int:
    """The README's first command: phantom -> split -> joint model -> synthetic patients ->
    one evaluation with report.html; prints where each file is and the headline numbers."""
    import dataclasses

    from radiogenomics import pl
    from radiogenomics.data.cohort import split_cohort
    from radiogenomics.data.h5ad import read_cohort, validate_cohort_file, write_cohort
    from radiogenomics.data.phantom import write_phantom
    from radiogenomics.evaluate.report import paired_report
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
    phantom = _phantom(cfg, progress=progress)
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


def cmd_cohort(args) -> int:
    from radiogenomics.data.cohort import validate_cohort
    from radiogenomics.data.h5ad import read_valid_cohort, validate_cohort_file, write_cohort

    progress = not args.quiet
    if args.action == "phantom":
        from radiogenomics.data.phantom import write_phantom

        overrides = list(args.overrides)
        for flag, key in (
            ("n", "phantom.n"),
            ("spatial_dims", "phantom.spatial_dims"),
            ("size", "phantom.size"),
            ("seed", "seed"),
        ):
            if getattr(args, flag) is not None:
                overrides.append(f"{key}={getattr(args, flag)}")
        cfg = load_config(args.config, overrides)
        if args.dry_run:
            print(dump_config(cfg), end="")
            return 0
        phantom = _phantom(cfg, progress)
        path = write_phantom(
            phantom,
            args.out,
            image_format=cfg.phantom.image_format,
            progress=progress,
            overwrite=args.overwrite,
        )
        say("phantom cohort", path)
        return 0
    if args.action == "build":
        from radiogenomics.data.manifest import build_cohort

        kwargs = {"spatial_dims": args.spatial_dims}
        if args.root is not None:
            kwargs["root"] = args.root
        adata = build_cohort(args.manifest, **kwargs)
        summary = validate_cohort(adata, check_files=not args.no_check_files, progress=progress)
        path = write_cohort(adata, args.out)
        say("cohort", path)
        print(json.dumps(summary))
        return 0
    if args.action == "setup":
        from radiogenomics.data.h5ad import setup_h5ad

        def names(value):
            return None if value is None else [v.strip() for v in value.split(",") if v.strip()]

        adata = setup_h5ad(
            args.h5ad,
            spatial_dims=args.spatial_dims,
            categorical=names(args.categorical),
            numeric=names(args.numeric),
            image_key=args.image_key,
            mask_key=args.mask_key,
            provenance={"setup_from": args.h5ad.resolve()},
        )
        summary = validate_cohort(adata, check_files=not args.no_check_files, progress=progress)
        path = write_cohort(adata, args.out)
        say("cohort", path)
        print(json.dumps(summary))
        return 0
    if args.action == "validate":
        # the same check (and message) as every verb that reads a cohort: read_valid_cohort
        _, summary = validate_cohort_file(
            args.cohort, check_files=not args.no_check_files, progress=progress
        )
        print(f"{args.cohort}: valid")
        print(json.dumps(summary))
        return 0
    if args.action == "split":
        from radiogenomics.data.cohort import split_cohort

        train, test = split_cohort(
            read_valid_cohort(args.cohort, progress=progress),
            args.test_fraction,
            stratify=args.stratify,
            group=args.group,
            seed=args.seed,
        )
        say(f"train ({train.n_obs} patients)", write_cohort(train, args.out / "train.h5ad"))
        say(f"test ({test.n_obs} patients)", write_cohort(test, args.out / "test.h5ad"))
        return 0
    if args.action == "merge":
        from radiogenomics.data.cohort import merge_cohorts, relative_paths

        paths = list(args.cohorts)
        if len(paths) < 2:
            raise ValueError(f"merge needs at least two cohorts; got {len(paths)}")
        resolved = [p.resolve() for p in paths]
        repeated = sorted({str(p) for p in paths if resolved.count(p.resolve()) > 1})
        if repeated:
            raise ValueError(f"the same cohort given more than once: {repeated}")
        if args.out.resolve() in resolved:
            raise ValueError(f"--out {args.out} is one of the inputs; name a new file")
        # a cohort.h5ad (cohort phantom, sample) is named after its folder
        names = [p.parent.name if p.name == "cohort.h5ad" else p.stem for p in paths]
        if len(set(names)) < len(names):  # e.g. two splits' train.h5ad: name their folders too
            names = [f"{p.resolve().parent.name}_{p.stem}" for p in paths]
        adata = merge_cohorts(
            [read_valid_cohort(p, progress=progress) for p in paths],
            names=names,
            prefix=args.prefix,
        )
        adata.uns[K.UNS][K.PROVENANCE]["merged_from"] = ", ".join(str(p) for p in resolved)
        summary = validate_cohort(adata, check_files=not args.no_check_files, progress=progress)
        path = write_cohort(relative_paths(adata, args.out.parent), args.out)
        say(f"merged cohort ({adata.n_obs} patients)", path)
        print(json.dumps(summary))
        return 0
    if args.action == "prepare-shared":
        from radiogenomics.data.shared import prepare_shared

        out = prepare_shared(args.name, args.data_dir, args.out, progress=progress)
        say(f"prepared {args.name}", out)
        return 0
    raise AssertionError(args.action)  # argparse restricts the choices


def cmd_select_genes(args) -> int:
    from radiogenomics import pl, pp
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort

    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    sel = cfg.select
    adata = read_valid_cohort(args.data, progress=not args.quiet)
    stem = args.out.with_suffix("")
    if sel.method == "de":
        if sel.groupby is None or sel.group is None:
            raise ValueError("select.method 'de' needs keys 'select.groupby' and 'select.group'")
        table = pp.rank_genes(
            adata,
            sel.groupby,
            sel.group,
            sel.reference,
            pair_by=sel.pair_by,
            correction=sel.correction,
            alpha=sel.alpha,
            min_log2fc=sel.min_log2fc,
            log_base=sel.log_base,
        )
        genes = table.index[table["selected"]].tolist()
        _write_csv(table, stem.with_name(stem.name + "_de.csv"))
        pl.volcano(adata, save=stem.with_name(stem.name + "_volcano.png"))
        say("differential expression", stem.with_name(stem.name + "_de.csv"))
        say("volcano plot", stem.with_name(stem.name + "_volcano.png"))
    elif sel.method == "pathway":
        if sel.gmt is None:
            raise ValueError("select.method 'pathway' needs key 'select.gmt' (a GMT file)")
        report = pp.pathway_genes(adata, _config_path(args, "select.gmt", sel.gmt), sel.pathways)
        genes = adata.var_names[adata.var[f"{K.PATHWAYS}_selected"]].tolist()
        _write_csv(report, stem.with_name(stem.name + "_pathways.csv"))
        say("pathway report", stem.with_name(stem.name + "_pathways.csv"))
    else:
        genes = pp.highly_variable(adata, sel.n_top)
    if not genes:
        raise ValueError(f"select.method '{sel.method}' selected no gene; loosen its thresholds")
    path = write_cohort(pp.select_genes(adata, genes), args.out)
    say(f"cohort with {len(genes)} selected genes", path)
    return 0


def _config_path(args, key: str, value: str) -> Path:
    """A relative path written in the config file resolves against the file's folder, as a
    manifest's paths resolve against the manifest's, so the file works from any working folder;
    one given with --set resolves against the working folder, like every command-line path."""
    path = Path(value)
    from_set = any(item.partition("=")[0].strip() == key for item in args.overrides)
    if path.is_absolute() or from_set or args.config is None:
        return path
    return args.config.parent / path


def _write_csv(frame, path: Path) -> None:
    from radiogenomics.data.io import atomic_write

    atomic_write(path, lambda tmp: frame.to_csv(tmp))


def cmd_train(args) -> int:
    from radiogenomics.data.h5ad import read_valid_cohort

    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    from radiogenomics.models import MODELS
    from radiogenomics.train import distributed

    distributed.init_from_env()  # under torchrun: one process per rank
    adata = read_valid_cohort(args.data, progress=not args.quiet and distributed.is_main())
    model = MODELS[cfg.model](adata, cfg, progress=not args.quiet and distributed.is_main())
    summary = model.train(run_dir=args.out, progress=not args.quiet)
    if not distributed.is_main():
        return 0  # rank 0 writes and reports
    if summary.get("resumed_from") is not None:
        say(f"resumed from step {summary['resumed_from']}", args.out / "checkpoint")
    if (args.out / "log.csv").is_file() and cfg.model != "segmentation":
        from radiogenomics import pl

        pl.loss_curves(args.out / "log.csv", save=args.out / "loss_curves.png")
        say("loss curves", args.out / "loss_curves.png")
    say(f"trained {model!r}", args.out)
    print(json.dumps(summary))
    return 0


def _covariate_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--covariate {item!r} must look like KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def cmd_sample(args) -> int:
    from radiogenomics.data.folders import COHORT_FILE, cohort_folder
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort
    from radiogenomics.models.base import read_meta

    # every input cohort is validated before the model loads: a bad one fails fast, by name
    adata, like, expression = (
        read_valid_cohort(path, progress=not args.quiet) if path is not None else None
        for path in (args.data, args.like, args.expression)
    )
    kind = read_meta(args.run)["model"]
    if kind == "segmentation":
        raise ValueError(f"{args.run} holds a segmentation net, which samples no patients")
    if kind == "joint_gan":
        return _sample_joint(args, like)
    if kind == "gene_gan":
        from radiogenomics.models.gene_gan import GeneGAN

        model = GeneGAN.load(args.run)
        synth = model.sample(args.n, _covariate_args(args.covariate), seed=args.seed)
        synth.uns["rg"]["synthetic"]["run"] = str(args.run)
        with cohort_folder(args.out, args.overwrite) as tmp:  # replaces a sample whole
            write_cohort(synth, tmp / COHORT_FILE)
        say(f"{synth.n_obs} synthetic patients", args.out / COHORT_FILE)
        return 0
    from radiogenomics.models.image_gan import ImageGAN

    if args.covariate:
        raise ValueError("--covariate applies to gene runs; an image run follows --expression")
    model = ImageGAN.load(args.run, adata)
    if like is not None:
        synth = model.counterparts(like, seed=args.seed)
        synth.adata.uns["rg"]["synthetic"]["image_run"] = str(args.run)
        return _write_images(synth, args)
    needs_masks = model.config.image.use_mask and model.sampler.mask is None
    if expression is None and adata is None and (model.genes or needs_masks):
        raise ValueError(
            "an image run samples expression (and masks) from a cohort: pass --data (its "
            "training cohort) or --expression (e.g. a GeneGAN sample's cohort.h5ad)"
        )
    synth = model.sample(args.n, expression, seed=args.seed)
    synth.adata.uns["rg"]["synthetic"]["image_run"] = str(args.run)
    return _write_images(synth, args)


def _sample_joint(args, like) -> int:
    """Fully synthetic patients of a joint run, generated and written batch by batch (so
    --n may exceed memory); with --like, images for that cohort's expression and masks."""
    from radiogenomics.data.h5ad import write_patient_batches
    from radiogenomics.models.joint_gan import JointGAN

    if args.data is not None or args.expression is not None:
        raise ValueError(
            "a joint run draws expression from its own gene generator: --data and --expression "
            "do not apply (--like gives images for a cohort's real expression)"
        )
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    model = JointGAN.load(args.run)
    if like is not None:
        if args.covariate:
            raise ValueError("--covariate applies to fully synthetic patients, not to --like")
        synth = model.generate_images(like, seed=args.seed)
        synth.adata.uns["rg"]["synthetic"]["run"] = str(args.run)
        return _write_images(synth, args)
    if args.n is None or args.n < 1:
        raise ValueError(f"--n must be a positive number of patients; got {args.n}")
    covariates = _covariate_args(args.covariate)
    first = []

    def batches():
        for batch in model.iter_sample(
            args.n, covariates, seed=args.seed, batch_size=args.batch_size
        ):
            batch.adata.uns["rg"]["synthetic"]["run"] = str(args.run)
            if not first:
                first.append(batch)
            yield batch.files()

    path = write_patient_batches(
        batches(),
        args.out,
        args.format,
        not args.quiet,
        total=args.n,
        desc="sampling synthetic patients",
        overwrite=args.overwrite,
    )
    say(f"{args.n} synthetic patients", path)
    if first and first[0].images is not None:
        from radiogenomics import pl

        b = first[0]
        pl.patients(b.adata, images=b.images, masks=b.masks, save=args.out / "samples.png")
        say("sample grid", args.out / "samples.png")
    return 0


def _write_images(synth, args) -> int:
    path = synth.write(
        args.out, image_format=args.format, progress=not args.quiet, overwrite=args.overwrite
    )
    say(f"{synth.adata.n_obs} synthetic patients (images in {args.out / 'images'})", path)
    from radiogenomics import pl

    pl.patients(synth.adata, images=synth.images, masks=synth.masks, save=args.out / "samples.png")
    say("sample grid", args.out / "samples.png")
    return 0


def cmd_evaluate(args) -> int:
    from radiogenomics.cli.evaluate import evaluate

    return evaluate(args)


def cmd_map(args) -> int:
    """The conventional map of a cohort: map.csv (one row per pair), the heatmap, and for
    metagenes each gene's metagene. A run folder gives the learned map (`cli.maps`)."""
    import dataclasses

    paths = list(args.cohort)
    if paths[0].is_dir():
        from radiogenomics.cli.maps import cmd_learned_map

        return cmd_learned_map(args)
    if len(paths) > 1:
        raise ValueError(
            f"a conventional map reads one cohort; got {len(paths)} paths "
            f"({', '.join(map(str, paths[:3]))}); several run folders give an averaged "
            "learned map"
        )
    args.cohort = paths[0]
    from radiogenomics.cli.maps import LEARNED_DEFAULTS, drop_stale

    # the learned map's options (None unless given): given for a cohort, they are a mistake
    wrong = [
        f"--{k.replace('_', '-')}"
        for k in ("data", "truth", *LEARNED_DEFAULTS)
        if getattr(args, k) is not None
    ]
    if wrong:
        raise ValueError(
            f"learned-map options given for a cohort: {', '.join(wrong)} (they apply to a run "
            f"folder's learned map; {args.cohort} is a cohort, whose map is the conventional one)"
        )
    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    from radiogenomics import pl, tl
    from radiogenomics.data.h5ad import read_valid_cohort
    from radiogenomics.radiomap.conventional import map_from_uns

    adata = read_valid_cohort(args.cohort, progress=not args.quiet)
    subtypes = [c.strip() for c in args.subtypes.split(",") if c.strip()] if args.subtypes else []
    # the cohort sets spatial_dims; the config the rest of the image pipeline (resizing, scaling)
    data_cfg = dataclasses.replace(cfg.data, spatial_dims=int(adata.uns[K.UNS][K.SPATIAL_DIMS]))
    tl.conventional_map(
        adata,
        genomic=args.genomic,
        subtypes=subtypes,
        n_metagenes=args.n_metagenes,
        method=args.method,
        categorical_test=args.categorical_test or "kruskal",
        data_cfg=data_cfg,
        progress=not args.quiet,
    )
    table = map_from_uns(adata.uns[K.MAP])
    args.out.mkdir(parents=True, exist_ok=True)
    from radiogenomics.data.io import atomic_write

    csv = args.out / "map.csv"
    atomic_write(csv, lambda tmp: table[MAP_COLUMNS].to_csv(tmp, index=False))
    say(f"radiogenomic map ({len(table)} pairs)", csv)
    if args.genomic == "metagenes":
        _write_csv(adata.var[[K.METAGENE]], args.out / "metagenes.csv")
        say("metagene of each gene", args.out / "metagenes.csv")
    pl.map_heatmap(table, save=args.out / "map_heatmap.png")
    say("map heatmap", args.out / "map_heatmap.png")
    written = {"map.csv", "map_heatmap.png"} | (
        {"metagenes.csv"} if args.genomic == "metagenes" else set()
    )
    drop_stale(args, written)
    return 0


def check_out(args) -> None:
    """Refuse, before any work, an --out that would replace what is not this verb's output:
    an existing file where a folder goes, a file that is no cohort, or (without --overwrite) an
    existing cohort. Cohort folders are then written whole (`data.folders.cohort_folder`)."""
    from radiogenomics.data.folders import check_file_output, check_folder_output

    out = getattr(args, "out", None)
    if out is None or getattr(args, "dry_run", False):
        return
    verb = (args.verb, getattr(args, "action", None))
    overwrite = getattr(args, "overwrite", False)
    if verb in (("cohort", "build"), ("cohort", "merge"), ("select-genes", None)):
        check_file_output(out, overwrite)
    elif verb in (("cohort", "phantom"), ("sample", None)):
        check_folder_output(out, overwrite)
    elif out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; this verb writes a folder there")
    elif verb == ("cohort", "split"):
        for name in ("train.h5ad", "test.h5ad"):
            check_file_output(out / name, overwrite)
    elif verb == ("map", None) and (out / "map.csv").exists() and not overwrite:
        raise ValueError(f"{out} already holds a map (map.csv); pass --overwrite to replace it")


def _remove_if_empty(folder: Path) -> None:
    # a folder this run created and left without a file (a failed evaluate, say) goes
    if folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = {
        "demo": cmd_demo,
        "cohort": cmd_cohort,
        "select-genes": cmd_select_genes,
        "train": cmd_train,
        "sample": cmd_sample,
        "evaluate": cmd_evaluate,
        "map": cmd_map,
    }[args.verb]
    out = getattr(args, "out", None)
    fresh = isinstance(out, Path) and not out.exists()
    ok = False
    try:
        check_out(args)
        status = handler(args)
        ok = status == 0
        return status
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        # User mistakes: one clear message, no traceback (use -v for one).
        if args.verbose:
            raise
        print(f"radiogenomics {args.verb}: error: {err}", file=sys.stderr)
        return 2
    finally:
        from radiogenomics.train import distributed

        if fresh and distributed.is_main():  # rank 0 writes, so only it may tidy up
            _remove_if_empty(out)
        distributed.shutdown(wait=ok)


if __name__ == "__main__":
    sys.exit(main())
