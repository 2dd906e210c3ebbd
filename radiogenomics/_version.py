"""The package version, in a leaf module: `data` records it in a cohort's provenance without
importing the package's `__init__` (an import back up the tree)."""

__version__ = "0.1.0"
