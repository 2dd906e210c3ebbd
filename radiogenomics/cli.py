"""The `radiogenomics` command line: thin verbs over the Python API, one config tree."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from radiogenomics import __version__
from radiogenomics.config import Config, dump_config, load_config

log = logging.getLogger("radiogenomics")

# Verbs whose implementation comes with later work; they parse their documented arguments and
# say so plainly instead of failing deep inside.
PENDING = {
    "select-genes": "gene selection arrives with the gene-side work (differential expression, GMT pathways)",
    "train": "training arrives with the gene WGAN-GP and image generator work",
    "sample": "sampling arrives with the trained models",
    "evaluate": "evaluation arrives with the gene and image metrics",
    "map": "radiogenomic maps arrive with the map work",
}


def _common() -> argparse.ArgumentParser:
    # -v/-q work before or after the verb; SUPPRESS keeps a sub-parser from resetting them.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    return p


def _config_args(p: argparse.ArgumentParser, config_positional: bool = False) -> None:
    if config_positional:
        p.add_argument("config", type=Path, help="YAML config (see configs/)")
    else:
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="YAML config (see configs/); defaults when omitted",
        )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiogenomics",
        description="Synthetic paired cancer patients (expression + lesion mask + image) and radiogenomic maps.",
    )
    parser.add_argument("--version", action="version", version=f"radiogenomics {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common = _common()
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser(
        "demo", parents=[common], help="build the phantom cohort and figures of its patients"
    )
    _config_args(p)
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)"
    )

    cohort = sub.add_parser("cohort", parents=[common], help="build, validate and generate cohorts")
    csub = cohort.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser(
        "phantom", parents=[common], help="write a phantom cohort (h5ad + image and mask files)"
    )
    _config_args(p)
    p.add_argument("--n", type=int, help="patients (phantom.n)")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), help="2 or 3 (phantom.spatial_dims)")
    p.add_argument("--size", type=int, help="image edge length (phantom.size)")
    p.add_argument("--seed", type=int, help="random seed (seed)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p = csub.add_parser(
        "build",
        parents=[common],
        help="build a validated cohort .h5ad from a manifest (YAML or CSV)",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True, help="cohort .h5ad to write")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder the manifest's paths are relative to (overrides its root)",
    )
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None)
    p.add_argument(
        "--no-check-files", action="store_true", help="skip reading every image and mask"
    )
    p = csub.add_parser(
        "validate", parents=[common], help="validate a cohort .h5ad against the data contract"
    )
    p.add_argument("cohort", type=Path)
    p.add_argument(
        "--no-check-files", action="store_true", help="skip reading every image and mask"
    )
    p = csub.add_parser(
        "prepare-shared",
        parents=[common],
        help="write a shared real image set (../shared/data) as image files",
    )
    p.add_argument("name", help="tcga-lgg or mini-mias")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the shared data folder (default: ../shared/data)",
    )

    p = sub.add_parser(
        "select-genes",
        parents=[common],
        help="select genes (differential expression or pathway gene sets)",
    )
    _config_args(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("train", parents=[common], help="train a model on a cohort")
    _config_args(p, config_positional=True)
    p.add_argument("--data", type=Path, required=True, help="cohort .h5ad")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p = sub.add_parser(
        "sample", parents=[common], help="sample synthetic patients from a trained run"
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--covariate", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser(
        "evaluate", parents=[common], help="evaluate a synthetic cohort against a real one"
    )
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--synthetic", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("map", parents=[common], help="learn a radiogenomic map")
    _config_args(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    return parser


def _resolve_config(args) -> Config:
    return load_config(args.config, args.overrides)


def _say(what: str, path) -> None:
    # The CLI's own output: where it wrote what. Library code logs instead.
    print(f"{what}: {path}")


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
    from radiogenomics import pl
    from radiogenomics.data.cohort import read_cohort, validate_cohort
    from radiogenomics.data.phantom import write_phantom

    cfg = _resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    out = args.out
    phantom = _phantom(cfg, progress=not args.quiet)
    path = write_phantom(
        phantom, out / "cohort", image_format=cfg.phantom.image_format, progress=not args.quiet
    )
    adata = read_cohort(path)
    summary = validate_cohort(adata, progress=not args.quiet)
    _say("phantom cohort", path)
    _say("images and masks", out / "cohort" / "images")
    pl.patients(
        adata,
        n=16,
        images=phantom.images,
        masks=phantom.masks,
        color_by="subtype",
        save=out / "patients.png",
    )
    _say("patient figure", out / "patients.png")
    pl.truth_map(adata, save=out / "truth_map.png")
    _say("ground-truth map figure", out / "truth_map.png")
    print(json.dumps(summary))
    return 0


def cmd_cohort(args) -> int:
    from radiogenomics.data.cohort import read_cohort, validate_cohort, write_cohort

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
            phantom, args.out, image_format=cfg.phantom.image_format, progress=progress
        )
        _say("phantom cohort", path)
        return 0
    if args.action == "build":
        from radiogenomics.data.manifest import build_cohort

        kwargs = {"spatial_dims": args.spatial_dims}
        if args.root is not None:
            kwargs["root"] = args.root
        adata = build_cohort(args.manifest, **kwargs)
        summary = validate_cohort(adata, check_files=not args.no_check_files, progress=progress)
        path = write_cohort(adata, args.out)
        _say("cohort", path)
        print(json.dumps(summary))
        return 0
    if args.action == "validate":
        summary = validate_cohort(
            read_cohort(args.cohort), check_files=not args.no_check_files, progress=progress
        )
        print(f"{args.cohort}: valid")
        print(json.dumps(summary))
        return 0
    if args.action == "prepare-shared":
        from radiogenomics.data.shared import prepare_shared

        out = prepare_shared(args.name, args.data_dir, args.out, progress=progress)
        _say(f"prepared {args.name}", out)
        return 0
    raise AssertionError(args.action)  # argparse restricts the choices


def cmd_pending(args) -> int:
    if getattr(args, "dry_run", False):
        print(dump_config(_resolve_config(args)), end="")
        return 0
    print(f"radiogenomics {args.verb}: not available yet: {PENDING[args.verb]}.", file=sys.stderr)
    return 3


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = {"demo": cmd_demo, "cohort": cmd_cohort}.get(args.verb, cmd_pending)
    try:
        return handler(args)
    except (ValueError, FileNotFoundError) as err:
        # User mistakes: one clear message, no traceback (use -v for one).
        if args.verbose:
            raise
        print(f"radiogenomics {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
