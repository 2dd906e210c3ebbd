"""radiogenomics: synthetic paired cancer patients and radiogenomic maps."""

__version__ = "0.1.0"

from radiogenomics.data.cohort import (  # noqa: E402
    check_covariates,
    make_cohort,
    read_cohort,
    setup_cohort,
    validate_cohort,
    write_cohort,
)

__all__ = [
    "__version__",
    "check_covariates",
    "make_cohort",
    "read_cohort",
    "setup_cohort",
    "validate_cohort",
    "write_cohort",
]
