"""The `radiogenomics` command line: thin verbs over the Python API, one config tree. This module
is `main()` and the dispatch; each verb's handler lives in its own module."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from radiogenomics.cli.outputs import check_out, remove_if_empty
from radiogenomics.cli.parser import build_parser

log = logging.getLogger("radiogenomics")


def _handler(verb: str):
    """The verb's handler, imported on use (a verb pulls in only what it needs)."""
    if verb == "demo":
        from radiogenomics.cli.demo import cmd_demo as handler
    elif verb == "cohort":
        from radiogenomics.cli.cohort import cmd_cohort as handler
    elif verb == "select-genes":
        from radiogenomics.cli.select_genes import cmd_select_genes as handler
    elif verb == "train":
        from radiogenomics.cli.train import cmd_train as handler
    elif verb == "sample":
        from radiogenomics.cli.sample import cmd_sample as handler
    elif verb == "evaluate":
        from radiogenomics.cli.evaluate import cmd_evaluate as handler
    else:  # argparse restricts the choices
        from radiogenomics.cli.maps import cmd_map as handler
    return handler


def _quiet_library_warnings(verbose: bool) -> None:
    """Other libraries' warnings (anndata's index notes, matplotlib's missing glyphs) say
    nothing a CLI user can act on: they go to the log, shown with -v only. The library's own
    messages are log records and stay."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _quiet_library_warnings(args.verbose)
    handler = _handler(args.verb)
    out = getattr(args, "out", None)
    fresh = isinstance(out, Path) and not out.exists()
    ok = False
    try:
        check_out(args)
        status = handler(args)
        ok = status == 0
        return status
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        # User mistakes: one clear message and exit code 2; -v adds the traceback.
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"radiogenomics {args.verb}: error: {err}", file=sys.stderr)
        return 2
    finally:
        from radiogenomics.train import distributed

        if fresh and distributed.is_main():  # rank 0 writes, so only it may tidy up
            remove_if_empty(out)
        distributed.shutdown(wait=ok)
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").setLevel(logging.NOTSET)


if __name__ == "__main__":
    sys.exit(main())
