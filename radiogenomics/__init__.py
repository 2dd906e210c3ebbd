"""radiogenomics: synthetic paired cancer patients and radiogenomic maps."""

from radiogenomics._version import __version__
from radiogenomics.data.cohort import (
    check_covariates,
    make_cohort,
    setup_cohort,
    validate_cohort,
)
from radiogenomics.data.h5ad import read_cohort, write_cohort

__all__ = [
    "__version__",
    "pl",
    "pp",
    "tl",
    "check_covariates",
    "make_cohort",
    "read_cohort",
    "setup_cohort",
    "validate_cohort",
    "write_cohort",
]


def __getattr__(name: str):
    # `radiogenomics.pp`, `.tl`, `.pl` (scanpy style), imported on first use: pl pulls in
    # matplotlib, which a training job does not need
    if name in ("pp", "tl", "pl"):
        import importlib

        return importlib.import_module(f"radiogenomics.{name}")
    raise AttributeError(f"module 'radiogenomics' has no attribute {name!r}")
