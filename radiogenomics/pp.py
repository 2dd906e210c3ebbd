"""Preprocessing: gene standardisation and gene selection (DESIGN section 1).

Functions take a cohort AnnData (scanpy style). Statistics use only the patients with expression
(`obs["has_expression"]`, all rows when the column is missing); other rows are NaN by contract.

- `GeneScaler` / `standardize`: optional log1p then per-gene standardisation, exactly invertible,
  stored in `uns["rg"]["gene_stats"]`; the cohort's `X` stays on the user's scale.
- `rank_genes` (+ `pl.volcano`): differential expression, rank-sum or paired signed-rank.
- `read_gmt` / `pathway_genes`: disease pathway gene sets such as KEGG glioma hsa05214.
- `select_genes` / `highly_variable`: subset a cohort to the chosen genes.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats

from radiogenomics import _keys as K

log = logging.getLogger(__name__)

DE_KEY, PATHWAYS_KEY = K.DE, K.PATHWAYS
_EPS = 1e-9  # keeps log2 ratios of linear means finite for all-zero genes
_MAX_LISTED = 10


def _listed(items: Sequence, n: int = _MAX_LISTED) -> str:
    items = [str(i) for i in items]
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _expression_rows(adata: ad.AnnData) -> np.ndarray:
    """Boolean mask of the patients whose expression counts."""
    if K.HAS_EXPRESSION in adata.obs.columns:
        return adata.obs[K.HAS_EXPRESSION].to_numpy(bool)
    return np.ones(adata.n_obs, bool)


def _dense(adata: ad.AnnData) -> np.ndarray:
    return np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)


def _rg(adata: ad.AnnData) -> dict:
    return adata.uns.setdefault(K.UNS, {})


# --- standardisation ---------------------------------------------------------------------------


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


def standardize(adata: ad.AnnData, log1p: bool = False) -> GeneScaler:
    """Fit a `GeneScaler` on the expression rows and store it in `uns["rg"]["gene_stats"]`.

    `X` is not changed: the models transform internally and write samples back on the user's
    scale, so a cohort and its synthetic copy stay comparable.
    """
    rows = _expression_rows(adata)
    scaler = GeneScaler(log1p=log1p).fit(_dense(adata)[rows], genes=adata.var_names)
    _rg(adata)[K.GENE_STATS] = scaler.to_dict()
    log.info("gene statistics of %d genes over %d patients", adata.n_vars, int(rows.sum()))
    return scaler


def log1p(adata: ad.AnnData) -> ad.AnnData:
    """Natural `log1p` of `X` in place, recorded in `uns["rg"]["provenance"]["log1p"]`."""
    prov = _rg(adata).setdefault(K.PROVENANCE, {})
    if str(prov.get("log1p", "")).lower() == "true":
        raise ValueError("X is already log1p-transformed (uns['rg']['provenance']['log1p'])")
    X = _dense(adata).astype(np.float32)
    rows = _expression_rows(adata)
    neg = np.argwhere((X < 0) & rows[:, None])
    if neg.size:
        r, g = neg[0]
        raise ValueError(
            f"log1p needs non-negative expression; gene '{adata.var_names[g]}' of patient "
            f"'{adata.obs_names[r]}' is {X[r, g]:g} ({len(neg)} negative value(s))"
        )
    adata.X = np.log1p(X)
    prov["log1p"] = "true"
    return adata


# --- differential expression -------------------------------------------------------------------


def _groups(adata, groupby: str, group: str, reference: str) -> tuple[np.ndarray, np.ndarray]:
    if groupby not in adata.obs.columns:
        raise ValueError(f"groupby column '{groupby}' not in obs; columns: {list(adata.obs)}")
    col = adata.obs[groupby]
    labels = col.astype("string").fillna("<NA>").to_numpy(str)
    values = (
        [str(c) for c in col.cat.categories]
        if isinstance(col.dtype, pd.CategoricalDtype)
        else sorted(set(col.dropna().astype(str)))
    )
    for what, value in (("group", group), ("reference", reference)):
        if (what == "group" or value != "rest") and str(value) not in values:
            raise ValueError(f"{what} '{value}' not in obs['{groupby}']; available: {values}")
    if str(group) == str(reference):
        raise ValueError(f"group and reference are both '{group}'")
    in_g = labels == str(group)
    rest = (labels != str(group)) & col.notna().to_numpy()
    return in_g, rest if reference == "rest" else labels == str(reference)


def _pairs(adata, pair_by: str, in_g: np.ndarray, in_r: np.ndarray):
    """Row indices (group, reference) of matched samples, one pair per `pair_by` id."""
    if pair_by not in adata.obs.columns:
        raise ValueError(f"pair_by column '{pair_by}' not in obs; columns: {list(adata.obs)}")
    ids = adata.obs[pair_by].astype("string")
    known = ids.notna().to_numpy()  # a sample without an id has no partner
    ids = ids.fillna("").to_numpy(object)
    sides = {}
    for side, mask in (("group", in_g), ("reference", in_r)):
        idx = pd.Series(np.flatnonzero(mask & known), index=ids[mask & known])
        dup = idx.index[idx.index.duplicated()].unique().tolist()
        if dup:
            raise ValueError(f"pair_by '{pair_by}': several {side} samples for id(s) {dup[:10]}")
        sides[side] = idx
    common = sides["group"].index.intersection(sides["reference"].index)
    paired = np.concatenate([s[common].to_numpy() for s in sides.values()])
    unpaired = adata.obs_names[(in_g | in_r) & ~np.isin(np.arange(adata.n_obs), paired)].tolist()
    if unpaired:
        n = len(unpaired)
        log.warning(
            f"pair_by '{pair_by}': dropped {n} sample(s) without a partner: {_listed(unpaired, 50)}"
        )
    if len(common) < 2:
        raise ValueError(
            f"pair_by '{pair_by}': {len(common)} complete pair(s); a paired test needs >= 2 "
            "ids with one sample in the group and one in the reference"
        )
    return sides["group"][common].to_numpy(), sides["reference"][common].to_numpy()


def rank_genes(
    adata: ad.AnnData,
    groupby: str,
    group: str,
    reference: str = "rest",
    *,
    pair_by: str | None = None,
    correction: Literal["benjamini-hochberg", "bonferroni"] = "benjamini-hochberg",
    alpha: float = 0.05,
    min_log2fc: float = 1.0,
    log_base: float | None = None,
    key: str = DE_KEY,
) -> pd.DataFrame:
    """Differential expression of `group` against `reference` (another value or "rest").

    Unpaired: two-sided Mann-Whitney rank-sum per gene. Paired (`pair_by` names the obs column
    with the id shared by a patient's two samples): Wilcoxon signed-rank on within-pair
    differences of `X` as given; samples without a partner are dropped with a warning.
    P-values are corrected over genes (Benjamini-Hochberg or Bonferroni). The log2 fold change
    is `log2((mean_g + eps) / (mean_r + eps))` for linear data (`log_base=None`), or
    `(mean_g - mean_r) * log2(log_base)` for log-scale data; paired, the means run over the
    matched samples, so their difference is the mean within-pair difference. A gene is selected
    when `padj < alpha` and `|log2fc| >= min_log2fc`.

    Writes var columns `{key}_log2fc`, `{key}_pval`, `{key}_padj`, `{key}_selected` and the
    parameters to `uns["rg"][key]`; returns a table indexed by gene, sorted by padj.
    """
    if correction not in ("benjamini-hochberg", "bonferroni"):
        raise ValueError(
            f"correction must be 'benjamini-hochberg' or 'bonferroni'; got '{correction}'"
        )
    if log_base is not None and (log_base <= 0 or log_base == 1):
        raise ValueError(f"log_base must be > 0 and != 1 (None: linear data); got {log_base}")
    in_g, in_r = _groups(adata, groupby, group, reference)
    rows = _expression_rows(adata)
    in_g, in_r = in_g & rows, in_r & rows
    for what, name, mask in (("group", group, in_g), ("reference", reference, in_r)):
        if mask.sum() < 2:
            raise ValueError(
                f"{what} '{name}' of obs['{groupby}'] has {int(mask.sum())} sample(s) with expression; "
                "need >= 2"
            )
    X = _dense(adata).astype(np.float64)
    if pair_by is not None:
        ig, ir = _pairs(adata, pair_by, in_g, in_r)
    else:
        ig, ir = np.flatnonzero(in_g), np.flatnonzero(in_r)
    used = np.concatenate([ig, ir])
    bad = used[np.isnan(X[used]).any(axis=1)]
    if bad.size:
        raise ValueError(
            f"NaN expression for patient(s) {_listed(adata.obs_names[bad])} in the compared "
            f"groups; set obs['{K.HAS_EXPRESSION}'] False for them or fill the values"
        )
    xg, xr = X[ig], X[ir]
    if log_base is None:
        if (xg < 0).any() or (xr < 0).any():
            gene = adata.var_names[np.flatnonzero(((xg < 0).any(0)) | ((xr < 0).any(0)))[0]]
            raise ValueError(
                f"negative expression (e.g. gene '{gene}') cannot be linear-scale data; pass "
                "log_base (e.g. 2, 10 or np.e) if X is log-transformed"
            )
        log2fc = np.log2((xg.mean(0) + _EPS) / (xr.mean(0) + _EPS))
    else:
        log2fc = (xg.mean(0) - xr.mean(0)) * np.log2(log_base)

    if pair_by is not None:
        test = "wilcoxon signed-rank"
        with np.errstate(invalid="ignore", divide="ignore"):
            pval = stats.wilcoxon(xg - xr, axis=0).pvalue
    else:
        test = "mann-whitney rank-sum"
        pval = stats.mannwhitneyu(xg, xr, axis=0, alternative="two-sided").pvalue
    # constant genes (all ties, or all-zero differences) have no evidence: p = 1
    pval = np.where(np.isnan(pval), 1.0, pval)
    if correction == "bonferroni":
        padj = np.minimum(pval * pval.size, 1.0)
    else:
        padj = stats.false_discovery_control(pval, method="bh")
    selected = (padj < alpha) & (np.abs(log2fc) >= min_log2fc)

    result = pd.DataFrame(
        {"log2fc": log2fc, "pval": pval, "padj": padj, "selected": selected},
        index=pd.Index(adata.var_names, name="gene"),
    )
    for col in result.columns:
        adata.var[f"{key}_{col}"] = result[col].to_numpy()
    params = {
        "groupby": groupby,
        "group": str(group),
        "reference": str(reference),
        "test": test,
        "correction": correction,
        "alpha": float(alpha),
        "min_log2fc": float(min_log2fc),
        "scale": "linear" if log_base is None else f"log (base {log_base:g})",
        "n_group": int(ig.size),
        "n_reference": int(ir.size),
        "n_selected": int(selected.sum()),
    }
    if pair_by is not None:
        params["pair_by"] = pair_by
    _rg(adata)[key] = params
    n_sel = params["n_selected"]
    log.info(f"{test}: {group} vs {reference} ({ig.size} vs {ir.size}), {n_sel} genes selected")
    return result.sort_values(["padj", "pval"], kind="stable")


# --- pathway gene sets -------------------------------------------------------------------------


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT file (`name<TAB>description<TAB>gene...` per line) into {name: genes}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GMT file not found: {path}")
    sets: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            genes = [g.strip() for g in fields[2:] if g.strip()]  # trailing tabs are common
            if len(fields) < 3 or not genes:
                raise ValueError(
                    f"{path}, line {n}: a GMT line needs name, description and >= 1 gene "
                    f"separated by tabs; got {len(fields)} field(s)"
                )
            name = fields[0].strip()
            if name in sets:
                raise ValueError(f"{path}: gene set '{name}' on lines {lines[name]} and {n}")
            sets[name], lines[name] = list(dict.fromkeys(genes)), n
    if not sets:
        raise ValueError(f"{path}: no gene sets")
    return sets


def _match_pathway(query: str, names: list[str], source: str) -> str:
    if query in names:
        return query
    hits = [n for n in names if query.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ValueError(f"pathway '{query}' matches {len(hits)} sets in {source}: {_listed(hits)}")
    close = difflib.get_close_matches(query, names, n=5, cutoff=0.5)
    hint = f"close: {close}" if close else f"available: {_listed(names)}"
    raise ValueError(f"pathway '{query}' not found in {source}; {hint}")


def pathway_genes(
    adata: ad.AnnData,
    gmt: str | Path | dict[str, list[str]],
    pathways: list[str] | None = None,
    *,
    key: str = PATHWAYS_KEY,
) -> pd.DataFrame:
    """Mark the genes of disease pathways (e.g. KEGG glioma, "hsa05214") in `var[f"{key}_selected"]`.

    `gmt` is a GMT path or {name: genes}; `pathways` picks sets by exact name or by a
    case-insensitive substring matching one name (None: all). Returns per pathway n_genes,
    n_present, n_missing and the missing genes, also stored in `uns["rg"][key]`.
    """
    source = "the gene-set dict" if isinstance(gmt, dict) else str(gmt)
    sets = read_gmt(gmt) if not isinstance(gmt, dict) else gmt
    sets = {str(k): [str(g) for g in v] for k, v in sets.items()}
    names = list(sets)
    chosen = list(dict.fromkeys(_match_pathway(str(q), names, source) for q in (pathways or names)))
    var = pd.Index(adata.var_names.astype(str))
    rows, selected = [], np.zeros(adata.n_vars, bool)
    for name in chosen:
        genes = sets[name]
        present = var.isin(genes)
        missing = [g for g in genes if g not in var]
        selected |= present
        rows.append((name, len(genes), int(present.sum()), len(missing), ",".join(missing)))
        if missing:
            n = len(genes) - len(missing)
            log.info(f"{name}: {n} of {len(genes)} genes present; missing: {_listed(missing, 30)}")
    report = pd.DataFrame(rows, columns=["pathway", "n_genes", "n_present", "n_missing", "missing"])
    report = report.set_index("pathway")
    if not selected.any():
        wanted = sorted({g for n in chosen for g in sets[n]})
        upper = {g.upper() for g in wanted}
        case = [g for g in var if g.upper() in upper]
        hint = f" {len(case)} gene(s) match ignoring case (e.g. {case[:5]})." if case else ""
        raise ValueError(
            f"no gene of pathway(s) {chosen} from {source} is in the data: data genes "
            f"{list(var[:5])}, set genes {wanted[:5]}.{hint}"
        )
    empty = report.index[report["n_present"] == 0].tolist()
    if empty:
        log.warning("pathway(s) with no gene in the data: %s", empty)
    adata.var[f"{key}_selected"] = selected
    _rg(adata)[key] = {
        "gmt": source,
        "pathways": list(report.index),
        **{c: report[c].tolist() for c in report.columns},
        "n_selected": int(selected.sum()),
    }
    return report


# --- subsetting --------------------------------------------------------------------------------


def highly_variable(adata: ad.AnnData, n_top: int) -> list[str]:
    """The `n_top` genes of highest variance over the expression rows, most variable first."""
    if not 1 <= n_top <= adata.n_vars:
        raise ValueError(f"n_top must be between 1 and {adata.n_vars} (the genes); got {n_top}")
    var = np.nanvar(_dense(adata)[_expression_rows(adata)].astype(np.float64), axis=0)
    order = np.argsort(-np.nan_to_num(var, nan=-1.0), kind="stable")[:n_top]
    return [str(g) for g in adata.var_names[order]]


def select_genes(adata: ad.AnnData, genes: Iterable[str]) -> ad.AnnData:
    """A copy with only `genes`, in the order of `adata.var_names`; gene statistics follow."""
    if isinstance(genes, str):
        genes = [genes]
    genes = list(dict.fromkeys(str(g) for g in genes))
    if not genes:
        raise ValueError("select_genes: no genes given")
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"{len(missing)} gene(s) not in the cohort: {_listed(missing)}")
    keep = adata.var_names.isin(genes)
    out = adata[:, keep].copy()
    rg = out.uns.get(K.UNS, {})
    stats_ = rg.get(K.GENE_STATS)
    if stats_ is not None:  # keep uns consistent with the new var
        scaler = GeneScaler.from_dict(stats_)
        if scaler.genes == list(adata.var_names):
            idx = np.flatnonzero(keep)
            scaler.mean, scaler.std = scaler.mean[idx], scaler.std[idx]
            scaler.genes = [scaler.genes[i] for i in idx]
            rg[K.GENE_STATS] = scaler.to_dict()
        else:
            log.warning("dropping uns['rg']['%s']: its genes do not match var", K.GENE_STATS)
            del rg[K.GENE_STATS]
    log.info("kept %d of %d genes", out.n_vars, adata.n_vars)
    return out
