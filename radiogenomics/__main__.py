"""`python -m radiogenomics ...`: the CLI, also as torchrun's module
(`torchrun --nproc_per_node N -m radiogenomics train ...`)."""

import sys

from radiogenomics.cli import main

if __name__ == "__main__":
    sys.exit(main())
