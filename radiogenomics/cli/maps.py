"""`radiogenomics map`: the conventional map of a cohort (`cmd_map`), or the learned map of a
trained joint or image run (`cmd_learned_map`; several runs of one design: their maps averaged)."""

from __future__ import annotations

import json
import logging

from radiogenomics import _keys as K
from radiogenomics.cli.common import resolve_config, say, write_csv
from radiogenomics.config import dump_config

log = logging.getLogger("radiogenomics")

MAP_COLUMNS = ["genomic", "feature", "effect", "p", "p_adj"]  # docs/design.md, section 5's contract
SWAP_COLUMNS = ["genomic", "feature", "effect", "p", "p_adj", "n"]
# every file a map (conventional or learned) writes into --out
MAP_FILES = (
    "map.csv", "metagenes.csv", "map_heatmap.png", "impact_maps.png", "gene_swap.csv",
    "map_scores.json", "map_runs.csv",
)  # fmt: skip
# the learned map's options and their defaults; the parser leaves them None when not given,
# so that `map COHORT` can refuse them
LEARNED_DEFAULTS = {
    "estimator": "finite", "route": "direct", "n_patients": 64, "n_draws": 1, "delta": 1.0,
    "seed": 0,
}  # fmt: skip


def cmd_map(args) -> int:
    """The conventional map of a cohort: map.csv (one row per pair), the heatmap, and for
    metagenes each gene's metagene. A run folder gives the learned map (`cmd_learned_map`)."""
    import dataclasses

    paths = list(args.cohort)
    if not paths[0].exists():
        raise FileNotFoundError(
            f"{paths[0]} does not exist (map takes a cohort .h5ad, or run folders)"
        )
    if paths[0].is_dir():
        return cmd_learned_map(args)
    if len(paths) > 1:
        raise ValueError(
            f"a conventional map reads one cohort; got {len(paths)} paths "
            f"({', '.join(map(str, paths[:3]))}); several run folders give an averaged "
            "learned map"
        )
    args.cohort = paths[0]
    # the learned map's options (None unless given): given for a cohort, they are a mistake
    wrong = [
        f"--{k.replace('_', '-')}"
        for k in ("data", "truth", *LEARNED_DEFAULTS)
        if getattr(args, k) is not None
    ]
    if wrong:
        raise ValueError(
            f"learned-map options given for a cohort: {', '.join(wrong)} (they apply to a run "
            f"folder's learned map; {args.cohort} is a cohort, whose map is the conventional one)"
        )
    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    from radiogenomics import pl, tl
    from radiogenomics._atomic import atomic_write
    from radiogenomics.data.h5ad import read_valid_cohort
    from radiogenomics.radiomap.conventional import map_from_uns

    adata = read_valid_cohort(args.cohort, progress=not args.quiet)
    subtypes = [c.strip() for c in args.subtypes.split(",") if c.strip()] if args.subtypes else []
    # the cohort sets spatial_dims; the config the rest of the image pipeline (resizing, scaling)
    data_cfg = dataclasses.replace(cfg.data, spatial_dims=int(adata.uns[K.UNS][K.SPATIAL_DIMS]))
    tl.conventional_map(
        adata,
        genomic=args.genomic,
        subtypes=subtypes,
        n_metagenes=args.n_metagenes,
        method=args.method,
        categorical_test=args.categorical_test or "kruskal",
        data_cfg=data_cfg,
        progress=not args.quiet,
    )
    table = map_from_uns(adata.uns[K.MAP])
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "map.csv"
    atomic_write(csv, lambda tmp: table[MAP_COLUMNS].to_csv(tmp, index=False))
    say(f"radiogenomic map ({len(table)} pairs)", csv)
    if args.genomic == "metagenes":
        write_csv(adata.var[[K.METAGENE]], args.out / "metagenes.csv")
        say("metagene of each gene", args.out / "metagenes.csv")
    pl.map_heatmap(table, save=args.out / "map_heatmap.png")
    say("map heatmap", args.out / "map_heatmap.png")
    written = {"map.csv", "map_heatmap.png"} | (
        {"metagenes.csv"} if args.genomic == "metagenes" else set()
    )
    drop_stale(args, written)
    return 0


def drop_stale(args, written: set[str]) -> None:
    """After a map written over an earlier one (`--overwrite`): remove the earlier map's
    files that this one did not write again (a genes map after a metagenes one leaves no
    metagenes.csv), so the folder holds one map. Only `MAP_FILES`; nothing else is touched."""
    if not getattr(args, "overwrite", False):
        return
    for name in sorted(set(MAP_FILES) - written):
        path = args.out / name
        if path.is_file():
            path.unlink()
            log.info("removed %s, left by the map this one replaces", path)


def _check_run(run, meta) -> None:
    from radiogenomics.models.base import model_class

    if not model_class(run).makes_images:
        raise ValueError(
            f"{run} holds a {meta['model']!r} model; a learned map needs a run that draws "
            "images from genes (joint_gan, image_gan)"
        )


# what runs averaged into one map must share: (model.json key, what it says)
DESIGN = (
    ("model", "model kind"), ("mode", "training mode"), ("genes", "genes"),
    ("spatial_dims", "spatial dims"), ("image_size", "image size"), ("channels", "channels"),
    ("phantom", "phantom flag"),
    # the cohort's setup (its covariate vocabularies and statistics): its fingerprint
    ("categorical", "cohort's categorical covariates"),
    ("numeric", "cohort's numeric covariate statistics"),
)  # fmt: skip


def _check_design(runs, metas, genomic: str) -> None:
    """Several runs, before any is mapped: distinct folders, one design (model kind, genes,
    image geometry) trained on one cohort (its covariate setup; with one seed, the same
    held-out patients), and genes (not metagenes)."""
    seen = {}
    for r in runs:
        key = r.resolve()
        if key in seen:
            raise ValueError(
                f"{r} is given twice ({seen[key]}): each run counts as an independent fit"
            )
        seen[key] = r
    seeds = [_seed(r) for r in runs]
    for r, meta, seed in zip(runs[1:], metas[1:], seeds[1:], strict=True):
        for key, what in DESIGN:
            if meta.get(key) != metas[0].get(key):
                raise ValueError(
                    f"{r} and {runs[0]} differ in their {what} ({_short(meta.get(key))} and "
                    f"{_short(metas[0].get(key))}): an averaged map needs runs of one design "
                    "trained on one cohort"
                )
        # one cohort and one seed hold out the same patients (data.split)
        if seed == seeds[0] and sorted(meta.get("held_out", [])) != sorted(
            metas[0].get("held_out", [])
        ):
            raise ValueError(
                f"{r} and {runs[0]} have the same seed but hold out different patients: they "
                "were trained on different cohorts (or splits); an averaged map needs runs "
                "trained on one cohort"
            )
    if genomic != "genes":
        raise ValueError(
            f"an averaged map of {len(runs)} runs maps genes only (--genomic genes): each run "
            "clusters its own metagenes, so their metagenes are not the same variables"
        )


def _seed(run):
    import yaml

    try:
        return yaml.safe_load((run / "config.yaml").read_text()).get("seed")
    except (OSError, AttributeError, yaml.YAMLError):
        return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _run_maps(run, args, adata, common) -> tuple:
    """One run's learned map, impact maps and gene swap, from one set of base patients:
    (table, membership, impact maps, their names, swap)."""
    from radiogenomics.models.base import load_model
    from radiogenomics.radiomap import learned

    model = load_model(run)
    # one set of base patients (and their features) for the map, the impact maps and the swap
    prepared = learned.prepare(model, adata, **common)
    table, membership = learned.learned_map(
        model, method=args.estimator, delta=args.delta, return_membership=True,
        prepared=prepared,
    )  # fmt: skip
    maps, names = learned.impact_maps(model, delta=args.delta, prepared=prepared)
    swap = learned.gene_swap(model, prepared=prepared)
    return table, membership, maps, names, swap


def cmd_learned_map(args) -> int:
    """map.csv (the contract's columns), map_heatmap.png, impact_maps.png, gene_swap.csv and,
    where a phantom gives the truth, map_scores.json; metagenes.csv for metagenes. Several
    runs: their maps averaged (`learned.combine_maps`), each run's in map_runs.csv."""
    import numpy as np
    import pandas as pd

    from radiogenomics._atomic import atomic_write, atomic_write_text
    from radiogenomics.models.base import read_meta

    runs = list(args.cohort)
    run = runs[0]
    missing = [str(r) for r in runs if not r.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} does not exist")
    not_runs = [str(r) for r in runs if not r.is_dir()]
    if not_runs:
        raise ValueError(
            f"{', '.join(not_runs)}: not a run folder; a learned map of several runs takes run "
            "folders only (a cohort's conventional map takes one cohort .h5ad)"
        )
    metas = [read_meta(r) for r in runs]  # FileNotFoundError, by path, for a folder with no run
    conventional = [
        flag
        for flag, given in (
            ("--subtypes", bool(args.subtypes)),
            ("--categorical-test", args.categorical_test is not None),
            ("--config", args.config is not None),
            ("--set", bool(args.overrides)),
            ("--dry-run", args.dry_run),
        )
        if given
    ]
    if conventional:
        raise ValueError(
            f"conventional-map options given for a run folder: {', '.join(conventional)} (they "
            f"apply to a cohort's conventional map; {run} is a run folder, whose own config the "
            "learned map uses)"
        )
    for key, default in LEARNED_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    for r, meta in zip(runs, metas, strict=True):
        _check_run(r, meta)
    if len(runs) > 1:
        _check_design(runs, metas, args.genomic)
    from radiogenomics.models.base import model_class

    images = [r for r in runs if not model_class(r).draws_expression]
    if images and args.data is None:
        raise ValueError(
            f"{images[0]} is an image run (ImageGAN), which draws no expression of its own: pass "
            "--data COHORT.h5ad (e.g. its training cohort) whose patients' expression the "
            "map starts from"
        )
    from radiogenomics import pl
    from radiogenomics.data.h5ad import read_valid_cohort
    from radiogenomics.radiomap import learned

    adata = read_valid_cohort(args.data, progress=not args.quiet) if args.data else None
    truth = read_valid_cohort(args.truth, progress=not args.quiet) if args.truth else None
    if truth is not None and K.PHANTOM not in truth.uns.get(K.UNS, {}):
        raise ValueError(f"--truth {args.truth} is no phantom: it has no planted map to score")
    common = dict(
        genomic=args.genomic,
        n_patients=args.n_patients,
        n_draws=args.n_draws,
        n_metagenes=args.n_metagenes,
        metagene_method=args.method,
        route=args.route,
        seed=args.seed,
        progress=not args.quiet,
    )
    results = [_run_maps(r, args, adata, common) for r in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    written = {"map.csv", "map_heatmap.png", "impact_maps.png", "gene_swap.csv"}
    if len(runs) == 1:
        table, membership, maps, names, swap = results[0]
    else:
        membership = None
        table = learned.combine_maps([r[0] for r in results])
        swap = learned.combine_maps([r[4] for r in results])
        names = results[0][3]  # the same genes and image size: _check_design
        maps = np.mean([r[2] for r in results], axis=0)
        each = pd.concat(
            [r[0].assign(run=str(path)) for r, path in zip(results, runs, strict=True)],
            ignore_index=True,
        )
        path = args.out / "map_runs.csv"
        atomic_write(path, lambda tmp: each[["run", *MAP_COLUMNS]].to_csv(tmp, index=False))
        say(f"each run's learned map ({len(runs)} runs)", path)
        written.add(path.name)
    csv = args.out / "map.csv"
    atomic_write(csv, lambda tmp: table[MAP_COLUMNS].to_csv(tmp, index=False))
    base = "fully synthetic" if adata is None else "the cohort's"
    say(f"learned map ({table['method'].iloc[0]}, {len(table)} pairs, {base} patients)", csv)
    if membership is not None:
        frame = membership.to_frame(K.METAGENE)
        atomic_write(args.out / "metagenes.csv", lambda tmp: frame.to_csv(tmp))
        say("metagene of each gene", args.out / "metagenes.csv")
        written.add("metagenes.csv")
    pl.map_heatmap(table, save=args.out / "map_heatmap.png")
    say("map heatmap", args.out / "map_heatmap.png")
    pl.impact_maps(maps, names, save=args.out / "impact_maps.png")
    say("spatial impact maps", args.out / "impact_maps.png")
    atomic_write(
        args.out / "gene_swap.csv", lambda tmp: swap[SWAP_COLUMNS].to_csv(tmp, index=False)
    )
    say("gene swap (low <-> high quartile)", args.out / "gene_swap.csv")

    phantom = next(
        (c for c in (truth, adata) if c is not None and K.PHANTOM in c.uns.get(K.UNS, {})), None
    )
    if phantom is not None:
        from radiogenomics.radiomap.scoring import score_phantom_map

        genes = table if membership is None else learned.gene_level(table, membership)
        scores = score_phantom_map(genes, phantom)
        path = args.out / "map_scores.json"
        atomic_write_text(path, json.dumps(scores, indent=1) + "\n")
        say("recovery of the phantom's planted map", path)
        written.add(path.name)
    elif any(meta.get("phantom") for meta in metas):
        log.warning(
            "%s trained on a phantom: pass --truth PHANTOM.h5ad (its cohort) to score the map "
            "against the planted one",
            ", ".join(str(r) for r, meta in zip(runs, metas, strict=True) if meta.get("phantom")),
        )
    drop_stale(args, written)
    return 0
