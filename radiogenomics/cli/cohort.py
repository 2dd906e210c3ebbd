"""`radiogenomics cohort ACTION`: phantom, build, setup, validate, split, merge, prepare-shared;
one function per action."""

from __future__ import annotations

import json

from radiogenomics import _keys as K
from radiogenomics.cli.common import phantom as phantom_from_config
from radiogenomics.cli.common import say
from radiogenomics.config import dump_config, load_config


def cmd_cohort(args) -> int:
    """Run `args.action` (argparse restricts the choices)."""
    return {
        "phantom": _phantom,
        "build": _build,
        "setup": _setup,
        "validate": _validate,
        "split": _split,
        "merge": _merge,
        "prepare-shared": _prepare_shared,
    }[args.action](args, not args.quiet)


def _phantom(args, progress: bool) -> int:
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
    phantom = phantom_from_config(cfg, progress)
    path = write_phantom(
        phantom,
        args.out,
        image_format=cfg.phantom.image_format,
        progress=progress,
        overwrite=args.overwrite,
    )
    say("phantom cohort", path)
    return 0


def _validated_write(adata, args, progress: bool) -> int:
    """Validate a built or set-up cohort, write it to --out and print its summary."""
    from radiogenomics.data.cohort import validate_cohort
    from radiogenomics.data.h5ad import write_cohort

    summary = validate_cohort(adata, check_files=not args.no_check_files, progress=progress)
    path = write_cohort(adata, args.out)
    say("cohort", path)
    print(json.dumps(summary))
    return 0


def _build(args, progress: bool) -> int:
    from radiogenomics.data.manifest import build_cohort

    kwargs = {"spatial_dims": args.spatial_dims}
    if args.root is not None:
        kwargs["root"] = args.root
    return _validated_write(build_cohort(args.manifest, **kwargs), args, progress)


def _setup(args, progress: bool) -> int:
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
        slice_axis=args.slice_axis,
        provenance={"setup_from": args.h5ad.resolve()},
    )
    return _validated_write(adata, args, progress)


def _validate(args, progress: bool) -> int:
    from radiogenomics.data.h5ad import validate_cohort_file

    # the same check (and message) as every verb that reads a cohort: read_valid_cohort
    _, summary = validate_cohort_file(
        args.cohort, check_files=not args.no_check_files, progress=progress
    )
    print(f"{args.cohort}: valid")
    print(json.dumps(summary))
    return 0


def _split(args, progress: bool) -> int:
    from radiogenomics.data.cohort import split_cohort
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort

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


def _merge(args, progress: bool) -> int:
    from radiogenomics.data.cohort import validate_cohort
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort
    from radiogenomics.data.merge import merge_cohorts, relative_paths

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


def _prepare_shared(args, progress: bool) -> int:
    from radiogenomics.data.shared import prepare_shared

    out = prepare_shared(args.name, args.data_dir, args.out, progress=progress, slices=args.slices)
    say(f"prepared {args.name}", out)
    return 0
