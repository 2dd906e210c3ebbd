"""Preprocessing: gene standardisation and gene selection (docs/design.md, section 1).

Functions take a cohort AnnData (scverse style): a function that writes into the AnnData takes
`copy=False` (True: work on a copy and return it; False: write in place and return None), and
names what it adds with `key_added`. Statistics use only the patients with expression
(`obs["has_expression"]`, all rows when the column is missing); other rows are NaN by contract.

- `standardize`: fit the cohort's gene scaler (`radiogenomics.data.scaling.GeneScaler`: optional
  log1p, then per-gene standardisation, exactly invertible) into `uns["rg"]["gene_stats"]`; the
  cohort's `X` stays on the user's scale. `log1p`: log-transform `X` itself.
- `rank_genes` (+ `de_table`, `pl.volcano`): differential expression, rank-sum or paired
  signed-rank.
- `read_gmt` / `pathway_genes` (+ `pathway_table`): disease pathway gene sets such as KEGG glioma
  hsa05214.
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
from radiogenomics.data import scaling

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


def _returned(adata: ad.AnnData, copy: bool) -> ad.AnnData | None:
    """scverse's convention: the modified copy when `copy`, None after an in-place change."""
    return adata if copy else None


# --- standardisation ---------------------------------------------------------------------------


def standardize(adata: ad.AnnData, log1p: bool = False, *, copy: bool = False) -> ad.AnnData | None:
    """Fit the cohort's gene scaler and store it in `uns["rg"]["gene_stats"]`.

    The scaler (`radiogenomics.data.scaling.GeneScaler`) is an optional `log1p`, then per-gene
    `(x - mean) / std` over the patients with expression. `X` is not changed: the models
    standardise internally with this scaler and write samples back on the user's scale, so a
    cohort and its synthetic copy stay comparable. Every model of the cohort uses it; a cohort
    without one gets the same numbers fitted by each model, which keeps them to itself.

    Parameters
    ----------
    adata
        The cohort.
    log1p
        Fit on `log1p(X)` (counts); the models then need `gene.log1p=True`.
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The cohort with `uns["rg"]["gene_stats"]` when `copy`, else None (written in place). Read
    the scaler back with `radiogenomics.data.scaling.stored_scaler(adata)`.

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> from radiogenomics.data.scaling import stored_scaler
    >>> adata = make_phantom(16, 2, progress=False).adata
    >>> pp.standardize(adata)
    >>> stored_scaler(adata).transform(adata.X).shape
    (16, 256)
    """
    adata = adata.copy() if copy else adata
    rows = _expression_rows(adata)
    scaler = scaling.GeneScaler(log1p=log1p).fit(_dense(adata)[rows], genes=adata.var_names)
    _rg(adata)[K.GENE_STATS] = scaler.to_dict()
    log.info("gene statistics of %d genes over %d patients", adata.n_vars, int(rows.sum()))
    return _returned(adata, copy)


def log1p(adata: ad.AnnData, *, copy: bool = False) -> ad.AnnData | None:
    """Natural `log1p` of `X`, recorded in `uns["rg"]["provenance"]["log1p"]`.

    Parameters
    ----------
    adata
        The cohort; its expression must be non-negative (counts or linear intensities) and not
        already log1p-transformed.
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The transformed cohort when `copy`, else None (`X` replaced in place).

    Examples
    --------
    >>> import anndata as ad
    >>> import numpy as np
    >>> from radiogenomics import pp
    >>> adata = ad.AnnData(np.array([[0.0, 1.0], [3.0, 7.0]], np.float32))
    >>> pp.log1p(adata)
    >>> np.round(adata.X.astype(float), 3).tolist()
    [[0.0, 0.693], [1.386, 2.079]]
    """
    prov = adata.uns.get(K.UNS, {}).get(K.PROVENANCE, {})
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
    adata = adata.copy() if copy else adata
    adata.X = np.log1p(X)
    _rg(adata).setdefault(K.PROVENANCE, {})["log1p"] = "true"
    return _returned(adata, copy)


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
    key_added: str = DE_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Differential expression of `group` against `reference` (another value or "rest").

    Unpaired: two-sided Mann-Whitney rank-sum per gene. Paired (`pair_by` names the obs column
    with the id shared by a patient's two samples): Wilcoxon signed-rank on within-pair
    differences of `X` as given; samples without a partner are dropped with a warning.
    P-values are corrected over genes (Benjamini-Hochberg or Bonferroni). The log2 fold change
    is `log2((mean_g + eps) / (mean_r + eps))` for linear data (`log_base=None`), or
    `(mean_g - mean_r) * log2(log_base)` for log-scale data; paired, the means run over the
    matched samples, so their difference is the mean within-pair difference. A gene is selected
    when `padj < alpha` and `|log2fc| >= min_log2fc`.

    Parameters
    ----------
    adata
        The cohort; only patients with expression are compared.
    groupby
        The obs column whose values name the groups.
    group
        The value of `groupby` tested.
    reference
        Another value of `groupby`, or "rest": every other patient with a value.
    pair_by
        The obs column with the id shared by a patient's two samples (paired test), or None.
    correction
        "benjamini-hochberg" or "bonferroni", over genes.
    alpha
        Largest adjusted p value of a selected gene.
    min_log2fc
        Smallest |log2 fold change| of a selected gene.
    log_base
        None for linear data, else the base of `X`'s logarithm (2, 10, `np.e`).
    key_added
        Prefix of the var columns and key in `uns["rg"]` that the result goes to.
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The cohort with the result when `copy`, else None. Written: var columns
    `{key_added}_log2fc`, `_pval`, `_padj`, `_selected`, and the parameters in
    `uns["rg"][key_added]`; `de_table(adata, key_added)` gives the table sorted by padj.

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(24, 2, progress=False).adata
    >>> pp.rank_genes(adata, "sex", "F", log_base=2)
    >>> list(pp.de_table(adata).columns)
    ['log2fc', 'pval', 'padj', 'selected']
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
    adata = adata.copy() if copy else adata
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
        adata.var[f"{key_added}_{col}"] = result[col].to_numpy()
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
    _rg(adata)[key_added] = params
    n_sel = params["n_selected"]
    log.info(f"{test}: {group} vs {reference} ({ig.size} vs {ir.size}), {n_sel} genes selected")
    return _returned(adata, copy)


def de_table(adata: ad.AnnData, key: str = DE_KEY) -> pd.DataFrame:
    """The differential-expression table that `rank_genes(..., key_added=key)` wrote.

    Parameters
    ----------
    adata
        A cohort that `rank_genes` has run on.
    key
        The `key_added` of that run.

    Returns
    -------
    Columns log2fc, pval, padj, selected; indexed by gene, sorted by padj (then pval).

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(24, 2, progress=False).adata
    >>> pp.rank_genes(adata, "subtype", "A", log_base=2, key_added="de_A")
    >>> pp.de_table(adata, "de_A").index.name
    'gene'
    """
    columns = ["log2fc", "pval", "padj", "selected"]
    missing = [f"{key}_{c}" for c in columns if f"{key}_{c}" not in adata.var.columns]
    if missing:
        raise ValueError(
            f"var has no differential-expression columns {missing}; run "
            f"pp.rank_genes(adata, ..., key_added='{key}') first"
        )
    table = pd.DataFrame(
        {c: adata.var[f"{key}_{c}"].to_numpy() for c in columns},
        index=pd.Index(adata.var_names, name="gene"),
    )
    return table.sort_values(["padj", "pval"], kind="stable")


# --- pathway gene sets -------------------------------------------------------------------------


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    r"""Read a GMT file (`name<TAB>description<TAB>gene...` per line) into {name: genes}.

    Parameters
    ----------
    path
        The GMT file (e.g. MSigDB's KEGG sets).

    Returns
    -------
    {set name: its genes, in file order, without duplicates}.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from radiogenomics import pp
    >>> gmt = Path(tempfile.mkdtemp()) / "sets.gmt"
    >>> _ = gmt.write_text("KEGG_GLIOMA\thsa05214\tEGFR\tPDGFRA\tCDK4\n")
    >>> pp.read_gmt(gmt)
    {'KEGG_GLIOMA': ['EGFR', 'PDGFRA', 'CDK4']}
    """
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
    key_added: str = PATHWAYS_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Mark the genes of disease pathways (e.g. KEGG glioma, "hsa05214") in the cohort.

    Parameters
    ----------
    adata
        The cohort; its `var_names` are matched to the sets' gene symbols exactly.
    gmt
        A GMT file (`read_gmt`) or {set name: genes}.
    pathways
        Sets picked by exact name or by a case-insensitive substring matching one name; None:
        all sets.
    key_added
        Prefix of the var column and key in `uns["rg"]` that the result goes to.
    copy
        Work on a copy of `adata` and return it, leaving `adata` untouched.

    Returns
    -------
    The cohort with the result when `copy`, else None. Written: `var[f"{key_added}_selected"]`
    (the genes in any chosen set) and, in `uns["rg"][key_added]`, per pathway n_genes,
    n_present, n_missing and the missing genes (`pathway_table(adata, key_added)`).

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(8, 2, progress=False).adata
    >>> sets = {"first": list(adata.var_names[:3]) + ["NOT_A_GENE"]}
    >>> pp.pathway_genes(adata, sets)
    >>> int(adata.var["rg_pathways_selected"].sum())
    3
    >>> int(pp.pathway_table(adata).loc["first", "n_missing"])
    1
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
    adata = adata.copy() if copy else adata
    adata.var[f"{key_added}_selected"] = selected
    _rg(adata)[key_added] = {
        "gmt": source,
        "pathways": list(report.index),
        **{c: report[c].tolist() for c in report.columns},
        "n_selected": int(selected.sum()),
    }
    return _returned(adata, copy)


_PATHWAY_COLUMNS = ["n_genes", "n_present", "n_missing", "missing"]


def pathway_table(adata: ad.AnnData, key: str = PATHWAYS_KEY) -> pd.DataFrame:
    """The per-pathway report that `pathway_genes(..., key_added=key)` wrote.

    Parameters
    ----------
    adata
        A cohort that `pathway_genes` has run on.
    key
        The `key_added` of that run.

    Returns
    -------
    Indexed by pathway: n_genes, n_present, n_missing and the missing genes (comma-separated).

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(8, 2, progress=False).adata
    >>> pp.pathway_genes(adata, {"two": list(adata.var_names[:2])}, key_added="kegg")
    >>> pp.pathway_table(adata, "kegg")["n_present"].tolist()
    [2]
    """
    stored = adata.uns.get(K.UNS, {}).get(key)
    if stored is None or "pathways" not in stored:
        raise ValueError(
            f"uns['rg'] has no pathway report '{key}'; run "
            f"pp.pathway_genes(adata, ..., key_added='{key}') first"
        )
    table = pd.DataFrame(
        {c: list(stored[c]) for c in _PATHWAY_COLUMNS},
        index=pd.Index([str(p) for p in stored["pathways"]], name="pathway"),
    )
    table["missing"] = table["missing"].astype(str)
    return table.astype({c: int for c in _PATHWAY_COLUMNS[:3]})


# --- subsetting --------------------------------------------------------------------------------


def highly_variable(adata: ad.AnnData, n_top: int) -> list[str]:
    """The `n_top` genes of highest variance over the expression rows, most variable first.

    Parameters
    ----------
    adata
        The cohort (read, not changed).
    n_top
        How many genes, between 1 and the number of genes.

    Returns
    -------
    Gene names, most variable first.

    Examples
    --------
    >>> import anndata as ad
    >>> import numpy as np
    >>> from radiogenomics import pp
    >>> X = np.array([[0.0, 1.0, 5.0], [0.0, 3.0, -5.0]], np.float32)
    >>> adata = ad.AnnData(X)
    >>> adata.var_names = ["A", "B", "C"]
    >>> pp.highly_variable(adata, 2)
    ['C', 'B']
    """
    if not 1 <= n_top <= adata.n_vars:
        raise ValueError(f"n_top must be between 1 and {adata.n_vars} (the genes); got {n_top}")
    var = np.nanvar(_dense(adata)[_expression_rows(adata)].astype(np.float64), axis=0)
    order = np.argsort(-np.nan_to_num(var, nan=-1.0), kind="stable")[:n_top]
    return [str(g) for g in adata.var_names[order]]


def select_genes(adata: ad.AnnData, genes: Iterable[str]) -> ad.AnnData:
    """A copy of the cohort with only `genes`; `adata` itself is not changed.

    Parameters
    ----------
    adata
        The cohort.
    genes
        Gene names (one name or several), all in `adata.var_names`.

    Returns
    -------
    A new cohort with the genes in the order of `adata.var_names`; stored gene statistics
    (`standardize`) are subset to them.

    Examples
    --------
    >>> from radiogenomics import pp
    >>> from radiogenomics.data.phantom import make_phantom
    >>> adata = make_phantom(8, 2, progress=False).adata
    >>> pp.select_genes(adata, pp.highly_variable(adata, 10)).shape
    (8, 10)
    """
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
        scaler = scaling.GeneScaler.from_dict(stats_)
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
