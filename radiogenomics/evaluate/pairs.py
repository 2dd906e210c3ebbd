"""Do a synthetic patient's genes and image belong together? (docs/design.md, section 5, pairs)

- `pair_consistency`: a predictor of the expression's principal components from image features,
  trained on real training pairs, scores held-out real pairs (the reference: how consistent
  real pairs are) and synthetic pairs. A generator whose images ignore their genes scores like
  the shuffled real pairs (the floor), one that keeps the pairing scores like the reference.
- `phantom_associations`: on the phantom, each patient's planted program scores are read back
  from its expression with the phantom's known loadings, and each lesion feature measured on its
  image is correlated with its own program: the planted radiogenomic map, on any cohort with the
  phantom's genes (real or synthetic).

A pair is a patient with expression, an image and a mask. Images are read with
`radiogenomics.data.dataset.load_images` (the `DataConfig` pipeline, intensities in [-1, 1]).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import pearsonr, spearmanr

from radiogenomics import _keys as K
from radiogenomics.data.phantom import FEATURES, PROGRAMS

log = logging.getLogger(__name__)

MIN_PAIRS = 5
REFERENCE, SYNTHETIC, SHUFFLED = "real (reference)", "synthetic", "real (pairs shuffled)"
SUMMARY = "mean"  # the summary row of each set in pair_consistency
RIDGE_ALPHAS = np.logspace(-2, 4, 13)

# --------------------------------------------------------------------------------------------
# inputs


def _expression(adata: ad.AnnData, genes: pd.Index, name: str) -> np.ndarray:
    """`adata`'s expression in `genes`' order, float64 (NaN rows where a patient has none)."""
    missing = genes.difference(pd.Index(adata.var_names))
    if len(missing):
        raise ValueError(
            f"cohort '{name}' lacks {len(missing)} of the reference's genes, e.g. "
            f"{list(missing[:5])}"
        )
    X = adata[:, genes].X
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    return X.astype(np.float64)


def _flag(adata: ad.AnnData, key: str, default: np.ndarray) -> np.ndarray:
    return adata.obs[key].to_numpy(bool) if key in adata.obs else default


def paired_rows(adata: ad.AnnData) -> np.ndarray:
    """Row numbers of the patients with expression (all finite), an image and a mask."""
    X = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    finite = np.isfinite(X).all(axis=1) if X.shape[1] else np.zeros(adata.n_obs, bool)
    none = np.zeros(adata.n_obs, bool)
    keep = (
        finite
        & _flag(adata, K.HAS_EXPRESSION, finite)
        & _flag(adata, K.HAS_IMAGE, none)
        & _flag(adata, K.HAS_MASK, none)
    )
    return np.flatnonzero(keep)


def _pairs(adata: ad.AnnData, name: str) -> np.ndarray:
    rows = paired_rows(adata)
    if len(rows) < MIN_PAIRS:
        raise ValueError(
            f"cohort '{name}' has {len(rows)} paired patient(s) (expression, image and mask); "
            f"a pair evaluation needs >= {MIN_PAIRS}"
        )
    return rows


def is_phantom(adata: ad.AnnData) -> bool:
    return K.PHANTOM in adata.uns.get(K.UNS, {})


def phantom_loadings_fit(adata: ad.AnnData) -> bool:
    """Do the phantom's stored loadings still have one row per gene of `adata` (no selection)?"""
    truth = adata.uns.get(K.UNS, {}).get(K.PHANTOM)
    return truth is not None and len(truth["program_loadings"]) == adata.n_vars


def cohort_features(
    adata: ad.AnnData, rows, data_cfg, *, kind: str = "radiomic", progress: bool = False
) -> pd.DataFrame:
    """Features of the lesions of cohort rows `rows`, measured inside their masks: `radiomic`
    (`evaluate.images.radiomic_table`) or `lesion` (the phantom's phenotypes,
    `radiomap.features.lesion_feature_table`); index = patient ids."""
    from radiogenomics.data.dataset import load_images

    if kind not in ("radiomic", "lesion"):
        raise ValueError(f"image feature kind must be 'radiomic' or 'lesion'; got {kind!r}")
    images, masks = load_images(adata, data_cfg, rows, progress=progress)
    return _feature_table(images, masks, kind, adata.obs_names[rows], progress)


def _feature_table(images, masks, kind, index, progress=False) -> pd.DataFrame:
    from radiogenomics.evaluate.images import radiomic_table
    from radiogenomics.radiomap.features import lesion_feature_table

    images, masks = np.asarray(images), np.asarray(masks)
    if kind == "lesion":
        table = lesion_feature_table(images[:, :1], masks)
    else:
        table = radiomic_table(images, masks, progress=progress)
    table.index = pd.Index(index, name="patient")
    return table


# --------------------------------------------------------------------------------------------
# cross-modal consistency


def _correlations(pred: np.ndarray, actual: np.ndarray) -> dict:
    if len(actual) < 3 or np.ptp(actual) == 0 or np.ptp(pred) == 0:
        return {"spearman": np.nan, "pearson": np.nan}
    return {
        "spearman": float(spearmanr(pred, actual)[0]),
        "pearson": float(pearsonr(pred, actual)[0]),
    }


def _r2(pred: np.ndarray, actual: np.ndarray) -> float:
    ss_tot = float(((actual - actual.mean()) ** 2).sum())
    return float(1.0 - ((actual - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else np.nan


def pair_consistency(
    train: ad.AnnData,
    real: ad.AnnData,
    synthetic: ad.AnnData,
    data_cfg,
    *,
    n_components: int = 8,
    features: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Cross-modal consistency: how well image features predict the expression's principal
    components, on held-out real pairs and on synthetic pairs.

    Expression is standardised with the real training patients' per-gene mean and std, and
    `n_components` principal components are fitted on them (every training patient with
    expression). Image features (`features`: 'lesion' on phantom cohorts, else 'radiomic')
    are measured inside each patient's mask. A ridge regression (features standardised on the
    training pairs, NaNs imputed with their median, alpha per component by leave-one-out CV)
    learns the components from the features of the real training pairs. It then predicts the
    components of three sets: `real (reference)` (the held-out real pairs), `synthetic`, and
    `real (pairs shuffled)` (held-out images with another held-out patient's expression: the
    floor, what unrelated genes and images score).

    Returns a table indexed by (set, component): per component `spearman` and `pearson` of
    predicted vs actual, `r2` (1 - SSres/SStot around the set's own mean), `n_pairs`, and the
    component's `explained_variance` (ratio, on the training patients); the component `mean`
    of each set holds the mean correlations over the components and the variance-weighted R².
    Synthetic pairs as consistent as real ones have scores like the reference.
    """
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    genes = pd.Index(train.var_names)
    kind = features or ("lesion" if is_phantom(train) else "radiomic")
    rows = {name: _pairs(a, name) for name, a in (("train", train), ("real", real))}
    rows["synthetic"] = _pairs(synthetic, "synthetic")

    Xtr = _expression(train, genes, "train")
    expressed = np.isfinite(Xtr).all(axis=1) & _flag(train, K.HAS_EXPRESSION, np.ones(len(Xtr)))
    mean, std = Xtr[expressed].mean(axis=0), Xtr[expressed].std(axis=0)
    std[std == 0] = 1.0
    k = int(min(n_components, expressed.sum() - 1, len(genes)))
    if k < 1:
        raise ValueError(f"n_components must be >= 1 and train needs >= 2 patients; got k={k}")
    pca = PCA(n_components=k, random_state=seed).fit((Xtr[expressed] - mean) / std)
    names = [f"PC{i + 1}" for i in range(k)]

    def components(adata, name):
        X = _expression(adata, genes, name)[rows[name]]
        return pca.transform((X - mean) / std)

    Y = {name: components(a, name) for name, a in (("train", train), ("real", real))}
    Y["synthetic"] = components(synthetic, "synthetic")
    F = {
        name: cohort_features(a, rows[name], data_cfg, kind=kind, progress=progress)
        for name, a in (("train", train), ("real", real), ("synthetic", synthetic))
    }
    # features no training lesion has, or constant ones, cannot be learned from
    usable = [c for c in F["train"] if F["train"][c].notna().sum() >= 2 and F["train"][c].std() > 0]
    if not usable:
        raise ValueError("no image feature varies across the training pairs")
    model = make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True),
    )
    model.fit(F["train"][usable].to_numpy(np.float64), Y["train"])

    def predict(name):
        table = F[name][usable].to_numpy(np.float64)
        return model.predict(np.where(np.isfinite(table), table, np.nan))

    perm = np.random.default_rng(seed).permutation(len(Y["real"]))
    sets = {
        REFERENCE: (predict("real"), Y["real"]),
        SYNTHETIC: (predict("synthetic"), Y["synthetic"]),
        SHUFFLED: (predict("real"), Y["real"][perm]),
    }
    records = []
    for name, (pred, actual) in sets.items():
        per = []
        for j, comp in enumerate(names):
            row = {"set": name, "component": comp, **_correlations(pred[:, j], actual[:, j])}
            row.update(
                r2=_r2(pred[:, j], actual[:, j]),
                n_pairs=len(actual),
                explained_variance=float(pca.explained_variance_ratio_[j]),
            )
            per.append(row)
        var = actual.var(axis=0)
        weighted = 1.0 - ((actual - pred) ** 2).mean(axis=0).sum() / max(var.sum(), 1e-12)
        per.append(
            {
                "set": name,
                "component": SUMMARY,
                "spearman": float(np.nanmean([r["spearman"] for r in per])),
                "pearson": float(np.nanmean([r["pearson"] for r in per])),
                "r2": float(weighted),
                "n_pairs": len(actual),
                "explained_variance": float(pca.explained_variance_ratio_.sum()),
            }
        )
        records += per
    log.info("pair_consistency: %d features (%s), %d components", len(usable), kind, k)
    return pd.DataFrame(records).set_index(["set", "component"])


# --------------------------------------------------------------------------------------------
# the phantom's planted associations


def program_scores(reference: ad.AnnData, cohort: ad.AnnData) -> pd.DataFrame:
    """Each patient's program scores read back from its expression with the phantom's loadings.

    The phantom makes expression as `mu + scale * (W z + V h + noise * eps)` (data.phantom).
    `mu` and `scale` are not stored, so they are estimated on `reference`'s patients: `mu` by
    the gene's mean, `scale` by its std over sqrt(|W_g|^2 + |V_g|^2 + noise^2) (the std a
    gene has when each program and module has unit variance). The centred, rescaled expression
    of `cohort` is then regressed on `W` by least squares, `z = pinv(W) x`; the scores are
    centred by the reference's mean, which a rank correlation ignores. Rows of `cohort`
    without expression are NaN. Returns patients x PROGRAMS.
    """
    truth = reference.uns.get(K.UNS, {}).get(K.PHANTOM)
    if truth is None:
        raise ValueError("the reference cohort is not a phantom (no uns['rg']['phantom'] truth)")
    if not phantom_loadings_fit(reference):
        raise ValueError(
            f"the reference has {reference.n_vars} genes but the phantom's loadings have "
            f"{len(truth['program_loadings'])} rows: use the phantom cohort before gene selection"
        )
    genes = pd.Index(reference.var_names)
    W = np.asarray(truth["program_loadings"], np.float64)  # genes x programs
    V = np.asarray(truth.get("background_loadings", np.zeros((len(genes), 0))), np.float64)
    noise = float(truth.get("noise", 0.5))
    Xref = _expression(reference, genes, "reference")
    ok = np.isfinite(Xref).all(axis=1)
    if ok.sum() < 2:
        raise ValueError("the reference phantom has fewer than 2 patients with expression")
    mu, sd = Xref[ok].mean(axis=0), Xref[ok].std(axis=0)
    scale = sd / np.sqrt((W**2).sum(axis=1) + (V**2).sum(axis=1) + noise**2)
    scale[scale == 0] = 1.0
    X = (_expression(cohort, genes, "cohort") - mu) / scale
    z = X @ np.linalg.pinv(W).T
    programs = [str(p) for p in truth.get("programs", PROGRAMS)]
    return pd.DataFrame(z, index=cohort.obs_names, columns=programs)


def phantom_associations(reference: ad.AnnData, cohort: ad.AnnData, images, masks) -> pd.DataFrame:
    """Spearman of each lesion feature with its planted program, on `cohort` (real or synthetic).

    `reference` is the real phantom cohort (its `uns['rg']['phantom']` holds the loadings and
    its patients the gene statistics); `cohort` is any cohort with the phantom's genes, and
    `images` `(n_obs, C, *spatial)` and `masks` `(n_obs, 1, *spatial)` are its patients' images
    in its row order (as `load_images` gives them). Programs come from `program_scores`,
    features from `radiomap.features.lesion_feature_table`. Patients without expression, or
    whose lesion is too small to measure, are left out.

    One row per feature (FEATURES): `program`, `spearman`, `p`, `n`; and, where `cohort`
    carries the true programs (`obsm['rg_programs']`, the real phantom), `spearman_true`, the
    same correlation with the true programs (what perfect read-back would give).
    """
    from radiogenomics.radiomap.features import lesion_feature_table

    images, masks = _numpy(images), _numpy(masks)
    if len(images) != cohort.n_obs or len(masks) != cohort.n_obs:
        raise ValueError(
            f"{len(images)} images and {len(masks)} masks for a cohort of {cohort.n_obs} patients"
        )
    z = program_scores(reference, cohort)
    feats = lesion_feature_table(images[:, :1], masks, index=cohort.obs_names)
    true = cohort.obsm.get(K.PROGRAMS)
    rows = {}
    for feature in FEATURES:
        f = feats[feature].to_numpy(np.float64)
        x = z[feature].to_numpy(np.float64)
        ok = np.isfinite(f) & np.isfinite(x)
        if ok.sum() < MIN_PAIRS:
            raise ValueError(
                f"{int(ok.sum())} patient(s) with expression and a measurable lesion; "
                f"phantom_associations needs >= {MIN_PAIRS}"
            )
        r, p = spearmanr(x[ok], f[ok]) if np.ptp(f[ok]) > 0 else (np.nan, np.nan)
        row = {"program": feature, "spearman": float(r), "p": float(p), "n": int(ok.sum())}
        if true is not None and feature in getattr(true, "columns", ()):
            t = np.asarray(true[feature], np.float64)
            good = ok & np.isfinite(t)
            row["spearman_true"] = float(spearmanr(t[good], f[good])[0])
        rows[feature] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "feature"
    return out


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


__all__ = [
    "MIN_PAIRS",
    "REFERENCE",
    "SHUFFLED",
    "SUMMARY",
    "SYNTHETIC",
    "cohort_features",
    "pair_consistency",
    "paired_rows",
    "phantom_associations",
    "phantom_loadings_fit",
    "program_scores",
]
