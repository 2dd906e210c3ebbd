"""Tools that write their results into the AnnData (scanpy style: `key_added`, nothing returned
but what the call adds)."""

from __future__ import annotations

import anndata as ad
import pandas as pd

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
