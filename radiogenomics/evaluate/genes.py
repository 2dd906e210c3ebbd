"""Realism of synthetic expression, scored against held-out real patients (gGAN, Vinas et al. 2021).

The headline scores are the Pearson correlation of the real and synthetic gene-gene distance
matrices (1 - Pearson correlation between genes) and of their dendrograms' cophenetic distances.
A score means little alone: `evaluate_genes` reports it next to a ceiling, the same score of the
real training set against the held-out set, and as a ratio to that ceiling.

Array functions take `(samples, genes)` arrays; `evaluate_genes` and `kfold_scores` take AnnData.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.cluster.hierarchy import cophenet, linkage
from scipy.spatial.distance import squareform
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiogenomics import _keys as K

log = logging.getLogger(__name__)

CEILING = "real (ceiling)"
_MAX_LISTED = 10


# --------------------------------------------------------------------------------------------
# array-level scores


def _matrix(X, name: str) -> np.ndarray:
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a (samples, genes) array; got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} holds NaN or inf values; drop patients without expression first")
    return X


def _pair(real, synthetic, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    real, synthetic = _matrix(real, "real"), _matrix(synthetic, "synthetic")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"real and synthetic have different numbers of genes: {real.shape} vs {synthetic.shape}"
        )
    for name, X in (("real", real), ("synthetic", synthetic)):
        if X.shape[0] < min_samples:
            raise ValueError(f"{name} needs at least {min_samples} samples; got shape {X.shape}")
    return real, synthetic


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        log.warning("correlation of a constant vector is undefined; returning NaN")
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def gene_distance(X) -> np.ndarray:
    """`(G, G)` matrix of 1 - Pearson correlation between genes (columns of `X`).

    A constant gene has no correlation: its distance is 1 to every other gene and 0 to itself,
    so the matrix never holds NaN.
    """
    X = _matrix(X, "X")
    Xc = X - X.mean(axis=0)
    norm = np.sqrt((Xc**2).sum(axis=0))
    constant = norm <= 1e-12 * max(1.0, float(np.abs(X).max(initial=0.0)))
    Xc[:, constant] = 0.0
    norm[constant] = 1.0
    Xc /= norm
    corr = np.clip(Xc.T @ Xc, -1.0, 1.0)
    D = 1.0 - corr
    D = (D + D.T) / 2  # exact symmetry, so squareform and linkage see one distance per pair
    np.fill_diagonal(D, 0.0)
    return D


def _upper(D: np.ndarray) -> np.ndarray:
    return D[np.triu_indices_from(D, k=1)]


def distance_correlation(real, synthetic) -> float:
    """Pearson correlation of the upper triangles of the two gene-distance matrices."""
    real, synthetic = _pair(real, synthetic)
    return _pearson(_upper(gene_distance(real)), _upper(gene_distance(synthetic)))


def _cophenetic(X: np.ndarray, method: str) -> np.ndarray:
    # rounding can leave -1e-16 on the off-diagonal; linkage rejects negative distances
    condensed = np.clip(squareform(gene_distance(X), checks=False), 0.0, None)
    return cophenet(linkage(condensed, method=method))


def dendrogram_correlation(real, synthetic, method: str = "average") -> float:
    """Pearson correlation of the cophenetic distances of the two genes' dendrograms.

    The dendrograms are scipy `linkage(method)` trees over the gene-distance matrices.
    """
    real, synthetic = _pair(real, synthetic)
    if real.shape[1] < 3:
        raise ValueError(f"dendrogram correlation needs at least 3 genes; got shape {real.shape}")
    return _pearson(_cophenetic(real, method), _cophenetic(synthetic, method))


def std_ratio(reference, synthetic) -> float:
    """Median over genes of std(synthetic) / std(reference): the dispersion of a synthetic set
    relative to real patients (1 = as dispersed; a GAN whose samples shrink towards the mean
    scores below 1). Genes constant in `reference` are left out."""
    reference, synthetic = _pair(reference, synthetic)
    ref, syn = reference.std(axis=0), synthetic.std(axis=0)
    keep = ref > 1e-12 * max(1.0, float(np.abs(reference).max(initial=0.0)))
    if not keep.any():
        raise ValueError("every gene of the reference set is constant; no std ratio")
    return float(np.median(syn[keep] / ref[keep]))


def per_gene_distances(real, synthetic, genes=None) -> pd.DataFrame:
    """Per gene: two-sample KS statistic and p-value, and the 1D Wasserstein distance."""
    real, synthetic = _pair(real, synthetic, min_samples=1)
    genes = pd.Index(range(real.shape[1]) if genes is None else genes, name="gene")
    if len(genes) != real.shape[1]:
        raise ValueError(f"{len(genes)} gene names for arrays of shape {real.shape}")
    rows = []
    for g in range(real.shape[1]):
        ks = stats.ks_2samp(real[:, g], synthetic[:, g])
        w = stats.wasserstein_distance(real[:, g], synthetic[:, g])
        rows.append((float(ks.statistic), float(ks.pvalue), float(w)))
    return pd.DataFrame(rows, index=genes, columns=["ks", "ks_pval", "wasserstein"])


def _subsample(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if X.shape[0] <= n:
        return X
    return X[np.sort(rng.choice(X.shape[0], size=n, replace=False))]


def mmd(real, synthetic, bandwidth: float | None = None, max_samples: int = 2000, seed=0) -> float:
    """Unbiased squared maximum mean discrepancy with an RBF kernel.

    k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)); by default the bandwidth is the median
    pairwise distance of the pooled samples (median heuristic). Each set is subsampled
    (seeded) to `max_samples` rows, since the kernel matrix grows with the square of them.
    The unbiased estimate is ~0 for equal distributions and can be slightly negative.
    """
    real, synthetic = _pair(real, synthetic)
    rng = np.random.default_rng(seed)
    real, synthetic = _subsample(real, max_samples, rng), _subsample(synthetic, max_samples, rng)
    n, m = real.shape[0], synthetic.shape[0]
    Z = np.vstack([real, synthetic])
    sq = (Z**2).sum(axis=1)
    D2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0, None)
    if bandwidth is None:
        d = np.sqrt(_upper(D2))
        d = d[d > 0]
        bandwidth = float(np.median(d)) if d.size else 1.0
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive; got {bandwidth}")
    Kz = np.exp(-D2 / (2.0 * bandwidth**2))
    Kxx, Kyy, Kxy = Kz[:n, :n], Kz[n:, n:], Kz[:n, n:]
    # unbiased: the diagonals (k(x, x) = 1) are left out of the within-set means
    xx = (Kxx.sum() - np.trace(Kxx)) / (n * (n - 1))
    yy = (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * Kxy.mean())


def _classifier(kind: str, seed: int):
    if kind == "logistic":
        # L2 (the default penalty), multinomial for >2 classes. newton-cg: on nearly separable
        # expression data (genes > patients) lbfgs needs ~10x the time for the same solution
        model = LogisticRegression(C=1.0, solver="newton-cg", max_iter=5000)
        return make_pipeline(StandardScaler(), model)
    if kind == "forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    raise ValueError(f"classifier must be 'logistic' or 'forest'; got {kind!r}")


def detection_auc(real, synthetic, cv: int = 5, seed=0, classifier: str = "logistic") -> float:
    """Cross-validated ROC AUC of a classifier telling real from synthetic; 0.5 = indistinguishable.

    The larger set is subsampled (seeded) to the smaller's size so the classes are balanced.
    """
    real, synthetic = _pair(real, synthetic)
    model = _classifier(classifier, seed)
    rng = np.random.default_rng(seed)
    n = min(real.shape[0], synthetic.shape[0])
    real, synthetic = _subsample(real, n, rng), _subsample(synthetic, n, rng)
    if cv > n:
        log.info("detection_auc: %d samples per class, using %d folds instead of %d", n, n, cv)
        cv = n
    X = np.vstack([real, synthetic])
    y = np.r_[np.ones(n), np.zeros(n)]
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return float(cross_val_score(model, X, y, cv=folds, scoring="roc_auc").mean())


def _labels(y, name: str) -> np.ndarray:
    y = np.asarray(pd.Series(y).astype("string").to_numpy(dtype=object))
    missing = pd.isna(y)
    if missing.any():
        raise ValueError(f"{name} has {int(missing.sum())} missing label(s)")
    return y.astype(str)


def _check_seen(train: np.ndarray, other: np.ndarray, name: str) -> None:
    unseen = sorted(str(v) for v in set(other) - set(train))
    if unseen:
        raise ValueError(
            f"{name} has label(s) {unseen[:_MAX_LISTED]} unseen in the real training data "
            f"(training labels: {sorted(str(v) for v in set(train))[:_MAX_LISTED]})"
        )


def _fit_labels(X, y, name: str, seed: int):
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(
            f"{name} needs at least 2 classes to train a classifier; got {classes.tolist()}"
        )
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {X.shape[0]} samples but {y.shape[0]} labels")
    return _classifier("logistic", seed).fit(X, y)


class _RealClassifier:
    """A covariate classifier fitted once on real training data, scored on other sets.

    `evaluate_genes` scores many synthetic sets against the same real data; fitting the real
    model once instead of twice per set is most of its time on a thousand genes.
    """

    def __init__(self, real_train_X, real_train_y, real_test_X, real_test_y, seed=0):
        self.Xtr, self.Xte = _pair(real_train_X, real_test_X, min_samples=1)
        self.ytr = _labels(real_train_y, "real_train_y")
        self.yte = _labels(real_test_y, "real_test_y")
        _check_seen(self.ytr, self.yte, "real_test_y")
        self.seed = seed
        self.model = _fit_labels(self.Xtr, self.ytr, "real_train_y", seed)
        self.real = _test_scores(self.model, self.Xte, self.yte)

    def _synthetic(self, synth_X, synth_y) -> tuple[np.ndarray, np.ndarray]:
        _, Xs = _pair(self.Xtr, synth_X, min_samples=1)
        return Xs, _labels(synth_y, "synth_y")

    def fidelity(self, synth_X, synth_y) -> dict:
        Xs, ys = self._synthetic(synth_X, synth_y)
        _check_seen(self.ytr, ys, "synth_y")
        synth_acc = float(accuracy_score(ys, self.model.predict(Xs)))
        real_acc = self.real[0]
        return {
            "real_accuracy": real_acc,
            "synthetic_accuracy": synth_acc,
            "gap": synth_acc - real_acc,
        }

    def tstr(self, synth_X, synth_y) -> dict:
        Xs, ys = self._synthetic(synth_X, synth_y)
        ts_acc, ts_bal = _test_scores(_fit_labels(Xs, ys, "synth_y", self.seed), self.Xte, self.yte)
        return {
            "tstr_accuracy": ts_acc,
            "trtr_accuracy": self.real[0],
            "tstr_balanced_accuracy": ts_bal,
            "trtr_balanced_accuracy": self.real[1],
        }


def _test_scores(model, X, y) -> tuple[float, float]:
    pred = model.predict(X)
    with warnings.catch_warnings():
        # a model trained on synthetic labels may predict classes absent from this test set
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(accuracy_score(y, pred)), float(balanced_accuracy_score(y, pred))


def covariate_fidelity(
    real_train_X, real_train_y, real_test_X, real_test_y, synth_X, synth_y, seed=0
) -> dict:
    """Does synthetic expression carry the covariate it was conditioned on?

    A classifier trained on real training patients predicts the covariate of held-out real
    patients (`real_accuracy`) and of synthetic patients from their conditioned labels
    (`synthetic_accuracy`); `gap` = synthetic - real (about 0 when the covariate is as legible
    in synthetic as in real data).
    """
    real = _RealClassifier(real_train_X, real_train_y, real_test_X, real_test_y, seed)
    return real.fidelity(synth_X, synth_y)


def tstr(synth_X, synth_y, real_train_X, real_train_y, real_test_X, real_test_y, seed=0) -> dict:
    """Train on synthetic, test on real, against train on real, test on real (same test set).

    Returns accuracy and balanced accuracy of both on the held-out real patients.
    """
    real = _RealClassifier(real_train_X, real_train_y, real_test_X, real_test_y, seed)
    return real.tstr(synth_X, synth_y)


# --------------------------------------------------------------------------------------------
# AnnData-level evaluation

METRICS = (
    "distance_corr",
    "dendrogram_corr",
    "distance_ratio",
    "dendrogram_ratio",
    "std_ratio",
    "mean_ks",
    "mean_wasserstein",
    "mmd",
    "detection_auc",
)
COVARIATE_METRICS = (
    "covariate_real_accuracy",
    "covariate_synthetic_accuracy",
    "covariate_gap",
    "tstr_accuracy",
    "trtr_accuracy",
)


def _expression(adata: ad.AnnData, name: str, genes: pd.Index) -> tuple[np.ndarray, pd.DataFrame]:
    """Expression rows (in `genes`' order) and their obs; patients without expression dropped."""
    if not isinstance(adata, ad.AnnData):
        raise ValueError(f"set '{name}' must be an AnnData; got {type(adata).__name__}")
    var = pd.Index(adata.var_names)
    if not var.equals(genes):
        only_ref, only_here = genes.difference(var), var.difference(genes)
        if len(only_ref) or len(only_here) or var.has_duplicates:
            raise ValueError(
                f"set '{name}' has different genes from real_train: missing "
                f"{list(only_ref[:_MAX_LISTED])} ({len(only_ref)}), extra "
                f"{list(only_here[:_MAX_LISTED])} ({len(only_here)})"
            )
        adata = adata[:, genes]  # same genes in another order: align them
    X = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    X = X.astype(np.float64)
    keep = np.isfinite(X).any(axis=1)
    if K.HAS_EXPRESSION in adata.obs.columns:
        keep = adata.obs[K.HAS_EXPRESSION].to_numpy(bool)
    X, obs = X[keep], adata.obs.iloc[np.flatnonzero(keep)]
    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"set '{name}' has NaN/inf expression for patient(s) "
            f"{list(obs.index[np.unique(rows)][:_MAX_LISTED])} in gene(s) "
            f"{list(genes[np.unique(cols)][:_MAX_LISTED])}"
        )
    if X.shape[0] < 2:
        raise ValueError(f"set '{name}' has {X.shape[0]} patient(s) with expression; need >= 2")
    return X, obs


def _covariate(obs: pd.DataFrame, key: str, name: str) -> np.ndarray:
    if key not in obs.columns:
        raise ValueError(f"covariate '{key}' is not an obs column of set '{name}'")
    col = obs[key]
    if pd.api.types.is_float_dtype(col):
        raise ValueError(f"covariate '{key}' of set '{name}' is numeric; pass a categorical key")
    return col.astype("string").to_numpy(dtype=object)


def _labelled(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~pd.isna(y)
    return X[keep], y[keep].astype(str)


def _score(
    Z: np.ndarray, y, Zte: np.ndarray, Ztr: np.ndarray, real: _RealClassifier | None, seed: int
) -> dict:
    """One row of `evaluate_genes`: set `Z` (labels `y`) against the held-out real `Zte`; its
    dispersion against the real training patients `Ztr`.

    `real` scores the covariate (a classifier fitted on real training data), or is None.
    """
    per_gene = per_gene_distances(Zte, Z)
    row = {
        "distance_corr": distance_correlation(Zte, Z),
        "dendrogram_corr": dendrogram_correlation(Zte, Z),
        "std_ratio": std_ratio(Ztr, Z),
        "mean_ks": float(per_gene["ks"].mean()),
        "mean_wasserstein": float(per_gene["wasserstein"].mean()),
        "mmd": mmd(Zte, Z, seed=seed),
        "detection_auc": detection_auc(Zte, Z, seed=seed),
    }
    if real is not None:
        Zs, y_s = _labelled(Z, y)
        # for the ceiling, synthetic = real_train, so tstr is trtr by construction
        fid, ts = real.fidelity(Zs, y_s), real.tstr(Zs, y_s)
        row.update(
            covariate_real_accuracy=fid["real_accuracy"],
            covariate_synthetic_accuracy=fid["synthetic_accuracy"],
            covariate_gap=fid["gap"],
            tstr_accuracy=ts["tstr_accuracy"],
            trtr_accuracy=ts["trtr_accuracy"],
        )
    return row


def evaluate_genes(
    real_train: ad.AnnData,
    real_test: ad.AnnData,
    synthetic: Mapping[str, ad.AnnData] | ad.AnnData,
    *,
    covariate: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Score each synthetic set against held-out real patients, next to the real ceiling.

    One row per synthetic set (a single AnnData is named "synthetic") plus the row
    "real (ceiling)", which scores `real_train` as if it were synthetic. Every set is z-scored
    with `real_train`'s per-gene mean and std, so KS, Wasserstein and MMD weigh genes alike.
    Columns: `METRICS`, and `COVARIATE_METRICS` when `covariate` (a categorical obs key) is given.
    `std_ratio` is the median per-gene std ratio against `real_train` (1 for the ceiling row).
    For the ceiling row the covariate accuracy on "synthetic" is the training accuracy and
    tstr equals trtr.
    """
    if isinstance(synthetic, ad.AnnData):
        synthetic = {"synthetic": synthetic}
    if CEILING in synthetic:
        raise ValueError(f"'{CEILING}' is reserved for the ceiling row; rename that set")
    genes = pd.Index(real_train.var_names)
    if genes.has_duplicates:
        raise ValueError(f"duplicate gene names in real_train: {list(genes[genes.duplicated()])}")
    Xtr, obs_tr = _expression(real_train, "real_train", genes)
    Xte, obs_te = _expression(real_test, "real_test", genes)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std[std == 0] = 1.0
    sets = {CEILING: (Xtr, obs_tr)}
    sets.update({name: _expression(a, name, genes) for name, a in synthetic.items()})
    sets = {name: ((X - mean) / std, obs) for name, (X, obs) in sets.items()}
    Zte = (Xte - mean) / std

    labels, real = {}, None
    if covariate is not None:
        # patients without a label still count for realism, not for the covariate scores
        labels = {name: _covariate(obs, covariate, name) for name, (_, obs) in sets.items()}
        y_te = _covariate(obs_te, covariate, "real_test")
        Ztr, y_tr = _labelled(sets[CEILING][0], labels[CEILING])
        Zte_y, y_te = _labelled(Zte, y_te)
        real = _RealClassifier(Ztr, y_tr, Zte_y, y_te, seed)

    rows = {}
    for name, (Z, _) in sets.items():
        log.info("evaluate_genes: scoring '%s' (%d patients)", name, Z.shape[0])
        try:
            rows[name] = _score(Z, labels.get(name), Zte, sets[CEILING][0], real, seed)
        except ValueError as err:  # say which set, the array functions cannot
            raise ValueError(f"set '{name}': {err}") from err
    df = pd.DataFrame.from_dict(rows, orient="index")
    for col in ("distance_corr", "dendrogram_corr"):
        if not df.loc[CEILING, col] > 0.05:
            log.warning(
                "the real ceiling %s is %.3f: the held-out set is too small or its genes too "
                "weakly correlated for ratios to mean much",
                col,
                df.loc[CEILING, col],
            )
    df["distance_ratio"] = df["distance_corr"] / df.loc[CEILING, "distance_corr"]
    df["dendrogram_ratio"] = df["dendrogram_corr"] / df.loc[CEILING, "dendrogram_corr"]
    df.index.name = "set"
    return df[list(METRICS) + (list(COVARIATE_METRICS) if covariate is not None else [])]


# How a set beats another on each score: "higher" or "lower" values, or a number the better
# set is nearer to (the std ratio on a log scale, so 0.5 and 2 are as far from 1).
BETTER = {
    "distance_ratio": "higher",
    "dendrogram_ratio": "higher",
    "std_ratio": 1.0,
    "detection_auc": 0.5,
    "mmd": "lower",
    "mean_ks": "lower",
    "mean_wasserstein": "lower",
    "covariate_gap": 0.0,
    "tstr_accuracy": "higher",
}


def _badness(score: str, value: float) -> float:
    """How far `value` is from good on `score` (lower is better), per `BETTER`."""
    rule = BETTER[score]
    if rule == "higher":
        return -value
    if rule == "lower":
        return value
    if score == "std_ratio":
        return abs(float(np.log(max(value, 1e-12))))
    return abs(value - rule)


def versus_baseline(table: pd.DataFrame, name: str, baseline: str) -> pd.DataFrame:
    """Whether set `name` beats set `baseline` (rows of an `evaluate_genes` table, or of the
    mean over folds) on each score of `BETTER` the table has.

    Returns one row per score: both values, `beats` (strictly better, as `BETTER` says) and
    `better when`. A NaN score never beats.
    """
    for row in (name, baseline):
        if row not in table.index:
            raise ValueError(f"no set '{row}' in the table; sets: {list(table.index)}")
    rows = {}
    for score, rule in BETTER.items():
        if score not in table.columns:
            continue
        ours, theirs = float(table.loc[name, score]), float(table.loc[baseline, score])
        beats = bool(np.isfinite(ours) and np.isfinite(theirs)) and _badness(
            score, ours
        ) < _badness(score, theirs)
        when = rule if isinstance(rule, str) else f"nearer {rule:g}"
        rows[score] = {name: ours, baseline: theirs, "beats": beats, "better when": when}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "score"
    return out


def kfold_scores(
    adata: ad.AnnData,
    fit_sample: Callable[[ad.AnnData], Mapping[str, ad.AnnData]],
    k: int = 5,
    seed: int = 0,
    covariate: str | None = None,
    stratify: str | None = None,
) -> pd.DataFrame:
    """Patient-level k-fold evaluation: `fit_sample(train)` returns synthetic sets per fold.

    Only patients with expression are split (shuffled, seeded; stratified on the `stratify`
    obs key if given). Each fold's sets are scored by `evaluate_genes(train, test, sets)`.
    Returns every fold's rows (indexed by set) with a `fold` column; `summarise` averages them.
    """
    if K.HAS_EXPRESSION in adata.obs.columns:
        rows = np.flatnonzero(adata.obs[K.HAS_EXPRESSION].to_numpy(bool))
    else:
        rows = np.arange(adata.n_obs)
    if not 2 <= k <= rows.size:
        raise ValueError(
            f"k must be between 2 and the {rows.size} patients with expression; got {k}"
        )
    if stratify is not None:
        if stratify not in adata.obs.columns:
            raise ValueError(f"stratify key '{stratify}' is not an obs column")
        strata = adata.obs[stratify].iloc[rows].astype("string").fillna("<NA>").to_numpy()
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, strata)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(rows)
    frames = []
    for fold, (tr, te) in enumerate(splits):
        train, test = adata[rows[tr]].copy(), adata[rows[te]].copy()
        log.info("kfold_scores: fold %d/%d (%d train, %d test)", fold + 1, k, len(tr), len(te))
        sets = fit_sample(train)
        if not isinstance(sets, (Mapping, ad.AnnData)):
            raise ValueError(
                f"fit_sample must return a dict of name -> AnnData; got {type(sets).__name__}"
            )
        df = evaluate_genes(train, test, sets, covariate=covariate, seed=seed)
        frames.append(df.assign(fold=fold))
    return pd.concat(frames)


def summarise(df: pd.DataFrame, as_text: bool = False) -> pd.DataFrame:
    """Mean and std over folds per set and metric (columns `(metric, "mean"|"std")`).

    With `as_text`, one "mean ± std" string per metric instead, for a report table.
    """
    metrics = [c for c in df.columns if c != "fold"]
    grouped = df[metrics].groupby(level=0, sort=False)
    mean, std = grouped.mean(), grouped.std(ddof=1)
    if as_text:
        return pd.DataFrame(
            {
                m: [f"{a:.3g} ± {b:.2g}" for a, b in zip(mean[m], std[m], strict=True)]
                for m in metrics
            },
            index=mean.index,
        )
    out = pd.concat({"mean": mean, "std": std}, axis=1).swaplevel(axis=1)
    return out[[(m, s) for m in metrics for s in ("mean", "std")]]
