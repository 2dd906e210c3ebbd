"""What the verbs' handlers share: the resolved config, the line that says what was written, the
phantom of a config, CSV writes and config-relative paths."""

from __future__ import annotations

from pathlib import Path

from radiogenomics.config import Config, load_config


def resolve_config(args) -> Config:
    """The config of `--config` (defaults when absent) with the `--set` overrides applied."""
    return load_config(args.config, args.overrides)


def say(what: str, path) -> None:
    # The CLI's own output: where it wrote what. Library code logs instead.
    print(f"{what}: {path}")


def phantom(cfg: Config, progress: bool):
    """The phantom cohort (in memory) that `cfg.phantom` and `cfg.seed` describe."""
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


def config_path(args, key: str, value: str) -> Path:
    """A relative path written in the config file resolves against the file's folder, as a
    manifest's paths resolve against the manifest's, so the file works from any working folder;
    one given with --set resolves against the working folder, like every command-line path."""
    path = Path(value)
    from_set = any(item.partition("=")[0].strip() == key for item in args.overrides)
    if path.is_absolute() or from_set or args.config is None:
        return path
    return args.config.parent / path


def write_csv(frame, path: Path) -> None:
    from radiogenomics._atomic import atomic_write

    atomic_write(path, lambda tmp: frame.to_csv(tmp))
