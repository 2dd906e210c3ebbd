"""Covariate-conditional Gaussian baselines that a generative model of expression must beat.

Both share one mean model: a linear regression of every gene on the covariates (intercept,
one-hot categorical covariates with the first category as reference, numeric covariates
standardised with the mean/std in `uns`), so a baseline knows as much about the covariates as
a conditional GAN and the comparison is fair. They differ in the residuals:
`IndependentGaussian` keeps a variance per gene (no gene-gene correlation at all), and
`MultivariateGaussian` keeps the full covariance, Ledoit-Wolf shrunk because there are usually
more genes than patients.
"""

from __future__ import annotations

import copy
import logging

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.covariance import LedoitWolf

from radiogenomics import _keys as K
from radiogenomics.data.cohort import covariate_keys

log = logging.getLogger(__name__)
_MAX_LISTED = 10


def _expression_rows(adata: ad.AnnData) -> np.ndarray:
    if K.HAS_EXPRESSION in adata.obs.columns:
        return np.flatnonzero(adata.obs[K.HAS_EXPRESSION].to_numpy(bool))
    return np.arange(adata.n_obs)


def _missing(obs: pd.DataFrame, keys: list[str]) -> np.ndarray:
    return obs[keys].isna().any(axis=1).to_numpy() if keys else np.zeros(len(obs), bool)


def covariates_like(adata: ad.AnnData, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` covariate rows drawn with replacement from the real patients with expression.

    Resampling whole rows keeps the joint covariate distribution (e.g. subtype x sex x age), so
    every synthetic set sampled with these rows is conditioned on the same covariates.
    """
    cat, num = covariate_keys(adata)
    keys = cat + num
    rows = _expression_rows(adata)
    rows = rows[~_missing(adata.obs.iloc[rows], keys)]
    if rows.size == 0:
        raise ValueError("no patient with expression and complete covariates to resample")
    rng = np.random.default_rng(seed)
    obs = adata.obs.iloc[rng.choice(rows, size=int(n), replace=True)][keys].copy()
    obs.index = pd.Index([f"S{i:05d}" for i in range(int(n))], name=adata.obs.index.name)
    return obs


class _ConditionalGaussian:
    """Linear mean on the covariates plus Gaussian residuals; subclasses model the residuals."""

    def __init__(self, covariates: list[str] | None = None):
        self.covariates = None if covariates is None else list(covariates)

    # ---- design matrix --------------------------------------------------------------------

    def _design(self, obs: pd.DataFrame) -> np.ndarray:
        """`(n, 1 + sum(len(vocab) - 1) + n_numeric)`: intercept, one-hot, standardised numeric."""
        cols = [np.ones((len(obs), 1))]
        for key, cats in self.categorical_.items():
            values = self._column(obs, key).astype("string")
            unknown = sorted(set(values.dropna()) - set(cats))
            if unknown:
                raise ValueError(
                    f"unknown value(s) {unknown[:_MAX_LISTED]} for covariate '{key}'; "
                    f"its categories are {cats}"
                )
            codes = pd.Categorical(values, categories=cats).codes
            cols.append(np.eye(len(cats))[codes][:, 1:])  # first category is the reference
        for key, st in self.numeric_.items():
            values = pd.to_numeric(self._column(obs, key), errors="coerce").to_numpy(np.float64)
            cols.append(((values - st["mean"]) / st["std"])[:, None])
        return np.hstack(cols)

    def _column(self, obs: pd.DataFrame, key: str) -> pd.Series:
        if key not in obs.columns:
            raise ValueError(
                f"covariate '{key}' is not an obs column; columns: {list(obs.columns)}"
            )
        col = obs[key]
        missing = col.isna()
        if key in self.numeric_:
            missing |= pd.to_numeric(col, errors="coerce").isna()
        if missing.any():
            raise ValueError(
                f"covariate '{key}' is missing or non-numeric for patient(s) "
                f"{list(obs.index[missing.to_numpy()][:_MAX_LISTED])}"
            )
        return col

    # ---- fit / sample ---------------------------------------------------------------------

    def fit(self, adata: ad.AnnData):
        """Fit the mean model and the residual distribution on the patients with expression."""
        cov = adata.uns.get(K.UNS, {}).get(K.COVARIATES, {})
        cat_all, num_all = covariate_keys(adata)
        keys = cat_all + num_all if self.covariates is None else self.covariates
        unknown = [k for k in keys if k not in cat_all + num_all]
        if unknown:
            raise ValueError(
                f"covariate(s) {unknown} are not set up in uns['{K.UNS}']; "
                f"known: categorical {cat_all}, numeric {num_all}"
            )
        self.categorical_ = {
            k: [str(c) for c in cov[K.CATEGORICAL][k]] for k in keys if k in cat_all
        }
        self.numeric_ = {}
        for k in keys:
            if k in num_all:
                st = cov[K.NUMERIC][k]
                std = float(st["std"])
                self.numeric_[k] = {"mean": float(st["mean"]), "std": std if std > 0 else 1.0}
        self.uns_covariates_ = copy.deepcopy(cov)

        rows = _expression_rows(adata)
        obs = adata.obs.iloc[rows]
        incomplete = _missing(obs, keys)
        if incomplete.any():
            log.warning(
                "%s.fit: %d patient(s) with missing covariates left out, e.g. %s",
                type(self).__name__,
                int(incomplete.sum()),
                list(obs.index[incomplete][:3]),
            )
            rows, obs = rows[~incomplete], obs[~incomplete]
        X = adata.X[rows]
        X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.nonzero(bad)
            raise ValueError(
                f"NaN/inf expression for patient(s) {list(obs.index[np.unique(r)][:_MAX_LISTED])} "
                f"in gene(s) {list(adata.var_names[np.unique(c)][:_MAX_LISTED])}"
            )
        D = self._design(obs)
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 patients with expression to fit; got {X.shape[0]}")
        for key, cats in self.categorical_.items():
            absent = sorted(set(cats) - set(obs[key].astype("string")))
            if absent:  # their one-hot column is all zero: lstsq leaves them at the reference
                log.warning("covariate '%s': no training patient has %s", key, absent)
        # least squares; lstsq's minimum-norm solution copes with rank-deficient designs
        self.coef_, _, rank, _ = np.linalg.lstsq(D, X, rcond=None)
        residuals = X - D @ self.coef_
        dof = X.shape[0] - rank if X.shape[0] > rank else X.shape[0]
        self.genes_ = pd.Index(adata.var_names)
        self._fit_residuals(residuals, dof)
        log.info(
            "%s: fitted on %d patients x %d genes (design %d columns, rank %d)",
            type(self).__name__,
            X.shape[0],
            X.shape[1],
            D.shape[1],
            rank,
        )
        return self

    def _fit_residuals(self, residuals: np.ndarray, dof: int) -> None:
        raise NotImplementedError

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample(self, obs: pd.DataFrame, seed: int = 0) -> ad.AnnData:
        """One synthetic patient per row of `obs`, conditioned on its covariate values.

        Returns an AnnData on the training data's scale: X float32, the fitted genes as
        var_names, obs a copy of `obs` (covariates as categoricals with the training
        vocabulary, `has_expression` True) and the covariate setup in `uns`.
        """
        if not hasattr(self, "coef_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call .fit(adata) first")
        if not isinstance(obs, pd.DataFrame):
            raise ValueError(f"obs must be a DataFrame of covariates; got {type(obs).__name__}")
        D = self._design(obs)
        rng = np.random.default_rng(seed)
        X = D @ self.coef_ + self._noise(len(obs), rng)
        out = obs.copy()
        out.index = out.index.astype(str)
        for key, cats in self.categorical_.items():
            out[key] = pd.Categorical(out[key].astype("string"), categories=cats)
        out[K.HAS_EXPRESSION] = True
        adata = ad.AnnData(
            X=X.astype(np.float32), obs=out, var=pd.DataFrame(index=self.genes_.copy())
        )
        adata.uns[K.UNS] = {K.COVARIATES: copy.deepcopy(self.uns_covariates_)}
        return adata


def covariance_factor(residuals: np.ndarray, dof: int) -> tuple[np.ndarray, float]:
    """(L, shrinkage): a square root L (L @ L.T = covariance) of the Ledoit-Wolf shrunk
    covariance of zero-mean `residuals` (n, genes), rescaled from n to `dof` degrees of
    freedom (n less the mean model's rank); the `MultivariateGaussian`'s noise, and the
    Gaussian a `GeneGenerator` with `gene.start: gaussian` starts from."""
    # residuals have mean 0 already; the precision matrix is never used, so not computed
    lw = LedoitWolf(assume_centered=True, store_precision=False).fit(residuals)
    covariance = lw.covariance_ * residuals.shape[0] / dof
    try:  # shrinkage > 0 makes it positive definite, and Cholesky is the cheap square root
        factor = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:  # no shrinkage and fewer patients than genes: only PSD
        w, V = np.linalg.eigh(covariance)
        factor = V * np.sqrt(np.clip(w, 0.0, None))
    return factor, float(lw.shrinkage_)


def fit_gaussian(
    X: np.ndarray, design: np.ndarray, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(coef, L, shrinkage) of the conditional multivariate Gaussian of `X` (n, genes) given
    the covariate `design` (n, d): least-squares coefficients (d, genes), and the
    `covariance_factor` of the residuals, as `MultivariateGaussian.fit` computes them.

    `scale` (genes,): `X` is the data divided per gene by `scale` (e.g. standardised), and the
    covariance is shrunk on the data's own scale, `X * scale`, then divided back. Ledoit-Wolf
    shrinks towards the mean variance times the identity, so it is not scale-equivariant: on
    standardised genes it keeps each gene's variance, on the data's scale it pulls them
    towards their mean. With `scale` the fit is the `MultivariateGaussian` of `X * scale`,
    divided by `scale`; the least-squares coefficients do not depend on it."""
    X, design = np.asarray(X, dtype=np.float64), np.asarray(design, dtype=np.float64)
    if X.shape[0] < 2 or X.shape[0] != design.shape[0]:
        raise ValueError(
            f"fit_gaussian needs >= 2 patients and one design row per patient; got X "
            f"{X.shape}, design {design.shape}"
        )
    scale = np.ones(X.shape[1]) if scale is None else np.asarray(scale, dtype=np.float64)
    if scale.shape != (X.shape[1],) or not np.all(scale > 0):
        raise ValueError(
            f"fit_gaussian: scale must be one positive number per gene ({X.shape[1]}); got "
            f"shape {scale.shape}, min {scale.min() if scale.size else None}"
        )
    coef, _, rank, _ = np.linalg.lstsq(design, X, rcond=None)
    dof = X.shape[0] - rank if X.shape[0] > rank else X.shape[0]
    factor, shrinkage = covariance_factor((X - design @ coef) * scale, dof)
    # diag(1/scale) @ L is the (Cholesky) square root of diag(1/scale) C diag(1/scale)
    return coef, factor / scale[:, None], shrinkage


class IndependentGaussian(_ConditionalGaussian):
    """Covariate-conditional mean plus independent Gaussian noise per gene (diagonal variance)."""

    def _fit_residuals(self, residuals: np.ndarray, dof: int) -> None:
        self.scale_ = np.sqrt((residuals**2).sum(axis=0) / dof)

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.scale_.size)) * self.scale_


class MultivariateGaussian(_ConditionalGaussian):
    """Covariate-conditional mean plus Gaussian noise with a full, Ledoit-Wolf shrunk covariance."""

    def _fit_residuals(self, residuals: np.ndarray, dof: int) -> None:
        self.factor_, self.shrinkage_ = covariance_factor(residuals, dof)

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((n, self.factor_.shape[0])) @ self.factor_.T


def fit_baselines(adata: ad.AnnData, n: int | None = None, seed: int = 0) -> dict[str, ad.AnnData]:
    """Fit both baselines on `adata` and sample `n` patients each (default: as many as it has).

    Both sets share covariate rows drawn by `covariates_like`; the result suits
    `evaluate_genes` and is a ready-made `fit_sample` for `kfold_scores`.
    """
    n = int(_expression_rows(adata).size if n is None else n)
    obs = covariates_like(adata, n, seed)
    return {
        "independent_gaussian": IndependentGaussian().fit(adata).sample(obs, seed),
        "multivariate_gaussian": MultivariateGaussian().fit(adata).sample(obs, seed),
    }
