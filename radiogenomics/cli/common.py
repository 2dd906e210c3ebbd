"""What every verb's handler uses: the resolved config and the line that says what was written."""

from __future__ import annotations

from radiogenomics.config import Config, load_config


def resolve_config(args) -> Config:
    return load_config(args.config, args.overrides)


def say(what: str, path) -> None:
    # The CLI's own output: where it wrote what. Library code logs instead.
    print(f"{what}: {path}")
