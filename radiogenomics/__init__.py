"""radiogenomics: synthetic paired cancer patients and radiogenomic maps."""

from radiogenomics._version import __version__
from radiogenomics.data.cohort import (
    check_covariates,
    make_cohort,
    setup_cohort,
    split_cohort,
    validate_cohort,
)
from radiogenomics.data.h5ad import read_cohort, write_cohort

__all__ = [
    "__version__",
    "pl",
    "pp",
    "tl",
    "Config",
    "GeneGAN",
    "ImageGAN",
    "JointGAN",
    "Segmenter",
    "load_config",
    "load_model",
    "make_phantom",
    "write_phantom",
    "check_covariates",
    "make_cohort",
    "read_cohort",
    "setup_cohort",
    "split_cohort",
    "validate_cohort",
    "write_cohort",
]


# The top level's models, config and phantom (`rg.JointGAN`, `rg.load_config`,
# `rg.make_phantom`), imported on first use so that `import radiogenomics` stays light (the
# models pull in torch and MONAI): attribute -> the module that defines it.
_LAZY = {
    "GeneGAN": "radiogenomics.models",
    "ImageGAN": "radiogenomics.models",
    "JointGAN": "radiogenomics.models",
    "Segmenter": "radiogenomics.models",
    "load_model": "radiogenomics.models",
    "Config": "radiogenomics.config",
    "load_config": "radiogenomics.config",
    "make_phantom": "radiogenomics.data.phantom",
    "write_phantom": "radiogenomics.data.phantom",
}


def __getattr__(name: str):
    import importlib

    # `radiogenomics.pp`, `.tl`, `.pl` (scanpy style), imported on first use: pl pulls in
    # matplotlib, which a training job does not need
    if name in ("pp", "tl", "pl"):
        return importlib.import_module(f"radiogenomics.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radiogenomics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
