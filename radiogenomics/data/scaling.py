"""The cohort's gene scaler: optional `log1p`, then per-gene standardisation, exactly invertible.

The data layer's one home of the scaler (docs/design.md, section 3, "one cohort view"): `pp.standardize`
fits it and stores it in `uns["rg"]["gene_stats"]`; the models' cohort view
(`radiogenomics.data.view`) reads it from there, or fits its own without writing it back.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from radiogenomics import _keys as K


class GeneScaler:
    """Optional `log1p`, then per-gene `(x - mean) / std`; `inverse_transform` undoes both.

    Arithmetic is float64 so that `inverse_transform(transform(X))` equals `X` up to float32
    rounding; outputs are float32. Rows that are entirely NaN (patients without expression) are
    ignored by `fit` and stay NaN through `transform`.
    """

    def __init__(self, log1p: bool = False):
        self.log1p = bool(log1p)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.genes: list[str] = []

    def _check(self, X, what: str) -> np.ndarray:
        if what != "fit" and self.mean is None:
            raise ValueError(f"{what}: the GeneScaler is not fitted; call fit(X) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"{what} expects a 2D array (patients x genes); got shape {X.shape}")
        if self.mean is not None and X.shape[1] != self.mean.size:
            raise ValueError(
                f"{what}: data has {X.shape[1]} genes but the scaler was fitted on {self.mean.size}"
            )
        if self.log1p and what != "inverse_transform":
            neg = np.argwhere(X < 0)  # NaN compares False
            if neg.size:
                r, g = neg[0]
                name = f"'{self.genes[g]}' (index {g})" if self.genes else f"index {g}"
                raise ValueError(
                    f"{what}: log1p needs non-negative expression; gene {name} is {X[r, g]:g} "
                    f"in row {r} ({len(neg)} negative value(s)). Is the data already log-scale?"
                )
        return X

    def fit(self, X, genes: Sequence[str] | None = None) -> GeneScaler:
        self.genes = [str(g) for g in genes] if genes is not None else []
        X = self._check(X, "fit")
        if self.genes and len(self.genes) != X.shape[1]:
            raise ValueError(f"fit: {len(self.genes)} gene names for {X.shape[1]} columns")
        X = X[~np.isnan(X).all(axis=1)]
        if X.shape[0] == 0:
            raise ValueError("fit: no rows with expression to fit the scaler on")
        partial = np.argwhere(np.isnan(X))
        if partial.size:
            g = partial[0, 1]
            name = self.genes[g] if self.genes else f"index {g}"
            raise ValueError(f"fit: NaN for gene {name} in a row that has other values")
        if self.log1p:
            X = np.log1p(X)
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)  # constant genes: centre only, never divide by 0
        return self

    def transform(self, X) -> np.ndarray:
        X = self._check(X, "transform")
        if self.log1p:
            X = np.log1p(X)
        return ((X - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, Z) -> np.ndarray:
        X = self._check(Z, "inverse_transform") * self.std + self.mean
        # generated values below 0 on the log1p scale would be negative counts: clip to 0
        return (np.expm1(np.maximum(X, 0.0)) if self.log1p else X).astype(np.float32)

    def to_dict(self) -> dict:
        """h5ad- and JSON-writable statistics."""
        if self.mean is None:
            raise ValueError("to_dict: the GeneScaler is not fitted; call fit(X) first")
        return {
            "log1p": self.log1p,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "genes": list(self.genes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> GeneScaler:
        missing = [k for k in ("log1p", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"gene statistics lack key(s) {missing}; have {sorted(d)}")
        scaler = cls(log1p=bool(d["log1p"]))
        scaler.mean = np.asarray(d["mean"], dtype=np.float64).ravel()
        scaler.std = np.asarray(d["std"], dtype=np.float64).ravel()
        scaler.genes = [str(g) for g in d.get("genes", [])]  # h5ad gives arrays back
        if scaler.mean.size != scaler.std.size:
            raise ValueError(f"gene statistics: {scaler.mean.size} means, {scaler.std.size} stds")
        return scaler


def stored_scaler(adata: ad.AnnData) -> GeneScaler | None:
    """The scaler stored in `adata.uns["rg"]["gene_stats"]`, or None where none is stored."""
    stats = adata.uns.get(K.UNS, {}).get(K.GENE_STATS)
    return None if stats is None else GeneScaler.from_dict(stats)
