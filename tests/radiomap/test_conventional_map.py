"""The conventional map (radiomap.conventional, tl.conventional_map, pl.map_heatmap): tests
against scipy on known data, BH by hand, metagenes, and recovery of the phantom's planted map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from radiogenomics import pl, tl
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.phantom import make_phantom
from radiogenomics.radiomap.conventional import (
    COLUMNS,
    adjust,
    fisher_table,
    kruskal_table,
    map_from_uns,
    metagenes,
    spearman_table,
)
from radiogenomics.radiomap.features import image_feature_batch
from radiogenomics.radiomap.scoring import score_phantom_map


def _known(n=40, seed=0):
    rng = np.random.default_rng(seed)
    idx = [f"P{i}" for i in range(n)]
    x = rng.normal(size=n)
    genomic = pd.DataFrame(
        {"a": x, "b": rng.normal(size=n), "c": -(x**3) + 0.1 * rng.normal(size=n)}, index=idx
    )
    features = pd.DataFrame({"f": x + 0.5 * rng.normal(size=n), "g": rng.normal(size=n)}, index=idx)
    return genomic, features


def test_spearman_equals_scipy():
    genomic, features = _known()
    features.iloc[3, 0] = np.nan  # a patient without the feature is left out of that test
    table = spearman_table(genomic, features)
    assert list(table.columns) == list(COLUMNS) and len(table) == 6
    for row in table.itertuples():
        f = features[row.feature]
        ok = f.notna()
        rho, p = stats.spearmanr(genomic.loc[ok, row.genomic], f[ok])
        assert row.effect == pytest.approx(rho, rel=1e-12, abs=1e-14)
        assert row.p == pytest.approx(p, rel=1e-9)
        assert row.n == ok.sum() and row.method == "spearman"


def test_kruskal_equals_scipy_with_epsilon_squared():
    rng = np.random.default_rng(1)
    idx = [f"P{i}" for i in range(30)]
    group = pd.Categorical(np.repeat(["x", "y", "z"], 10))
    value = rng.normal(size=30) + np.repeat([0.0, 1.0, 2.0], 10)
    cats = pd.DataFrame({"subtype": group}, index=idx)
    cats.iloc[0, 0] = np.nan  # no subtype: left out
    features = pd.DataFrame({"f": value}, index=idx)
    row = kruskal_table(cats, features).iloc[0]
    h, p = stats.kruskal(value[1:10], value[10:20], value[20:30])
    assert row.p == pytest.approx(p, rel=1e-12)
    assert row.effect == pytest.approx(h / (29 - 1), rel=1e-12)  # epsilon^2 = H / (n - 1)
    assert row.n == 29 and row.method == "kruskal"
    # groups that separate completely: H from the rank sums 55, 155, 255 by hand
    sep = pd.DataFrame({"f": np.arange(30.0)}, index=idx)
    full = kruskal_table(pd.DataFrame({"s": group}, index=idx), sep).iloc[0]
    assert full.effect == pytest.approx(
        (12 / (30 * 31) * sum(s**2 / 10 for s in (55, 155, 255)) - 3 * 31) / 29, rel=1e-12
    )
    assert full.effect > 0.85  # near its maximum (1 needs n -> inf)


def test_fisher_equals_scipy_on_known_tables():
    """Each level against the rest, the feature split at its median (ties low): the 2x2 tables
    written out by hand, p from scipy, effect the log odds ratio, Haldane's +0.5 on every cell
    when one is 0."""
    idx = [f"P{i}" for i in range(12)]
    cats = pd.DataFrame({"cl": list("aaaabbbbcccc")}, index=idx)
    f = np.array([0, 1, 2, 9, 3, 4, 10, 11, 5, 6, 7, 8], float)
    feats = pd.DataFrame({"f": f, "flat": np.ones(12)}, index=idx)
    cats.loc["P0", "cl"] = None  # no level: left out
    table = fisher_table(cats, feats).set_index(["genomic", "feature"])
    assert set(table.index.get_level_values(0)) == {"cl=a", "cl=b", "cl=c"}
    # without P0: the values 1..11, median 6, high = {7, 8, 9, 10, 11}
    # a: {1, 2, 9} -> 1 high, 2 low; b: {3, 4, 10, 11} -> 2, 2; c: {5, 6, 7, 8} -> 2, 2
    expected = {"cl=a": [[1, 2], [4, 4]], "cl=b": [[2, 2], [3, 4]], "cl=c": [[2, 2], [3, 4]]}
    for level, t in expected.items():
        row = table.loc[(level, "f")]
        assert row.p == pytest.approx(stats.fisher_exact(t).pvalue, rel=1e-12)
        (a, b), (c, d) = t
        assert row.effect == pytest.approx(np.log(a * d / (b * c)), rel=1e-12)
        assert row.n == 11 and row.method == "fisher"
    # a constant feature has nobody above its median: NaN
    assert table.xs("flat", level=1)[["effect", "p"]].isna().all().all()
    # a zero cell: every patient of 'x' high
    sep = pd.DataFrame({"f": np.arange(8.0)}, index=idx[:8])
    two = pd.DataFrame({"s": list("yyyyxxxx")}, index=idx[:8])
    rows = fisher_table(two, sep).set_index("genomic")
    assert rows.loc["s=x", "p"] == pytest.approx(stats.fisher_exact([[4, 0], [0, 4]]).pvalue)
    assert rows.loc["s=x", "effect"] == pytest.approx(np.log(4.5 * 4.5 / (0.5 * 0.5)))
    assert rows.loc["s=y", "effect"] == pytest.approx(-rows.loc["s=x", "effect"])


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.2 over m = 4 tests: 0.04, 0.06, 0.0533, 0.2, then the
    # running minimum from the largest: 0.2, 0.0533, 0.0533, 0.04
    expected = [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2, np.nan]
    np.testing.assert_allclose(adjust(p), expected, rtol=1e-12)
    np.testing.assert_array_equal(adjust(p, "none"), p)
    with pytest.raises(ValueError, match="fdr"):
        adjust(p, "bonferroni")


def test_metagenes_find_planted_gene_blocks():
    rng = np.random.default_rng(2)
    n, blocks = 80, 3
    z = rng.normal(size=(n, blocks))
    X = np.repeat(z, 6, axis=1) + 0.3 * rng.normal(size=(n, 6 * blocks))
    genes = [f"G{i}" for i in range(X.shape[1])]
    expr = pd.DataFrame(X, index=[f"P{i}" for i in range(n)], columns=genes)
    scores, member = metagenes(expr)
    assert scores.shape == (n, 3)  # the silhouette rule picks the planted number
    for b in range(blocks):
        assert member.iloc[6 * b : 6 * b + 6].nunique() == 1
    # a metagene is the mean of its standardised genes
    first = member.iloc[0]
    cols = member.index[member == first]
    zs = (expr[cols] - expr[cols].mean()) / expr[cols].std(ddof=0)
    np.testing.assert_allclose(scores[first], zs.mean(axis=1), rtol=1e-10)
    nmf_scores, nmf_member = metagenes(expr - expr.min().min(), method="nmf", n_metagenes=3)
    assert nmf_scores.shape == (n, 3) and (nmf_scores.to_numpy() >= 0).all()
    assert nmf_member.iloc[:6].nunique() == 1


def _features(phantom):
    F = image_feature_batch(phantom.images, phantom.masks, index=phantom.adata.obs_names)
    return F[phantom.adata.obs["has_image"].to_numpy(bool)]


def test_tl_writes_table_and_membership(phantom, tmp_path):
    adata = phantom.adata.copy()
    F = _features(phantom)
    tl.conventional_map(adata, features=F, subtypes=["subtype"], n_metagenes=6)
    table = map_from_uns(adata.uns["rg_map"])
    assert list(table.columns) == list(COLUMNS)
    assert set(table["method"]) == {"spearman", "kruskal"}
    assert set(adata.var["rg_metagene"]) <= {f"MG{i}" for i in range(1, 7)} | {""}
    paired = (adata.obs[["has_expression", "has_image", "has_mask"]].all(axis=1)).sum()
    assert (table.loc[table["method"] == "spearman", "n"] <= paired).all()
    # the subtype test uses image-only patients too
    imaged = adata.obs["has_image"].sum()
    assert table.loc[table["method"] == "kruskal", "n"].max() == imaged > paired
    assert (table["p_adj"].dropna() >= table["p"].dropna().loc[table["p_adj"].notna()]).all()
    back = read_cohort(write_cohort(adata, tmp_path / "mapped.h5ad"))
    pd.testing.assert_frame_equal(map_from_uns(back.uns["rg_map"]), table, check_dtype=False)
    fig = pl.map_heatmap(adata.uns["rg_map"], save=tmp_path / "map.png", max_rows=10)
    assert (tmp_path / "map.png").stat().st_size > 1000 and fig.axes
    with pytest.raises(ValueError, match="subtypes"):
        tl.conventional_map(adata, features=F, subtypes=["nope"])


def test_tl_writes_gene_by_feature_matrices_to_varm(phantom, tmp_path):
    """varm['rg_map_effect'] / ['rg_map_p_adj']: genes x features DataFrames; a gene's row is
    its own Spearman row (genes) or its metagene's (metagenes); a constant gene has none (NaN).
    They survive write_cohort/read_cohort unchanged."""
    adata = phantom.adata.copy()
    adata.X = np.asarray(adata.X).copy()
    adata.X[:, 0] = 1.0  # a constant gene: no metagene, NaN rho
    F = _features(phantom)
    tl.conventional_map(adata, features=F, subtypes=["subtype"], n_metagenes=4)
    table = map_from_uns(adata.uns["rg_map"])
    effect, p_adj = adata.varm["rg_map_effect"], adata.varm["rg_map_p_adj"]
    assert list(effect.index) == list(adata.var_names) and list(effect.columns) == list(F.columns)
    member = adata.var["rg_metagene"]
    assert member.iloc[0] == "" and effect.iloc[0].isna().all() and p_adj.iloc[0].isna().all()
    rows = table[table["method"] == "spearman"].set_index(["genomic", "feature"])
    for gene in adata.var_names[1:4]:
        mg = member[gene]
        np.testing.assert_array_equal(effect.loc[gene], rows.loc[mg].loc[F.columns, "effect"])
        np.testing.assert_array_equal(p_adj.loc[gene], rows.loc[mg].loc[F.columns, "p_adj"])
    back = read_cohort(write_cohort(adata, tmp_path / "mapped.h5ad"))
    pd.testing.assert_frame_equal(back.varm["rg_map_effect"], effect)
    pd.testing.assert_frame_equal(back.varm["rg_map_p_adj"], p_adj)
    # genes: each gene its own row; another key_added keeps the first map
    tl.conventional_map(adata, features=F, genomic="genes", key_added="genes_map")
    genes = map_from_uns(adata.uns["genes_map"]).set_index(["genomic", "feature"])
    gene = adata.var_names[2]
    np.testing.assert_array_equal(
        adata.varm["genes_map_effect"].loc[gene], genes.loc[gene].loc[F.columns, "effect"]
    )
    assert "rg_map_effect" in adata.varm


def test_fisher_option_through_tl_cli_and_heatmap(phantom, phantom_cohort, tmp_path):
    """categorical_test='fisher': one row per (level, feature) named 'subtype=LEVEL', BH over
    the whole table (gene rows included); the CLI's --categorical-test and the heatmap too."""
    from pathlib import Path

    from radiogenomics.cli import main

    adata = phantom.adata.copy()
    F = _features(phantom)
    tl.conventional_map(adata, features=F, subtypes=["subtype"], categorical_test="fisher")
    table = map_from_uns(adata.uns["rg_map"])
    fisher = table[table["method"] == "fisher"]
    levels = sorted(adata.obs["subtype"].dropna().astype(str).unique())
    assert sorted(fisher["genomic"].unique()) == [f"subtype={v}" for v in levels]
    assert len(fisher) == len(levels) * F.shape[1]
    np.testing.assert_allclose(table["p_adj"], adjust(table["p"]), rtol=1e-12)
    direct = fisher_table(adata.obs.loc[F.index, ["subtype"]], F)
    np.testing.assert_allclose(fisher["p"], direct["p"], rtol=1e-12)
    fig = pl.map_heatmap(table, save=tmp_path / "fisher.png")
    assert "log odds" in fig.axes[-1].get_ylabel()
    with pytest.raises(ValueError, match="categorical_test"):
        tl.conventional_map(adata, features=F, subtypes=["subtype"], categorical_test="chi2")
    cohort = next(Path(phantom_cohort.uns["rg"]["root"]).glob("*.h5ad"))
    argv = ["-q", "map", str(cohort), "--out", str(tmp_path / "m"), "--subtypes", "subtype"]
    assert main(argv + ["--categorical-test", "fisher", "--genomic", "genes"]) == 0
    csv = pd.read_csv(tmp_path / "m" / "map.csv")
    assert list(csv.columns) == ["genomic", "feature", "effect", "p", "p_adj"]
    assert {f"subtype={v}" for v in levels} <= set(csv["genomic"])


@pytest.mark.parametrize("dims", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_phantom_gene_map_recovers_the_planted_map(dims):
    """Gene-level AUROC of |rho| for the planted (truth_map != 0) gene x feature pairs, over
    the 6 features that measure the planted phenotypes (scoring.PHANTOM_FEATURES); 512 patients
    (measured: 2D 0.923, 3D 0.928; 256 patients give 0.895 in 2D)."""
    ph = make_phantom(512, dims, seed=0, progress=False)
    F = image_feature_batch(ph.images, ph.masks, index=ph.adata.obs_names)
    tl.conventional_map(ph.adata, features=F, genomic="genes")
    scores = score_phantom_map(map_from_uns(ph.adata.uns["rg_map"]), ph.adata)
    assert scores["auroc"] >= 0.9, scores
    assert scores["sign_agreement"] >= 0.9, scores
