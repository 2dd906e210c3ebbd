"""Tools that write their results into the AnnData (scanpy style: `key_added`, nothing returned
but what the call adds)."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from radiogenomics import _keys as K
from radiogenomics.data.split import held_out

SPLIT = "rg_split"


def split(
    adata: ad.AnnData,
    fraction: float = 0.15,
    *,
    seed: int = 0,
    stratify: str | None = None,
    group: str | None = None,
    key_added: str = SPLIT,
) -> None:
    """Label each patient 'train' or 'held_out' in `obs[key_added]`: the cohort's one split
    (`radiogenomics.data.split.held_out`), the same that a model trained on this cohort with
    `train.val_fraction=fraction` and `seed` holds out."""
    mask = held_out(adata.obs, fraction, seed, stratify=stratify, group=group)
    adata.obs[key_added] = pd.Categorical(
        ["held_out" if m else "train" for m in mask], categories=["train", "held_out"]
    )


def conventional_map(
    adata: ad.AnnData,
    *,
    features: pd.DataFrame | None = None,
    genomic: str = "metagenes",
    subtypes=None,
    n_metagenes: int | None = None,
    method: str = "hierarchical",
    fdr: str = "benjamini-hochberg",
    categorical_test: str = "kruskal",
    data_cfg=None,
    progress: bool = False,
    key_added: str = K.MAP,
) -> None:
    """The conventional radiogenomic map (`radiogenomics.radiomap.conventional.conventional_map`):
    genes or metagenes (`method` 'hierarchical' or 'nmf') and the categorical obs columns named
    in `subtypes` against image features (`features`, or measured on the cohort's images and
    masks): Spearman tests, and Kruskal-Wallis or Fisher exact tests (`categorical_test`) for
    the subtypes; p values adjusted by `fdr` over the table.

    Writes `uns[key_added]`: the long table (genomic, feature, effect, p, p_adj, method, n) as a
    dict of columns (`radiomap.conventional.map_from_uns` reads it back); `varm[key_added +
    '_effect']` and `varm[key_added + '_p_adj']`: genes x features DataFrames (columns: the
    feature names) of each gene's Spearman rho and adjusted p value, for metagenes those of the
    gene's metagene (NaN for a gene in none); and, for metagenes, `var['rg_metagene']`: each
    gene's metagene ('' for a constant gene). Subtype rows live in the long table only.
    """
    from radiogenomics.radiomap.conventional import conventional_map as _map
    from radiogenomics.radiomap.conventional import effect_matrix, map_to_uns

    table, membership = _map(
        adata,
        features,
        genomic=genomic,
        subtypes=subtypes,
        n_metagenes=n_metagenes,
        method=method,
        fdr=fdr,
        categorical_test=categorical_test,
        data_cfg=data_cfg,
        progress=progress,
    )
    adata.uns[key_added] = map_to_uns(table)
    # each gene's row of the map: its own (genes) or its metagene's
    rows = adata.var_names if membership is None else membership.reindex(adata.var_names)
    gene_rows = table[table["method"] == "spearman"]
    features = pd.unique(table["feature"])
    for suffix, value in ((K.MAP_EFFECT, "effect"), (K.MAP_P_ADJ, "p_adj")):
        wide = effect_matrix(gene_rows, value).reindex(index=rows, columns=features)
        adata.varm[key_added + suffix] = pd.DataFrame(
            wide.to_numpy(float), index=adata.var_names, columns=[str(f) for f in features]
        )
    if membership is not None:
        adata.var[K.METAGENE] = membership.reindex(adata.var_names).fillna("").astype(str)


def learned_map(
    adata: ad.AnnData,
    model,
    *,
    base: str = "cohort",
    genomic: str = "genes",
    method: str = "finite",
    n_patients: int = 64,
    n_draws: int = 1,
    delta: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    key_added: str = K.LEARNED_MAP,
    **kwargs,
) -> None:
    """The learned radiogenomic map of a trained JointGAN or ImageGAN
    (`radiogenomics.radiomap.learned.learned_map`): the change of the generated images' features
    per unit of each gene or metagene. `base` 'cohort': the base patients are `adata`'s
    patients with expression; 'synthetic': the joint model's own fully synthetic patients
    (`adata` only receives the result). Other keyword arguments go to the map.

    Writes `uns[key_added]`, the long table as `conventional_map` stores it (the `method`
    column says 'finite-difference' or 'autograd', and ', generator route' where `route` is
    'generator', a keyword of the map), and, for metagenes,
    `var[f"{key_added}_metagene"]`: each gene's metagene.
    """
    from radiogenomics.radiomap.conventional import map_to_uns
    from radiogenomics.radiomap.learned import learned_map as _map

    if base not in ("cohort", "synthetic"):
        raise ValueError(f"base must be 'cohort' or 'synthetic'; got {base!r}")
    table, membership = _map(
        model,
        adata if base == "cohort" else None,
        genomic=genomic,
        method=method,
        n_patients=n_patients,
        n_draws=n_draws,
        delta=delta,
        seed=seed,
        progress=progress,
        return_membership=True,
        **kwargs,
    )
    adata.uns[key_added] = map_to_uns(table)
    if membership is not None:
        column = f"{key_added}_metagene"
        adata.var[column] = membership.reindex(adata.var_names).fillna("").astype(str)
