"""`radiogenomics train CONFIG --data COHORT --out RUN`: train the config's model on a cohort."""

from __future__ import annotations

import json

from radiogenomics.cli.common import resolve_config, say
from radiogenomics.cli.outputs import RUN_MARK, mark
from radiogenomics.config import dump_config


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
    if distributed.is_main():  # a rerun knows the folder for its own run (cli.outputs)
        mark(args.out, RUN_MARK, "train")
    summary = model.train(run_dir=args.out, progress=not args.quiet)
    if not distributed.is_main():
        return 0  # rank 0 writes and reports
    if summary.get("resumed_from") is not None:
        say(f"resumed from step {summary['resumed_from']}", args.out / "checkpoint")
    if (args.out / "log.csv").is_file() and (model.draws_expression or model.makes_images):
        from radiogenomics import pl

        pl.loss_curves(args.out / "log.csv", save=args.out / "loss_curves.png")
        say("loss curves", args.out / "loss_curves.png")
    say(f"trained {model!r}", args.out)
    print(json.dumps(summary))
    return 0
