"""The `radiogenomics` command line's arguments: one `add_<verb>_parser` per verb (and one
`_add_<action>` per cohort action), so each verb's flags sit in one small function."""

from __future__ import annotations

import argparse
from pathlib import Path

from radiogenomics._version import __version__


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


def _overwrite_arg(
    p: argparse.ArgumentParser,
    what: str = "replace an existing cohort at --out (never a file or folder that is no cohort)",
) -> None:
    p.add_argument("--overwrite", action="store_true", help=what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiogenomics",
        description="Synthetic paired cancer patients (expression + lesion mask + image) and radiogenomic maps.",
    )
    parser.add_argument("--version", action="version", version=f"radiogenomics {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (
        add_demo_parser,
        add_cohort_parser,
        add_select_genes_parser,
        add_train_parser,
        add_sample_parser,
        add_evaluate_parser,
        add_map_parser,
    ):
        add(sub)
    return parser


def add_demo_parser(sub) -> None:
    """`demo`: the README's first command."""
    p = sub.add_parser(
        "demo",
        parents=[_common()],
        help="phantom cohort -> joint model -> synthetic patients -> report.html",
    )
    _config_args(p)
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)"
    )
    p.add_argument(
        "--n-samples", type=int, default=200, help="synthetic patients to sample (default 200)"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.25, help="held-out patients (default 0.25)"
    )


def add_cohort_parser(sub) -> None:
    """`cohort ACTION`: build, set up, validate, split, merge and generate cohorts."""
    cohort = sub.add_parser(
        "cohort", parents=[_common()], help="build, validate and generate cohorts"
    )
    csub = cohort.add_subparsers(dest="action", required=True, metavar="ACTION")
    for add in (
        _add_phantom,
        _add_build,
        _add_setup,
        _add_validate,
        _add_merge,
        _add_split,
        _add_prepare_shared,
    ):
        add(csub)


def _add_phantom(csub) -> None:
    """`cohort phantom`."""
    p = csub.add_parser(
        "phantom", parents=[_common()], help="write a phantom cohort (h5ad + image and mask files)"
    )
    _config_args(p)
    p.add_argument("--n", type=int, help="patients (phantom.n)")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), help="2 or 3 (phantom.spatial_dims)")
    p.add_argument("--size", type=int, help="image edge length (phantom.size)")
    p.add_argument("--seed", type=int, help="random seed (seed)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _overwrite_arg(p)


def _add_build(csub) -> None:
    """`cohort build`."""
    p = csub.add_parser(
        "build",
        parents=[_common()],
        help="build a validated cohort .h5ad from a manifest (YAML or CSV)",
    )
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True, help="cohort .h5ad to write")
    _overwrite_arg(p)
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


def _add_setup(csub) -> None:
    """`cohort setup`."""
    p = csub.add_parser(
        "setup",
        parents=[_common()],
        help="set up a plain AnnData .h5ad (e.g. from scanpy) as a validated cohort",
    )
    p.add_argument("h5ad", type=Path, help="AnnData .h5ad: X = expression, obs = patients")
    p.add_argument("--out", type=Path, required=True, help="cohort .h5ad to write")
    _overwrite_arg(p)
    p.add_argument(
        "--categorical", default=None, metavar="A,B", help="obs columns embedded as covariates"
    )
    p.add_argument(
        "--numeric", default=None, metavar="C,D", help="obs columns standardised as covariates"
    )
    p.add_argument("--image-key", default=None, metavar="COL", help="obs column of image paths")
    p.add_argument("--mask-key", default=None, metavar="COL", help="obs column of mask paths")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None)
    p.add_argument(
        "--slice-axis",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="the image and mask files stack 2D slices along this spatial axis (2: the axial "
        "slices of a NIfTI volume); each slice is one image of its patient (docs/data.md)",
    )
    p.add_argument(
        "--no-check-files", action="store_true", help="skip reading every image and mask"
    )


def _add_validate(csub) -> None:
    """`cohort validate`."""
    p = csub.add_parser(
        "validate", parents=[_common()], help="validate a cohort .h5ad against the data contract"
    )
    p.add_argument("cohort", type=Path)
    p.add_argument(
        "--no-check-files", action="store_true", help="skip reading every image and mask"
    )


def _add_merge(csub) -> None:
    """`cohort merge`."""
    p = csub.add_parser(
        "merge",
        parents=[_common()],
        help="merge cohorts (e.g. a gene-only and an image-only one) into one validated .h5ad",
    )
    p.add_argument("cohorts", type=Path, nargs="+", metavar="COHORT", help="cohort .h5ad files")
    p.add_argument("--out", type=Path, required=True, help="cohort .h5ad to write")
    _overwrite_arg(p)
    p.add_argument(
        "--prefix",
        action="store_true",
        help="prefix each patient id with its input's name (the file's stem, or its folder's "
        "for a cohort.h5ad): NAME-ID",
    )
    p.add_argument(
        "--no-check-files", action="store_true", help="skip reading every image and mask"
    )


def _add_split(csub) -> None:
    """`cohort split`."""
    p = csub.add_parser(
        "split",
        parents=[_common()],
        help="split a cohort by patient into train.h5ad and test.h5ad",
    )
    p.add_argument("cohort", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _overwrite_arg(p)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--stratify", default=None, help="categorical obs column to stratify on")
    p.add_argument(
        "--group", default=None, help="obs column whose rows stay on one side (e.g. subject)"
    )
    p.add_argument("--seed", type=int, default=0)


def _add_prepare_shared(csub) -> None:
    """`cohort prepare-shared`."""
    p = csub.add_parser(
        "prepare-shared",
        parents=[_common()],
        help="write a shared real image set (../shared/data) as image files",
    )
    p.add_argument("name", help="tcga-lgg, mini-mias or mini-mias-normal")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the shared data folder (default: ../shared/data)",
    )
    p.add_argument(
        "--slices",
        choices=("largest", "all"),
        default="largest",
        help="tcga-lgg: one slice per patient, the largest tumour area, as PNG (default; for "
        "tcga_lgg_110/_paired.yaml), or every tumour slice, one NIfTI stack per patient (for "
        "tcga_lgg_slices.yaml)",
    )


def add_select_genes_parser(sub) -> None:
    """`select-genes`."""
    p = sub.add_parser(
        "select-genes",
        parents=[_common()],
        help="select genes (differential expression, pathway gene sets or variance)",
    )
    _config_args(p)
    p.add_argument("--data", type=Path, required=True, help="cohort .h5ad")
    p.add_argument("--out", type=Path, required=True, help="cohort .h5ad with the selected genes")
    _overwrite_arg(p)


def add_train_parser(sub) -> None:
    """`train CONFIG`."""
    p = sub.add_parser("train", parents=[_common()], help="train a model on a cohort")
    _config_args(p, config_positional=True)
    p.add_argument("--data", type=Path, required=True, help="cohort .h5ad")
    p.add_argument("--out", type=Path, required=True, help="run folder (resumes if it has one)")


def add_sample_parser(sub) -> None:
    """`sample RUN`."""
    p = sub.add_parser(
        "sample", parents=[_common()], help="sample synthetic patients from a trained run"
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument(
        "--n", type=int, default=None, help="number of patients (image runs: or --expression's)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (cohort.h5ad)")
    _overwrite_arg(p)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="image runs: the training cohort, to draw expression profiles (and masks) from",
    )
    p.add_argument(
        "--expression",
        type=Path,
        default=None,
        help="image runs: a cohort .h5ad whose expression conditions the images (e.g. a "
        "GeneGAN sample), one image per patient",
    )
    p.add_argument(
        "--like",
        type=Path,
        default=None,
        help="image and joint runs: one synthetic patient per patient of this cohort, from its "
        "expression and mask (and image as background where the model fuses one)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="joint runs: patients generated and written per batch (memory bound)",
    )
    p.add_argument(
        "--format", default="nii.gz", help="image runs: image file format (nii.gz, npy, png)"
    )
    p.add_argument(
        "--covariate",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a covariate for every patient (repeatable); others follow the training cohort",
    )
    p.add_argument("--seed", type=int, default=0)


def add_evaluate_parser(sub) -> None:
    """`evaluate`."""
    p = sub.add_parser(
        "evaluate",
        parents=[_common()],
        help="score synthetic expression against held-out real patients, with baselines",
        description="Either score a synthetic cohort (--train, --real, --synthetic) or run a "
        "k-fold evaluation that trains GeneGAN on each fold (--data, --kfold, --config).",
    )
    p.add_argument("--real", type=Path, help="held-out real cohort .h5ad")
    p.add_argument("--synthetic", type=Path, help="synthetic cohort .h5ad")
    p.add_argument(
        "--train",
        type=Path,
        help="the real training cohort: the ceiling score and the baselines are fitted on it; "
        "privacy (distance to closest record, membership inference, image memorisation) is "
        "measured against it",
    )
    p.add_argument(
        "--segmenter",
        type=Path,
        default=None,
        help="images: a trained segmentation run; adds its Dice and encoder distance (with "
        "--image-run: its Dice on images generated from the held-out patients' masks)",
    )
    p.add_argument(
        "--image-run",
        type=Path,
        default=None,
        help="phantom: an image run to check for its planted phenotypes (with --data)",
    )
    p.add_argument(
        "--data", type=Path, help="k-fold: the whole real cohort; --image-run: its phantom"
    )
    p.add_argument(
        "--negatives",
        type=Path,
        default=None,
        help="augmentation experiment: a cohort of normal-tissue crops; with --train (real "
        "training lesions), --real (held-out lesions) and --synthetic (generated lesions)",
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="augmentation experiment: seeds per setting"
    )
    p.add_argument(
        "--classifier-steps",
        type=int,
        default=600,
        help="augmentation experiment: training steps of each lesion classifier",
    )
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="LOG_CSV",
        help="paired cohorts: a training run's log.csv, whose loss curves join the report",
    )
    p.add_argument("--kfold", type=int, default=None, metavar="K", help="k-fold: number of folds")
    p.add_argument("--stratify", default=None, help="k-fold: categorical column to stratify on")
    _config_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (report.md, figures)")
    _overwrite_arg(
        p,
        "write into an existing folder that an earlier evaluation did not write (its files "
        "of the same names are replaced; never a cohort or run folder)",
    )
    p.add_argument(
        "--covariate", default=None, help="categorical covariate for fidelity and TSTR scores"
    )
    p.add_argument("--seed", type=int, default=0)


def add_map_parser(sub) -> None:
    """`map COHORT_OR_RUN ...`."""
    p = sub.add_parser(
        "map",
        parents=[_common()],
        help="the radiogenomic map of a cohort: genes, metagenes or subtypes x image features",
        description="Conventional map of a cohort .h5ad: Spearman (genes or metagenes) and "
        "Kruskal-Wallis (--subtypes) tests against features of the lesion images and masks, "
        "Benjamini-Hochberg over the table; writes DIR/map.csv and DIR/map_heatmap.png. "
        "A joint or image run folder gives the learned map: the change of the generated "
        "images' features per unit of each gene or metagene (finite differences or autograd), "
        "plus DIR/impact_maps.png and DIR/gene_swap.csv.",
    )
    p.add_argument(
        "cohort",
        type=Path,
        nargs="+",
        metavar="COHORT_OR_RUN",
        help="cohort .h5ad; or a run folder: the learned map; or several run folders of one "
        "design (e.g. seeds): their learned maps averaged (map_runs.csv holds each run's)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--subtypes",
        default=None,
        metavar="COL1,COL2",
        help="categorical obs columns to test too (see --categorical-test), comma-separated",
    )
    p.add_argument(
        "--categorical-test",
        choices=["kruskal", "fisher"],
        default=None,
        help="--subtypes: Kruskal-Wallis per column (default), or Fisher exact per level "
        "against the rest on each feature split at its median (rows 'column=level')",
    )
    p.add_argument(
        "--genomic",
        choices=["genes", "metagenes"],
        default="metagenes",
        help="test every gene, or metagenes of clustered genes (default)",
    )
    p.add_argument(
        "--method",
        choices=["hierarchical", "nmf"],
        default="hierarchical",
        help="metagenes: hierarchical clustering of the genes (default) or NMF",
    )
    p.add_argument(
        "--n-metagenes",
        type=int,
        default=None,
        help="metagenes: how many (default: the largest silhouette, k = 2..20)",
    )
    _overwrite_arg(
        p, "replace the map already in --out (its files that this map does not write go)"
    )
    learned = p.add_argument_group("learned map (a run folder)")
    learned.add_argument(
        "--data",
        type=Path,
        default=None,
        help="cohort .h5ad whose patients' expression the map starts from (needed for an "
        "image run; a joint run uses its own fully synthetic patients without it)",
    )
    learned.add_argument(
        "--estimator",
        choices=["finite", "autograd"],
        default=None,
        help="central finite differences on the sampled (hard) masks and images, every "
        "feature (default); or autograd through the generator, the differentiable features",
    )
    learned.add_argument(
        "--route",
        choices=["direct", "generator"],
        help="how a gene or metagene moves: alone, the rest fixed (direct, the default); or, "
        "for a joint run's own patients, through its gene generator's noise, so co-expressed "
        "genes and the gene latent move with it (generator)",
    )
    # None: not given (cli.maps.LEARNED_DEFAULTS fills them), so a cohort can refuse them
    learned.add_argument("--n-patients", type=int, help="base patients (default 64)")
    learned.add_argument("--n-draws", type=int, help="noise draws per patient (default 1)")
    learned.add_argument("--delta", type=float, help="step, in standardised units (default 1)")
    learned.add_argument("--seed", type=int, help="(default 0)")
    learned.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="phantom cohort .h5ad whose planted map scores the learned one (default: --data "
        "when it is a phantom)",
    )
    _config_args(p)
