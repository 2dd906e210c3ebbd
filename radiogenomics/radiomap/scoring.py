"""Scores of a radiogenomic map: recovery of a known map (the phantom's) and agreement of two.

A map here is either a matrix (genomic variables x features, `effect`) or the long table of
`radiogenomics.radiomap.conventional` (columns genomic, feature, effect, ...). Recovery treats
the pairs with a non-zero true effect as positives and ranks all pairs by |effect|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from radiogenomics import _keys as K

# The phantom's planted phenotypes and the map feature (radiomap.features.IMAGE_FEATURES) that
# measures each, with the sign that links them: size sets the volume, elongation the axis
# ratio, margin irregularity lowers solidity, contrast raises the lesion-minus-ring contrast,
# texture raises the GLCM contrast, necrosis the fraction of dark core.
PHANTOM_FEATURES = {
    "size": ("shape_volume", 1),
    "elongation": ("shape_axis_ratio", 1),
    "margin": ("shape_solidity", -1),
    "contrast": ("contrast", 1),
    "texture": ("glcm_contrast", 1),
    "necrosis": ("necrosis_fraction", 1),
}


def _pairs(effect, truth) -> tuple[np.ndarray, np.ndarray]:
    e, t = np.asarray(effect, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    if e.shape != t.shape:
        raise ValueError(f"effect and truth differ in shape: {np.shape(effect)}, {np.shape(truth)}")
    ok = np.isfinite(e) & np.isfinite(t)
    return e[ok], t[ok]


def auroc(effect, truth) -> float:
    """AUROC of |effect| for telling the pairs with a true effect (truth != 0) from the rest."""
    e, t = _pairs(effect, truth)
    y = t != 0
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.abs(e)))


def average_precision(effect, truth) -> float:
    """Average precision of |effect| for the pairs with a true effect."""
    e, t = _pairs(effect, truth)
    y = t != 0
    return float(average_precision_score(y, np.abs(e))) if y.any() else float("nan")


def sign_agreement(effect, truth) -> float:
    """Fraction of the pairs with a true effect whose effect has the true sign."""
    e, t = _pairs(effect, truth)
    y = t != 0
    return float((np.sign(e[y]) == np.sign(t[y])).mean()) if y.any() else float("nan")


def auroc_by_row(effect: pd.DataFrame, truth) -> pd.Series:
    """`auroc` within each row (a gene over the features); NaN where a row has one class."""
    truth = np.asarray(truth, np.float64)
    return pd.Series(
        [auroc(effect.iloc[i].to_numpy(), truth[i]) for i in range(len(effect))],
        index=effect.index,
        name="auroc",
    )


def rank_correlation(map_a: pd.DataFrame, map_b: pd.DataFrame) -> float:
    """Spearman correlation of two maps' effects over the (genomic, feature) pairs both hold
    (long tables), or over the cells both hold (matrices); NaN effects are left out."""
    if {"genomic", "feature", "effect"} <= set(map_a.columns):
        a = map_a.set_index(["genomic", "feature"])["effect"]
        b = map_b.set_index(["genomic", "feature"])["effect"]
    else:
        a, b = map_a.stack(), map_b.stack()
    a, b = a.align(b, join="inner")
    ok = np.isfinite(a.to_numpy(np.float64)) & np.isfinite(b.to_numpy(np.float64))
    if ok.sum() < 3:
        return float("nan")
    return float(spearmanr(a.to_numpy()[ok], b.to_numpy()[ok])[0])


def phantom_truth(adata) -> pd.DataFrame:
    """The phantom's planted map, genes x measured features (`PHANTOM_FEATURES`), signed so
    that a map that measures the phenotypes has the truth's signs."""
    truth = adata.uns[K.UNS].get(K.PHANTOM)
    if truth is None:
        raise ValueError("the cohort is not a phantom (no uns['rg']['phantom'] ground truth)")
    planted = pd.DataFrame(
        np.asarray(truth["truth_map"]), index=adata.var_names, columns=list(truth["features"])
    )
    return pd.DataFrame(
        {feat: sign * planted[name] for name, (feat, sign) in PHANTOM_FEATURES.items()}
    )


def score_phantom_map(table: pd.DataFrame, adata, *, per_gene: bool = True) -> dict[str, float]:
    """Recovery of the phantom's planted gene map by a gene-level map (long table): AUROC,
    average precision and sign agreement over the gene x measured-feature pairs, and (with
    `per_gene`; one AUROC per gene, the slow part) the mean per-gene AUROC over the genes with
    both kinds of pair. A map that measures some of the phantom's features only (a learned map
    by autograd) is scored on those (`n_pairs` says how many pairs counted); one with none of
    them, or none of its genes, is an error."""
    truth = phantom_truth(adata)
    wide = table.pivot_table(index="genomic", columns="feature", values="effect", aggfunc="first")
    features = [c for c in truth.columns if c in wide.columns]
    genes = truth.index.intersection(wide.index, sort=False)
    if not features or len(genes) == 0:
        raise ValueError(
            f"the map has none of the phantom's features {list(truth.columns)} or of its genes"
        )
    effect = wide.loc[genes, features]
    t = truth.loc[genes, features].to_numpy()
    return {
        "auroc": auroc(effect, t),
        "average_precision": average_precision(effect, t),
        "sign_agreement": sign_agreement(effect, t),
        "mean_gene_auroc": float(np.nanmean(auroc_by_row(effect, t))) if per_gene else np.nan,
        "n_pairs": int(effect.size),
    }


def map_agreement(reference: pd.DataFrame, other: pd.DataFrame, alpha: float = 0.05) -> dict:
    """How well `other` (long table) agrees with the map `reference`: `rank_correlation` of
    their effects over the pairs both hold, and `sign_agreement`, the fraction of the pairs
    significant in `reference` (`p_adj < alpha`) whose effect in `other` has the same sign
    (NaN when none is significant); `n_significant` counts them."""
    a = reference.set_index(["genomic", "feature"])
    b = other.set_index(["genomic", "feature"])["effect"]
    sig = a.index[a["p_adj"].to_numpy(np.float64) < alpha] if "p_adj" in a else a.index[:0]
    sig = sig.intersection(b.index)
    ea, eb = a.loc[sig, "effect"].to_numpy(np.float64), b.loc[sig].to_numpy(np.float64)
    ok = np.isfinite(ea) & np.isfinite(eb)
    return {
        "rank_correlation": rank_correlation(reference, other),
        "sign_agreement": float((np.sign(ea[ok]) == np.sign(eb[ok])).mean())
        if ok.any()
        else float("nan"),
        "n_significant": int(ok.sum()),
    }
