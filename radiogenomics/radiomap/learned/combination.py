"""Several trained runs of one design, one map: `combine_maps`; and a metagene map read per
gene: `gene_level`."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from radiogenomics.radiomap.conventional import COLUMNS, adjust


@contextlib.contextmanager
def quiet():
    # all-NaN slices (a feature no patient has) are expected and become NaN rows
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# --------------------------------------------------------------------------------------------
# several trained runs


def combine_maps(tables: list[pd.DataFrame], fdr: str = "benjamini-hochberg") -> pd.DataFrame:
    """One map from the maps (long tables, `COLUMNS`) of independently trained runs of one
    design (`learned_map`, or `gene_swap`, on each): a single GAN fit is one draw of what
    training makes of the data, and which feature it renders less faithfully varies from run
    to run (the README's learned-map table), so the mean over runs is the steadier map.

    effect: the mean of the runs' effects (runs where it is NaN left out). p: Stouffer's
    combination of the runs' tests, each two-sided p turned into a z signed by its effect,
    Z = sum z / sqrt(k), two-sided again; so runs that agree in sign add up and runs that
    disagree cancel; adjusted over the table by `fdr`. n: the patients over all runs. Every
    table must hold the same (genomic, feature) pairs. Stouffer takes the runs' tests as
    independent: so they are for joint runs, each on its own fully synthetic patients; image
    runs mapped from one cohort (`--data`) with one seed share their base patients, and the
    combined p is then too small (n, too, counts such patients once per run)."""
    if not tables:
        raise ValueError("no maps to combine")
    keys = ["genomic", "feature"]
    indexed = [t.set_index(keys) for t in tables]
    first = indexed[0].index
    for i, t in enumerate(indexed[1:], start=2):
        if not t.index.equals(first):
            extra = t.index.difference(first)[:3].tolist()
            missing = first.difference(t.index)[:3].tolist()
            raise ValueError(
                f"map {i} does not hold map 1's (genomic, feature) pairs: only in map {i} "
                f"{extra}, missing from it {missing}; the runs must share genes and features"
            )
    effects = np.stack([t["effect"].to_numpy(np.float64) for t in indexed], axis=1)
    ps = np.stack([t["p"].to_numpy(np.float64) for t in indexed], axis=1)
    with quiet():
        effect = np.nanmean(effects, axis=1)
    # Stouffer by hand: each run's z = sign(effect) * the normal quantile of p/2, symmetric in
    # the sign (combine_pvalues of one-sided p = 1 - p/2 loses every p below 1e-16 to
    # rounding on the negative side only); a zero effect counts as z = 0
    ok = np.isfinite(effects) & np.isfinite(ps)
    z = np.where(
        ok, np.sign(effects) * stats.norm.isf(np.clip(np.nan_to_num(ps), 1e-300, 1) / 2), 0
    )
    k = ok.sum(axis=1)
    with quiet():
        p = np.where(k > 0, 2 * stats.norm.sf(np.abs(z.sum(axis=1)) / np.sqrt(k)), np.nan)
    methods = {m for t in tables for m in t["method"].astype(str).unique()}
    out = pd.DataFrame(
        {
            "genomic": first.get_level_values(0),
            "feature": first.get_level_values(1),
            "effect": effect,
            "p": p,
            "p_adj": adjust(p, fdr),
            "method": f"{' / '.join(sorted(methods))}, mean of {len(tables)} runs",
            "n": sum(t["n"].to_numpy() for t in indexed),
        }
    )
    return out[list(COLUMNS)]


# --------------------------------------------------------------------------------------------
# scoring on the phantom


def gene_level(table: pd.DataFrame, membership: pd.Series) -> pd.DataFrame:
    """A metagene map as a gene map: each gene takes its metagene's rows (genes in no metagene
    are left out), so it can be scored against the phantom's gene-level truth."""
    genes = membership[membership != ""]
    parts = []
    for gene, mg in genes.items():
        rows = table[table["genomic"] == mg].copy()
        rows["genomic"] = str(gene)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else table.iloc[:0]
