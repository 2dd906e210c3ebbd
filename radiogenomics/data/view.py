"""The models' view of a cohort: the numbers every model of one cohort shares.

    view = CohortView(adata, genes=None, covariates=None, log1p=False)
    view.expression      # (n, n_genes) float32, standardised with the cohort's one scaler
    view.has_expression  # (n,) bool, and has_image, has_mask
    codes, numeric = view.covariates(rows)             # embedded and standardised covariates
    images, masks = view.images(rows, data_cfg)        # MONAI-loaded, in memory
    images, masks, owner = view.slices(rows, data_cfg) # every slice of slice stacks

The scaler is the cohort's `uns["rg"]["gene_stats"]` (`pp.standardize`); for a cohort without
one, the view fits its own on every patient with expression, and keeps it (`view.scaler`, which
a model saves with its run) without writing it into the AnnData: building a view or a model
never changes the user's cohort. The fit is per gene and deterministic, so a gene model, an
image model and the joint model of one AnnData standardise with the same numbers either way.
"""

from __future__ import annotations

import hashlib
import logging

import anndata as ad
import numpy as np
import pandas as pd
import torch

from radiogenomics import _keys as K
from radiogenomics.data.scaling import GeneScaler

log = logging.getLogger(__name__)
_MAX_LISTED = 10


def dense(X) -> np.ndarray:
    """A float64 array of an AnnData's X, sparse or dense."""
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def finite(X: np.ndarray, patients, genes) -> np.ndarray:
    """`X` (patients x genes) unchanged, or a ValueError naming the first patient and gene
    whose expression is NaN or infinite."""
    bad = ~np.isfinite(X)
    if bad.any():
        p, g = np.argwhere(bad)[0]
        raise ValueError(
            f"expression of patient '{patients[p]}' gene '{genes[g]}' is {X[p, g]} although "
            "has_expression is True; impute or drop it (the manifest's 'missing' policy) "
            "before training"
        )
    return X


def modality(adata: ad.AnnData, key: str, default: bool = True) -> np.ndarray:
    """A presence flag of obs (`has_expression`, `has_image`, `has_mask`) as a bool array."""
    if key in adata.obs.columns:
        return adata.obs[key].to_numpy(bool)
    return np.full(adata.n_obs, default)


def shared_scaler(adata: ad.AnnData, genes: list[str], log1p: bool) -> GeneScaler:
    """The cohort's gene scaler restricted to `genes`: from `uns["rg"]["gene_stats"]` where it
    covers them, else fitted on every patient with expression. Never writes into `adata`."""
    stats = adata.uns.get(K.UNS, {}).get(K.GENE_STATS)
    if stats is not None:
        full = GeneScaler.from_dict(stats)
        if full.log1p != log1p:
            raise ValueError(
                f"key 'gene.log1p' is {log1p} but the cohort's gene statistics "
                f"(uns['rg']['gene_stats']) were fitted with log1p={full.log1p}"
            )
    if stats is None or not set(genes) <= set(full.genes):
        rows = modality(adata, K.HAS_EXPRESSION) if adata.n_vars else np.zeros(adata.n_obs, bool)
        X = finite(dense(adata.X)[rows], adata.obs_names[rows], adata.var_names)
        full = GeneScaler(log1p=log1p).fit(X, genes=list(map(str, adata.var_names)))
    index = {g: i for i, g in enumerate(full.genes)}
    cols = np.array([index[g] for g in genes], dtype=int)
    scaler = GeneScaler(log1p=log1p)
    scaler.mean, scaler.std, scaler.genes = full.mean[cols], full.std[cols], list(genes)
    return scaler


def encode_covariates(
    obs: pd.DataFrame, categorical: dict[str, list[str]], numeric: dict[str, dict]
) -> tuple[np.ndarray, np.ndarray]:
    """Covariate columns -> (codes (n, n_cat) int64 against the model's vocabularies,
    standardised numeric (n, n_num) float32); ValueError naming the patient at fault."""
    keys = list(categorical) + list(numeric)
    missing = [k for k in keys if k not in obs.columns]
    if missing:
        raise ValueError(f"covariate column(s) {missing} missing; the model needs {keys}")
    codes = np.zeros((len(obs), len(categorical)), dtype=np.int64)
    for j, (key, vocab) in enumerate(categorical.items()):
        values = obs[key].astype(object).to_numpy()
        lookup = {v: i for i, v in enumerate(vocab)}
        for i, v in enumerate(values):
            if pd.isna(v) or str(v) not in lookup:
                raise ValueError(
                    f"covariate '{key}' of patient '{obs.index[i]}' is {v!r}, which is not "
                    f"one of the model's categories {vocab}"
                )
            codes[i, j] = lookup[str(v)]
    values = np.zeros((len(obs), len(numeric)), dtype=np.float32)
    for j, (key, stats) in enumerate(numeric.items()):
        column = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=np.float64)
        bad = obs.index[~np.isfinite(column)].tolist()
        if bad:
            raise ValueError(
                f"numeric covariate '{key}' is missing or not a number for patient(s) "
                f"{bad[:_MAX_LISTED]}"
            )
        values[:, j] = (column - stats["mean"]) / stats["std"]
    return codes, values


class CohortView:
    """A cohort's patients as the models see them (see the module docstring)."""

    def __init__(
        self,
        adata: ad.AnnData,
        *,
        genes: list[str] | None = None,
        covariates: list[str] | None = None,
        log1p: bool = False,
        scaler: GeneScaler | None = None,
    ):
        """`genes` (None: all of the cohort's) and `covariates` (None: all) select what the
        model uses; `scaler` (a loaded model's) replaces the cohort's."""
        self.adata = adata
        self.ids = np.asarray(list(map(str, adata.obs_names)), dtype=object)
        self.has_expression = modality(adata, K.HAS_EXPRESSION, adata.n_vars > 0)
        if adata.n_vars == 0:
            self.has_expression[:] = False
        self.has_image = modality(adata, K.HAS_IMAGE, False)
        self.has_mask = modality(adata, K.HAS_MASK, False) & self.has_image
        genes = list(map(str, adata.var_names)) if genes is None else list(genes)
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise ValueError(
                f"key 'gene.genes': {len(missing)} gene(s) not in the cohort: "
                f"{missing[:_MAX_LISTED]}"
            )
        self.genes = genes
        self.expression = np.zeros((adata.n_obs, len(genes)), np.float32)
        self.scaler = None
        if genes and self.has_expression.any():
            self.scaler = scaler or shared_scaler(adata, genes, log1p)
            X = dense(adata[self.has_expression, genes].X)
            finite(X, self.ids[self.has_expression], genes)
            self.expression[self.has_expression] = self.scaler.transform(X)
        self.categorical, self.numeric = _covariate_setup(adata, covariates)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def covariate_keys(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    def covariates(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(codes, standardised numeric) of cohort rows `rows`."""
        return encode_covariates(self.adata.obs.iloc[rows], self.categorical, self.numeric)

    def images(self, rows, data_cfg, *, progress: bool = False):
        """Images `(N, C, *spatial)` in [-1, 1] and masks `(N, 1, *spatial)` of rows `rows`."""
        from radiogenomics.data.dataset import load_images

        return load_images(self.adata, data_cfg, rows, progress=progress)

    def slices(self, rows, data_cfg, *, progress: bool = False):
        """Every slice of rows `rows` (`data.dataset.load_slices`): images `(M, C, *spatial)`,
        masks `(M, 1, *spatial)` and each slice's position in `rows`."""
        from radiogenomics.data.dataset import load_slices

        return load_slices(self.adata, data_cfg, rows, progress=progress)

    def digest(self, rows) -> str:
        """A hash of the ids of rows `rows`: what a resumed run must train on again."""
        return hashlib.sha256("\n".join(self.ids[np.asarray(rows)]).encode()).hexdigest()

    def tensor(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised expression (N, n_genes) and presence flags (N,) of rows `rows`."""
        rows = np.asarray(rows)
        return torch.as_tensor(self.expression[rows]), torch.as_tensor(self.has_expression[rows])


def _covariate_setup(adata: ad.AnnData, keys: list[str] | None):
    """(categorical vocabularies, numeric statistics) of the covariates `keys` (None: all)."""
    from radiogenomics.data.cohort import covariate_keys

    uns_cov = adata.uns.get(K.UNS, {}).get(K.COVARIATES, {})
    cat_keys, num_keys = covariate_keys(adata)
    if keys is not None:
        unknown = [c for c in keys if c not in cat_keys + num_keys]
        if unknown:
            raise ValueError(
                f"key 'gene.covariates': {unknown} are not covariates of the cohort; "
                f"its covariates are {cat_keys + num_keys}"
            )
        cat_keys = [c for c in cat_keys if c in keys]
        num_keys = [c for c in num_keys if c in keys]
    categorical = {k: [str(v) for v in uns_cov[K.CATEGORICAL][k]] for k in cat_keys}
    numeric = {k: dict(uns_cov[K.NUMERIC][k]) for k in num_keys}
    return categorical, numeric
