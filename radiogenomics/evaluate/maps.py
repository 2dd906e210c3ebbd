"""Does a synthetic cohort keep the real cohort's radiogenomic map? (docs/design.md, section 5, pairs)

The conventional map (Spearman of each genomic variable with each image feature,
`radiomap.conventional.spearman_table`) of the synthetic patients is compared with the real
training patients' map by the rank correlation of their effects (`radiomap.scoring`), beside
what real patients score on the same comparison. A map's noise grows as its cohort shrinks, so
every synthetic number has a reference of the same sizes:

- held-out: the map of `n_heldout` synthetic patients (drawn `n_draws` times; mean and sd)
  against the training map, beside the held-out real patients' map against the training map;
- halves: the training patients split in two at random (`n_draws` splits); the map of half B
  against the map of half A (the reference), beside the map of as many synthetic patients as
  half B holds against the map of half A (mean and sd over the splits).

Genomic variables: `genes`, and `metagenes` defined once on the real training patients
(`radiomap.conventional.metagenes`, hierarchical) and scored the same way on every cohort
(mean of the member genes z-scored with the training mean and std), so the variables are the
same on both sides. On a phantom, each gene map's recovery of the planted map
(`scoring.score_phantom_map`, AUROC) is reported too, at matched sizes.
Only paired patients (expression, image and mask) enter a map.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from radiogenomics.evaluate.pairs import phantom_loadings_fit
from radiogenomics.radiomap.conventional import adjust, metagenes, spearman_table
from radiogenomics.radiomap.scoring import map_agreement, score_phantom_map

log = logging.getLogger(__name__)

MIN_PATIENTS = 6  # a half of the training patients needs at least 3 for a Spearman
HEATMAP_ROWS = 40


def _map(values: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """The conventional map of one set (as `conventional_map` with genomic given), BH-adjusted."""
    table = spearman_table(values, features)
    table["p_adj"] = adjust(table["p"].to_numpy())
    return table


def _genomic(train: ad.AnnData, cohorts: dict) -> dict:
    """{kind: {set: patients x variables}} for the genes and the training metagenes."""
    from radiogenomics.evaluate.privacy import expression_records

    genes = train.var_names
    expr = {name: expression_records(a, genes, name) for name, a in cohorts.items()}
    out = {"genes": expr}
    try:
        _, membership = metagenes(expr["train"])
    except ValueError as err:  # too few varying genes
        log.warning("no metagene map: %s", err)
        return out
    mean, std = expr["train"].mean(), expr["train"].std(ddof=0).replace(0, 1.0)
    groups = [g for g in pd.unique(membership) if g]
    out["metagenes"] = {
        name: pd.DataFrame(
            {
                g: ((X - mean) / std).loc[:, membership.index[membership == g]].mean(axis=1)
                for g in groups
            }
        )  # fmt: skip
        for name, X in expr.items()
    }
    return out


def map_scores(
    train: ad.AnnData,
    heldout: ad.AnnData,
    synthetic: ad.AnnData,
    features: dict,
    *,
    n_draws: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Agreement of the synthetic map with the real one, with its matched references.

    `features`: {'train', 'heldout', 'synthetic'}: image features by patient id (e.g.
    `evaluate.privacy.image_records`). Returns (one row per genomic kind with the columns
    `rank_correlation` (+ `_sd`), `reference_heldout`, `rank_correlation_halves` (+ `_sd`),
    `reference_halves` (+ `_sd`), `rank_correlation_all` (every synthetic patient, at most as
    many as the training set has, against the training map), `sign_agreement*` (the same on
    the training map's significant pairs), the set sizes and, on a phantom, `auroc_*`;
    {'train', 'heldout', 'synthetic'}: the full gene maps, for figures).
    """
    from radiogenomics.evaluate.pairs import paired_rows

    cohorts = {"train": train, "heldout": heldout, "synthetic": synthetic}
    paired = {k: a.obs_names[paired_rows(a)] for k, a in cohorts.items()}
    paired = {k: ids.intersection(features[k].index, sort=False) for k, ids in paired.items()}
    small = [k for k, ids in paired.items() if len(ids) < MIN_PATIENTS]
    if small:
        raise ValueError(f"map agreement needs >= {MIN_PATIENTS} paired patients in {small}")
    feats = {k: features[k].loc[ids] for k, ids in paired.items()}
    usable = [c for c in feats["train"] if feats["train"][c].notna().sum() >= 3]
    feats = {k: f[usable] for k, f in feats.items()}
    values = {
        kind: {k: v.loc[v.index.intersection(paired[k], sort=False)] for k, v in sets.items()}
        for kind, sets in _genomic(train, cohorts).items()
    }
    n_tr, n_ho, n_sy = (len(values["genes"][k]) for k in ("train", "heldout", "synthetic"))
    half, n_all = n_tr // 2, min(n_sy, n_tr)
    # the same draws for every genomic kind: synthetic patients at the held-out size, training
    # halves with synthetic patients at the half size, every synthetic patient (<= n_tr)
    rng = np.random.default_rng(seed)
    ids_tr, ids_sy = values["genes"]["train"].index, values["genes"]["synthetic"].index
    at_heldout = [rng.choice(ids_sy, min(n_ho, n_sy), replace=False) for _ in range(n_draws)]
    splits = []
    for _ in range(n_draws):
        perm = rng.permutation(ids_tr)
        splits.append(
            (perm[:half], perm[half : 2 * half], rng.choice(ids_sy, min(half, n_sy), replace=False))
        )
    at_all = rng.choice(ids_sy, n_all, replace=False) if n_sy > n_tr else ids_sy
    phantom = phantom_loadings_fit(train)
    rows, full = {}, {}
    for kind, sets in values.items():

        def m(name, ids, sets=sets):
            return _map(sets[name].loc[ids], feats[name].loc[ids])

        real, held = m("train", ids_tr), m("heldout", sets["heldout"].index)
        synth = [m("synthetic", ids) for ids in at_heldout]
        synth_all = m("synthetic", at_all)
        draws = {
            "synthetic": [map_agreement(real, x) for x in synth],
            "halves": [],
            "synth_halves": [],
        }
        for a, b, ids in splits:
            half_a = m("train", a)
            draws["halves"].append(map_agreement(half_a, m("train", b)))
            draws["synth_halves"].append(map_agreement(half_a, m("synthetic", ids)))
        ref, every = map_agreement(real, held), map_agreement(real, synth_all)
        row = {}
        for key, ref_key in (
            ("rank_correlation", "reference"),
            ("sign_agreement", "sign_reference"),
        ):
            named = {
                key: "synthetic",
                f"{key}_halves": "synth_halves",
                f"{ref_key}_halves": "halves",
            }
            for name, draw in named.items():
                vals = [x[key] for x in draws[draw]]
                row[name], row[f"{name}_sd"] = float(np.nanmean(vals)), float(np.nanstd(vals))
            row[f"{ref_key}_heldout"] = ref[key]
            row[f"{key}_all"] = every[key]
        row.update(n_train=n_tr, n_heldout=n_ho, n_synthetic=n_sy, n_half=half, n_all=n_all)
        if kind == "genes":
            full = {"train": real, "heldout": held, "synthetic": synth_all}
        if kind == "genes" and phantom:

            def recovery(table):
                return score_phantom_map(table, train, per_gene=False)["auroc"]

            row["auroc_real"], row["auroc_heldout"] = recovery(real), recovery(held)
            row["auroc_synthetic"] = float(np.mean([recovery(x) for x in synth]))
            row["auroc_synthetic_all"] = recovery(synth_all)
        rows[kind] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "genomic"
    return table, full


def map_metrics(table: pd.DataFrame) -> dict:
    """{map_<score>: value} for the gene maps, {map_metagenes_<score>: value} for metagenes."""
    out = {}
    for kind, row in table.iterrows():
        prefix = "map" if kind == "genes" else f"map_{kind}"
        out.update({f"{prefix}_{c}": v for c, v in row.items()})
    return out


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each rank correlation beside its real-vs-real reference of the same sizes."""

    def pm(mean, sd):
        return [f"{a:.3f} ± {b:.3f}" for a, b in zip(table[mean], table[sd], strict=True)]

    out = pd.DataFrame(
        {
            "synthetic (n held-out) vs train": pm("rank_correlation", "rank_correlation_sd"),
            "held-out vs train (reference)": table["reference_heldout"].round(3),
            "synthetic (n half) vs half A": pm(
                "rank_correlation_halves", "rank_correlation_halves_sd"
            ),
            "half B vs half A (reference)": pm("reference_halves", "reference_halves_sd"),
            "all synthetic vs train": table["rank_correlation_all"].round(3),
            "n train / held-out / half / synthetic": [
                f"{a} / {b} / {c} / {d}"
                for a, b, c, d in table[
                    ["n_train", "n_heldout", "n_half", "n_synthetic"]
                ].to_numpy()
            ],
        },
        index=table.index,
    )
    return out


def map_section(table: pd.DataFrame, maps: dict, out: str | Path):
    """Write `out/map_agreement.csv`, the two gene maps' heatmaps and the effect scatter;
    return the report's Section."""
    from radiogenomics import pl
    from radiogenomics._atomic import atomic_write
    from radiogenomics.evaluate import figures
    from radiogenomics.evaluate.html import Section

    out = Path(out)
    atomic_write(out / "map_agreement.csv", lambda tmp: table.to_csv(tmp))
    real, synth = maps["train"], maps["synthetic"]
    # the same rows on both heatmaps: the real map's most significant genomic variables
    best = real.groupby("genomic", sort=False)["p_adj"].min().nsmallest(HEATMAP_ROWS).index
    order = [g for g in pd.unique(real["genomic"]) if g in set(best)]
    for name, tab in (("real_map", real), ("synthetic_map", synth)):
        shown = tab[tab["genomic"].isin(order)]
        shown = shown.set_index("genomic").loc[order].reset_index()
        pl.map_heatmap(shown, max_rows=HEATMAP_ROWS, save=out / f"{name}.png")
    figures.effect_scatter(
        real, {"synthetic": synth, "held-out real": maps["heldout"]}, save=out / "effects.png"
    )
    tables = {
        "rank correlation of the map's effects with the real training map": shown_table(table)
    }
    if "auroc_real" in table:
        auroc = table.loc[["genes"], ["auroc_real", "auroc_heldout", "auroc_synthetic",
                                      "auroc_synthetic_all"]]  # fmt: skip
        auroc.columns = ["real train", "held-out real", "synthetic (n held-out)",
                         "synthetic (n train)"]  # fmt: skip
        tables["phantom: recovery of the planted map (AUROC of |effect|)"] = auroc
    return Section(
        "Maps: does the synthetic cohort keep the real radiogenomic map?",
        [
            "The conventional map (Spearman of each gene, and each metagene of the training "
            "patients, with each image feature) of the synthetic patients against the real "
            "training patients' map: the rank correlation of their effects. A map's noise "
            "grows as its cohort shrinks, so each synthetic score is drawn at the size of its "
            "reference: as many synthetic patients as the held-out set has, against held-out "
            "real vs train; as many as half the training set, against one random half vs the "
            "other (mean ± sd over draws). Heatmaps: the "
            f"{HEATMAP_ROWS} genes most significant in the real map, in both maps.",
        ],
        tables,
        {
            "real training map": out / "real_map.png",
            "synthetic map": out / "synthetic_map.png",
            "effects: real training map vs synthetic and held-out maps": out / "effects.png",
        },
    )


def privacy_and_maps(train, real, synthetic, out: Path, data_cfg, seed=0, progress=False):
    """The paired report's privacy of every record and of the images themselves (memorisation;
    `evaluate.privacy`, into out/privacy) and agreement of the synthetic map with the real one
    (into out/maps), on the same image features; returns ((metrics, Section or None),
    (metrics, Section or None)). `privacy_flag` is set when a record or the images are."""
    from radiogenomics.evaluate import privacy

    out = Path(out)
    cohorts = {"train": train, "heldout": real, "synthetic": synthetic}
    loaded = privacy.loaded_images(cohorts, data_cfg, progress=progress)
    feats, whole = privacy.feature_records(cohorts, data_cfg, progress=progress, loaded=loaded)
    table, distances = privacy.cohort_privacy(train, real, synthetic, feats)
    memo_metrics, memo = privacy.image_memorisation(
        cohorts, loaded, out / "privacy", data_cfg=data_cfg
    )
    metrics = privacy.privacy_metrics(table) | memo_metrics
    if memo_metrics:
        metrics["privacy_flag"] = bool(
            metrics.get("privacy_flag", False) or memo_metrics["image_memorisation_flag"]
        )
    private = (
        metrics,
        privacy.privacy_section(table, distances, out / "privacy", memo)
        if len(table) or memo is not None
        else None,
    )
    if whole:
        log.warning("no map agreement: the synthetic masks are whole patches")
        return private, ({}, None)
    try:
        scores, tables = map_scores(train, real, synthetic, feats, seed=seed)
    except ValueError as err:  # too few pairs for a map: the rest of the report stands
        log.warning("no map agreement: %s", err)
        return private, ({}, None)
    return private, (map_metrics(scores), map_section(scores, tables, out / "maps"))
