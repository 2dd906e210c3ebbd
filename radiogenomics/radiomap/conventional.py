"""The conventional radiogenomic map (docs/design.md, section 5): genomic variables against image features.

The three-step pipeline of the radiogenomics literature:

1. genomic variables: genes, or metagenes (`metagenes`: hierarchical clustering of the genes or
   NMF), plus categorical `obs` columns such as subtypes or clusters;
2. image features of each lesion (`radiogenomics.radiomap.features.image_feature_table`);
3. one association test per (genomic variable, feature) pair: Spearman for continuous pairs
   (`spearman_table`), Kruskal-Wallis for categorical variables (`kruskal_table`) or Fisher's
   exact test of each category against the rest on the feature split at its median
   (`fisher_table`), with p values adjusted over the whole table (`adjust`,
   Benjamini-Hochberg by default).

The result is a long table, one row per pair, columns `COLUMNS`: `effect` is Spearman's rho,
Kruskal-Wallis' epsilon-squared or Fisher's log odds ratio, `method` says which, `n` how many
patients the test used.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform

from radiogenomics import _keys as K

log = logging.getLogger(__name__)

COLUMNS = ("genomic", "feature", "effect", "p", "p_adj", "method", "n")
MAX_METAGENES = 20
FDR = ("benjamini-hochberg", "benjamini-yekutieli", "none")
CATEGORICAL_TESTS = ("kruskal", "fisher")


# --------------------------------------------------------------------------------------------
# association tests


def _rank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, axis=0)


def spearman_table(genomic: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho and its two-sided p value (the t approximation with n - 2 degrees of
    freedom, as `scipy.stats.spearmanr`) for every (column of `genomic`, column of `features`),
    over the patients both index and where the feature is finite; vectorised over `genomic`
    (and over the features without NaN, which share their patients).
    A constant variable gives NaN. Returns a long table (columns `COLUMNS`, `p_adj` NaN)."""
    common = genomic.index.intersection(features.index, sort=False)
    G, F = genomic.loc[common].to_numpy(np.float64), features.loc[common]
    if not np.isfinite(G).all():
        raise ValueError("genomic variables hold NaN/inf for patients with an image")
    Fv = F.to_numpy(np.float64)
    n_feat, n_var = Fv.shape[1], G.shape[1]
    rho, ns = np.full((n_feat, n_var), np.nan), np.zeros(n_feat, int)

    def centred_rank(x):
        r = _rank(x)
        return r - r.mean(axis=0)

    # features without NaN share the patients: one rank and one matrix product for them all
    complete = np.isfinite(Fv).all(axis=0)
    if complete.any():
        rg, rf = centred_rank(G), centred_rank(Fv[:, complete])
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[complete] = (rf.T @ rg) / np.sqrt(
                np.outer((rf**2).sum(axis=0), (rg**2).sum(axis=0))
            )
        ns[complete] = len(G)
    for j in np.flatnonzero(~complete):
        ok = np.isfinite(Fv[:, j])
        rg, rf = centred_rank(G[ok]), centred_rank(Fv[ok, j])
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[j] = (rg * rf[:, None]).sum(axis=0) / np.sqrt((rg**2).sum(axis=0) * (rf**2).sum())
        ns[j] = int(ok.sum())
    rho = np.clip(rho, -1.0, 1.0)
    dof = (ns - 2)[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
        p = np.where((dof > 0) & np.isfinite(rho), 2 * stats.t.sf(np.abs(t), dof.clip(1)), np.nan)
    if n_feat == 0:
        return _empty()
    return pd.DataFrame(
        {
            "genomic": np.tile([str(g) for g in genomic.columns], n_feat),
            "feature": np.repeat(np.asarray(F.columns, dtype=object), n_var),
            "effect": rho.ravel(),
            "p": p.ravel(),
            "p_adj": np.nan,
            "method": "spearman",
            "n": np.repeat(ns, n_var),
        }
    )


def kruskal_table(categories: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Kruskal-Wallis H test of each feature across the groups of each categorical column, with
    epsilon-squared = H / (n - 1) (Tomczak & Tomczak 2014: 0 = no difference, 1 = the groups
    separate completely) as the effect. Patients missing either value are left out; a column
    with fewer than two non-empty groups, or a constant feature, gives NaN."""
    common = categories.index.intersection(features.index, sort=False)
    rows = []
    for col in categories.columns:
        groups = categories.loc[common, col]
        for name in features.columns:
            f = features.loc[common, name]
            ok = groups.notna().to_numpy() & np.isfinite(f.to_numpy(np.float64))
            g, v = groups[ok].astype(str).to_numpy(), f[ok].to_numpy(np.float64)
            samples = [v[g == level] for level in np.unique(g)]
            n = int(ok.sum())
            effect = p = np.nan
            if len(samples) >= 2 and np.ptp(v) > 0:
                h, p = stats.kruskal(*samples)
                effect = h / (n - 1)
            rows.append((col, name, float(effect), float(p), np.nan, "kruskal", n))
    return pd.DataFrame(rows, columns=list(COLUMNS)) if rows else _empty()


def fisher_table(categories: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Fisher's exact test (two-sided, `scipy.stats.fisher_exact`) of each level of each
    categorical column against the other levels, on each feature binarised at its median
    (high: above the median of the patients in the test; a tie at the median counts as low).
    One row per (level, feature), genomic named 'column=level'. The 2x2 table is
    [[level & high, level & low], [rest & high, rest & low]]; the effect is the log odds ratio,
    with 0.5 added to every cell when a cell is 0 (Haldane-Anscombe), so it stays finite (> 0:
    the level has more high values than the rest). Patients missing either value are left out;
    a column with fewer than two levels, a feature with no patient above its median, or a level
    without a patient in the test gives NaN."""
    common = categories.index.intersection(features.index, sort=False)
    rows = []
    for col in categories.columns:
        groups = categories.loc[common, col]
        levels = sorted(groups.dropna().astype(str).unique())
        for name in features.columns:
            f = features.loc[common, name].to_numpy(np.float64)
            ok = groups.notna().to_numpy() & np.isfinite(f)
            g, v = groups[ok].astype(str).to_numpy(), f[ok]
            n = int(ok.sum())
            high = v > np.median(v) if n else np.zeros(0, bool)
            testable = len(np.unique(g)) >= 2 and high.any()
            for level in levels:
                effect = p = np.nan
                inside = g == level
                if testable and inside.any():
                    table = np.array(
                        [
                            [(inside & high).sum(), (inside & ~high).sum()],
                            [(~inside & high).sum(), (~inside & ~high).sum()],
                        ]
                    )
                    p = stats.fisher_exact(table).pvalue
                    cells = table + 0.5 if (table == 0).any() else table.astype(np.float64)
                    effect = np.log(cells[0, 0] * cells[1, 1] / (cells[0, 1] * cells[1, 0]))
                rows.append((f"{col}={level}", name, float(effect), float(p), np.nan, "fisher", n))
    return pd.DataFrame(rows, columns=list(COLUMNS)) if rows else _empty()


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in COLUMNS})


def adjust(p, method: str = "benjamini-hochberg") -> np.ndarray:
    """Adjusted p values (`scipy.stats.false_discovery_control`: 'benjamini-hochberg' or
    'benjamini-yekutieli'; 'none' returns them as they are); NaN stays NaN and does not count
    among the tests."""
    if method not in FDR:
        raise ValueError(f"fdr must be one of {FDR}; got {method!r}")
    p = np.asarray(p, np.float64)
    out = p.copy()
    ok = np.isfinite(p)
    if method != "none" and ok.any():
        out[ok] = stats.false_discovery_control(
            p[ok], method="bh" if "hochberg" in method else "by"
        )
    return out


# --------------------------------------------------------------------------------------------
# metagenes


def _standardise(X: np.ndarray) -> np.ndarray:
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def choose_n_clusters(Z: np.ndarray, D: np.ndarray, k_max: int) -> int:
    """The number of clusters with the largest mean silhouette (distances `D`), over
    k = 2..k_max cuts of the dendrogram `Z`; ties go to the smaller k."""
    from sklearn.metrics import silhouette_score

    best, best_k = -np.inf, 2
    for k in range(2, max(k_max, 2) + 1):
        labels = fcluster(Z, k, criterion="maxclust")
        if not 2 <= len(np.unique(labels)) < len(labels):
            continue
        s = silhouette_score(D, labels, metric="precomputed")
        if s > best + 1e-12:
            best, best_k = s, k
    return best_k


def metagenes(
    expression: pd.DataFrame, *, method: str = "hierarchical", n_metagenes: int | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """Metagene scores (patients x metagenes 'MG1'...) and each gene's metagene.

    hierarchical: genes clustered with correlation distance (1 - Pearson r over patients) and
    average linkage; the number of clusters `n_metagenes`, or by default the one with the largest
    mean silhouette over k = 2..min(20, n_genes // 2) (`choose_n_clusters`); a metagene's score is
    the mean of its genes standardised over patients (z-scores).
    nmf: `sklearn.decomposition.NMF` (init 'nndsvda', seed 0) on the expression shifted per gene
    to a minimum of 0; `n_metagenes` components (default: the hierarchical rule's number); the
    scores are the patients' weights, a gene belongs to the component that loads it most
    (loading times the component's mean weight).
    Constant genes belong to no metagene (membership '').
    """
    if method not in ("hierarchical", "nmf"):
        raise ValueError(f"method must be 'hierarchical' or 'nmf'; got {method!r}")
    X = expression.to_numpy(np.float64)
    if not np.isfinite(X).all():
        raise ValueError("expression holds NaN/inf for patients with expression")
    varying = X.std(axis=0) > 0
    if varying.sum() < 4:
        raise ValueError(f"metagenes need at least 4 varying genes; got {int(varying.sum())}")
    Xs = _standardise(X[:, varying])
    D = np.clip(squareform(pdist(Xs.T, metric="correlation"), checks=False), 0, None)
    Z = linkage(squareform(D, checks=False), method="average")
    k = n_metagenes or choose_n_clusters(Z, D, min(MAX_METAGENES, int(varying.sum()) // 2))
    if method == "hierarchical":
        labels = fcluster(Z, k, criterion="maxclust")
        k = int(labels.max())
        scores = np.stack([Xs[:, labels == c].mean(axis=1) for c in range(1, k + 1)], axis=1)
    else:
        from sklearn.decomposition import NMF

        nonneg = X[:, varying] - X[:, varying].min(axis=0)
        nmf = NMF(n_components=k, init="nndsvda", random_state=0, max_iter=2000)
        scores = nmf.fit_transform(nonneg)
        labels = np.argmax(nmf.components_ * scores.mean(axis=0)[:, None], axis=0) + 1
    names = [f"MG{c}" for c in range(1, k + 1)]
    membership = np.full(X.shape[1], "", dtype=object)
    membership[varying] = [names[c - 1] for c in labels]
    log.info("%d metagenes (%s) from %d genes", k, method, int(varying.sum()))
    return (
        pd.DataFrame(scores, index=expression.index, columns=names),
        pd.Series(membership, index=expression.columns, name=K.METAGENE),
    )


# --------------------------------------------------------------------------------------------
# the map


def paired_mask(adata) -> np.ndarray:
    """Whether each patient has expression, an image and a mask."""
    obs = adata.obs
    flags = [K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK]
    return np.all(
        [obs[f].to_numpy(bool) if f in obs else np.zeros(len(obs), bool) for f in flags], 0
    )


def conventional_map(
    adata,
    features: pd.DataFrame | None = None,
    *,
    genomic: str = "metagenes",
    subtypes=None,
    n_metagenes: int | None = None,
    method: str = "hierarchical",
    fdr: str = "benjamini-hochberg",
    categorical_test: str = "kruskal",
    data_cfg=None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The conventional map of a cohort: the long table (columns `COLUMNS`) and, for
    `genomic='metagenes'`, each gene's metagene (else None). `radiogenomics.tl.conventional_map`
    writes both into the AnnData.

    `features`: image features, patients (obs names) x features; default
    `image_feature_table(adata, data_cfg)`. Genes or metagenes are tested on the patients with
    expression, an image and a mask; the categorical `obs` columns in `subtypes` on every patient
    with an image, a mask and a value, by `categorical_test`: 'kruskal' (one row per column,
    `kruskal_table`) or 'fisher' (one row per level, `fisher_table`). Metagenes are built from
    every patient with expression. P values are adjusted over the whole table (`fdr`, see
    `adjust`).
    """
    from radiogenomics.radiomap.features import image_feature_table

    if genomic not in ("genes", "metagenes"):
        raise ValueError(f"genomic must be 'genes' or 'metagenes'; got {genomic!r}")
    if categorical_test not in CATEGORICAL_TESTS:
        raise ValueError(
            f"categorical_test must be one of {CATEGORICAL_TESTS}; got {categorical_test!r}"
        )
    subtypes = [subtypes] if isinstance(subtypes, str) else list(subtypes or [])
    missing = [c for c in subtypes if c not in adata.obs.columns]
    if missing:
        raise ValueError(f"subtypes {missing} are not obs columns; there are {list(adata.obs)}")
    for col in subtypes:  # each value is a group: a numeric column would make a group per value
        values = adata.obs[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            raise ValueError(
                f"subtypes column '{col}' is numeric ({values.nunique()} distinct values): the "
                "categorical tests make each value its own group; pass a categorical column, "
                "or bin this one into categories first (e.g. pandas.cut)"
            )
    if features is None:
        features = image_feature_table(adata, data_cfg, progress=progress)
    unknown = features.index.difference(adata.obs_names)
    if len(unknown):
        raise ValueError(f"features name patients not in the cohort: {list(unknown[:5])}")
    features = features.loc[:, features.notna().any(axis=0)]

    expressed = adata.obs[K.HAS_EXPRESSION].to_numpy(bool)
    expression = pd.DataFrame(
        np.asarray(adata[expressed].X, np.float64),
        index=adata.obs_names[expressed],
        columns=adata.var_names,
    )
    membership = None
    if genomic == "metagenes":
        values, membership = metagenes(expression, method=method, n_metagenes=n_metagenes)
    else:
        values = expression
    paired = adata.obs_names[paired_mask(adata)]
    values = values.loc[values.index.intersection(paired, sort=False)]
    parts = []
    if len(values.index.intersection(features.index)) >= 3:
        parts.append(spearman_table(values, features))
    else:
        log.warning("fewer than 3 patients with expression, image and mask: no gene tests")
    if subtypes:
        imaged = adata.obs_names[
            adata.obs[K.HAS_IMAGE].to_numpy(bool) & adata.obs[K.HAS_MASK].to_numpy(bool)
        ]
        test = kruskal_table if categorical_test == "kruskal" else fisher_table
        parts.append(test(adata.obs.loc[imaged, subtypes], features))
    if not parts:
        raise ValueError("nothing to test: no patient with expression, image and mask, no subtypes")
    table = pd.concat(parts, ignore_index=True)
    table["p_adj"] = adjust(table["p"].to_numpy(), fdr)
    table["n"] = table["n"].astype(int)
    return table[list(COLUMNS)], membership


def map_to_uns(table: pd.DataFrame) -> dict:
    """The long table as an h5ad-writable dict of arrays (one per column)."""
    return {
        c: table[c].to_numpy(str if c in ("genomic", "feature", "method") else float)
        if c != "n"
        else table[c].to_numpy(np.int64)
        for c in COLUMNS
    }


def map_from_uns(stored: dict) -> pd.DataFrame:
    """The long table back from `uns[key]` (see `map_to_uns`)."""
    return pd.DataFrame({c: np.asarray(stored[c]) for c in COLUMNS})


def effect_matrix(table: pd.DataFrame, value: str = "effect") -> pd.DataFrame:
    """genomic variables x features of one column of the long table, in first-seen order."""
    wide = table.pivot(index="genomic", columns="feature", values=value)
    return wide.loc[pd.unique(table["genomic"]), pd.unique(table["feature"])]
