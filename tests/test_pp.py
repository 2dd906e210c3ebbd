"""pp: standardize (data.scaling.GeneScaler)/log1p, rank_genes (+ pl.volcano), GMT pathways,
gene subsetting."""

from __future__ import annotations

import logging

import anndata as ad
import matplotlib.figure
import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics import pl, pp
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.phantom import make_phantom
from radiogenomics.data.scaling import GeneScaler, stored_scaler
from radiogenomics.data.shared import ENV_VAR, SHARED_DATA

EPS32 = float(np.finfo(np.float32).eps)
GENESETS = SHARED_DATA / "genesets"
needs_shared = pytest.mark.skipif(
    not GENESETS.is_dir(),
    reason=f"shared real data not found at {SHARED_DATA} (set {ENV_VAR} to its folder)",
)


@pytest.fixture(scope="module")
def phantom_adata():
    """A 2D phantom (48 patients, 5 without expression: NaN rows)."""
    return make_phantom(
        48, 2, seed=7, frac_image_only=0.1, frac_expression_only=0.1, progress=False
    ).adata


def _cohort(X: np.ndarray, obs: dict | None = None, genes=None) -> ad.AnnData:
    n, m = X.shape
    obs_df = pd.DataFrame(obs or {}, index=[f"P{i:03d}" for i in range(n)])
    var = pd.DataFrame(index=genes or [f"G{j:03d}" for j in range(m)])
    return ad.AnnData(X=X.astype(np.float32), obs=obs_df, var=var)


def _de(adata: ad.AnnData, *args, **kwargs) -> pd.DataFrame:
    """`pp.rank_genes` in place, then its table."""
    assert pp.rank_genes(adata, *args, **kwargs) is None
    return pp.de_table(adata, kwargs.get("key_added", K.DE))


def _pathways(adata: ad.AnnData, *args, **kwargs) -> pd.DataFrame:
    """`pp.pathway_genes` in place, then its report."""
    assert pp.pathway_genes(adata, *args, **kwargs) is None
    return pp.pathway_table(adata, kwargs.get("key_added", K.PATHWAYS))


@pytest.fixture
def de_cohort() -> ad.AnnData:
    """20 vs 20 samples on a log2 scale; genes G000-G004 shifted by +3 in group 'A'."""
    rng = np.random.default_rng(0)
    X = rng.normal(8.0, 1.0, (40, 200))
    X[:20, :5] += 3.0
    group = pd.Categorical(["A"] * 20 + ["B"] * 20)
    return _cohort(X, {"cond": group})


# --------------------------------------------------------------------------------------------
# GeneScaler, standardize, log1p


def _scaler_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = np.exp(rng.normal(0.0, 4.0, (200, 30))).astype(np.float32)  # 1e-7 .. 1e7
    X[:, 0] = rng.normal(1e6, 10.0, 200)  # large mean, small spread
    X[:, 1] = rng.normal(8.0, 2.0, 200)
    X[:5] = np.nan  # patients without expression
    return X


@pytest.mark.parametrize("log1p", [False, True])
def test_scaler_inverse_is_exact_to_float32_rounding(log1p):
    X = _scaler_data()
    scaler = GeneScaler(log1p=log1p).fit(X)
    Z = scaler.transform(X)
    back = scaler.inverse_transform(Z)
    assert Z.dtype == np.float32 and back.dtype == np.float32
    assert np.isnan(Z[:5]).all() and np.isnan(back[:5]).all()
    x, z, err = X[5:].astype(float), np.abs(Z[5:].astype(float)), np.abs(back[5:] - X[5:])
    # The only rounding is Z (float32, relative eps/2) and the float32 output (|x| eps/2); the
    # float64 arithmetic adds nothing measurable. Propagated through x = z*std + mean (and expm1):
    spread = scaler.std * z * ((1 + x) if log1p else 1.0)
    assert (err <= EPS32 * (spread + x)).all()
    # standardised over the rows with expression
    Zs = Z[5:].astype(float)
    np.testing.assert_allclose(Zs.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Zs.std(0), 1.0, atol=1e-5)


def test_scaler_ignores_nan_rows_and_constant_genes():
    X = np.array([[1.0, 5.0], [3.0, 5.0], [np.nan, np.nan], [5.0, 5.0]], np.float32)
    scaler = GeneScaler().fit(X, genes=["A", "B"])
    np.testing.assert_allclose(scaler.mean, [3.0, 5.0])
    np.testing.assert_allclose(scaler.std, [np.sqrt(8 / 3), 1.0])  # constant gene: std 1
    np.testing.assert_array_equal(scaler.transform(X)[[0, 1, 3], 1], 0.0)
    with pytest.raises(ValueError, match="gene B"):
        GeneScaler().fit(np.array([[1.0, np.nan], [2.0, 3.0]]), genes=["A", "B"])


def test_scaler_dict_round_trip():
    X = _scaler_data()
    scaler = GeneScaler(log1p=True).fit(X, genes=[f"g{i}" for i in range(30)])
    d = scaler.to_dict()
    assert set(d) == {"log1p", "mean", "std", "genes"} and d["log1p"] is True
    assert all(type(v) is float for v in d["mean"] + d["std"])
    # h5ad hands lists back as arrays
    again = GeneScaler.from_dict({k: np.asarray(v) for k, v in d.items()})
    assert again.genes == d["genes"] and again.log1p
    np.testing.assert_array_equal(again.transform(X), scaler.transform(X))
    with pytest.raises(ValueError, match="std"):
        GeneScaler.from_dict({"log1p": False, "mean": [0.0]})


def test_scaler_log1p_refuses_negative_values_naming_the_gene():
    X = np.ones((4, 3))
    X[2, 1] = -0.5
    with pytest.raises(ValueError, match=r"'EGFR' \(index 1\).*-0.5"):
        GeneScaler(log1p=True).fit(X, genes=["TP53", "EGFR", "IDH1"])
    with pytest.raises(ValueError, match="index 1"):
        GeneScaler(log1p=True).fit(X)
    with pytest.raises(ValueError, match="not fitted"):
        GeneScaler().transform(X)


def test_standardize_stores_stats_and_leaves_x(phantom_adata, tmp_path):
    adata = phantom_adata.copy()
    before = adata.X.copy()
    assert pp.standardize(adata) is None
    scaler = stored_scaler(adata)
    np.testing.assert_array_equal(adata.X, before)  # the cohort stays on the user's scale
    rows = adata.obs[K.HAS_EXPRESSION].to_numpy(bool)
    assert (~rows).sum() == 5
    np.testing.assert_allclose(scaler.mean, before[rows].astype(float).mean(0), rtol=1e-12)
    stats = adata.uns[K.UNS][K.GENE_STATS]
    assert stats["genes"] == list(adata.var_names) and len(stats["mean"]) == 256
    back = read_cohort(write_cohort(adata, tmp_path / "c.h5ad"))
    again = GeneScaler.from_dict(back.uns[K.UNS][K.GENE_STATS])
    np.testing.assert_array_equal(again.transform(before), scaler.transform(before))


def test_log1p_in_place_once():
    adata = _cohort(np.array([[0.0, 1.0], [np.e - 1, 3.0]]))
    pp.log1p(adata)
    np.testing.assert_allclose(adata.X, [[0.0, np.log(2)], [1.0, np.log(4)]], rtol=1e-6)
    assert adata.uns[K.UNS][K.PROVENANCE]["log1p"] == "true"
    with pytest.raises(ValueError, match="already log1p"):
        pp.log1p(adata)
    neg = _cohort(np.array([[0.0, 1.0], [2.0, -3.0]]), genes=["TP53", "EGFR"])
    with pytest.raises(ValueError, match="'EGFR' of patient 'P001'"):
        pp.log1p(neg)


# --------------------------------------------------------------------------------------------
# differential expression


def test_rank_genes_recovers_planted_genes(de_cohort):
    res = _de(de_cohort, "cond", "A", log_base=2)
    assert sorted(res.index[res["selected"]]) == [f"G{j:03d}" for j in range(5)]
    assert list(res.columns) == ["log2fc", "pval", "padj", "selected"]
    assert res["padj"].is_monotonic_increasing
    np.testing.assert_allclose(res.loc[[f"G{j:03d}" for j in range(5)], "log2fc"], 3.0, atol=0.8)
    # 3 sd apart with 20 vs 20 samples: p ~ 1e-7 (perfect separation would give 1.5e-11)
    assert (res["pval"].iloc[:5] < 1e-5).all() and (res["padj"].iloc[:5] < 1e-3).all()
    null = res.drop(index=[f"G{j:03d}" for j in range(5)])
    assert not null["selected"].any() and null["padj"].min() > 0.05
    var = de_cohort.var
    for col in ("log2fc", "pval", "padj", "selected"):
        np.testing.assert_array_equal(var[f"rg_de_{col}"], res[col].reindex(var.index))
    params = de_cohort.uns[K.UNS]["rg_de"]
    assert params["n_selected"] == 5 and params["test"] == "mann-whitney rank-sum"
    assert (params["reference"], params["n_group"], params["n_reference"]) == ("rest", 20, 20)


def test_rank_genes_thresholds_and_log_base(de_cohort):
    # selection is the intersection: tiny padj but |log2fc| ~ 3 < 4 selects nothing
    strict = _de(de_cohort, "cond", "A", log_base=2, min_log2fc=4.0)
    assert strict["padj"].iloc[0] < 1e-3 and not strict["selected"].any()
    # natural-log data: the same mean difference is log2(e) times larger in log2 units
    ln = _de(de_cohort, "cond", "A", log_base=np.e)
    X = de_cohort.X.astype(float)
    diff = X[:20].mean(0) - X[20:].mean(0)
    np.testing.assert_allclose(ln["log2fc"].sort_index(), diff * np.log2(np.e), rtol=1e-9)
    with pytest.raises(ValueError, match="log_base must be"):
        _de(de_cohort, "cond", "A", log_base=1)


def test_rank_genes_linear_scale(de_cohort):
    linear = de_cohort.copy()
    linear.X = np.exp2(linear.X)
    res = _de(linear, "cond", "A", reference="B")
    # ratio of means of log-normals with equal variance is exactly 2**3 in expectation
    np.testing.assert_allclose(res.loc[[f"G{j:03d}" for j in range(5)], "log2fc"], 3.0, atol=0.8)
    assert res["selected"].sum() == 5
    # ranks are scale free: same p-values as on the log scale
    np.testing.assert_allclose(
        res["pval"].sort_index(),
        _de(de_cohort, "cond", "A", log_base=2)["pval"].sort_index(),
        rtol=1e-12,
    )


def test_bonferroni_is_more_conservative(de_cohort):
    bh = _de(de_cohort, "cond", "A", log_base=2)
    bonf = _de(de_cohort, "cond", "A", log_base=2, correction="bonferroni", key_added="bf")
    bonf = bonf.reindex(bh.index)
    assert (bonf["padj"] >= bh["padj"] - 1e-15).all()
    np.testing.assert_allclose(bonf["padj"], np.minimum(bh["pval"] * 200, 1.0), rtol=1e-12)
    assert "bf_padj" in de_cohort.var and de_cohort.uns[K.UNS]["bf"]["correction"] == "bonferroni"


def test_paired_test_beats_unpaired_on_patient_effects(caplog):
    rng = np.random.default_rng(1)
    n = 12
    base = rng.normal(10.0, 5.0, (n, 3))  # large between-patient variation
    tumour = base + rng.normal(0.0, 0.2, (n, 3))
    tumour[:, 0] += 1.0  # consistent within-pair shift, small against the patient spread
    X = np.vstack([base, tumour, rng.normal(10.0, 5.0, (1, 3))])  # + one unpaired tumour
    obs = {
        "tissue": ["normal"] * n + ["tumour"] * (n + 1),
        "patient": [f"pt{i}" for i in range(n)] * 2 + ["lonely"],
    }
    adata = _cohort(X, obs)
    unpaired = _de(adata, "tissue", "tumour", "normal", log_base=2)
    with caplog.at_level(logging.WARNING, logger="radiogenomics.pp"):
        paired = _de(adata, "tissue", "tumour", "normal", pair_by="patient", log_base=2)
    assert "P024" in caplog.text  # the unpaired sample is named
    assert adata.uns[K.UNS]["rg_de"]["test"] == "wilcoxon signed-rank"
    assert adata.uns[K.UNS]["rg_de"]["n_group"] == n
    # all 12 differences positive: exact two-sided p = 2 / 2**12
    assert paired.loc["G000", "pval"] == pytest.approx(2 / 2**12, rel=1e-9)
    assert unpaired.loc["G000", "pval"] > 0.1
    # mean within-pair difference (X is stored as float32)
    lfc = (tumour[:, 0] - base[:, 0]).mean()
    np.testing.assert_allclose(paired.loc["G000", "log2fc"], lfc, rtol=1e-4)
    adata.obs["mismatched"] = [f"n{i}" for i in range(n)] + [f"t{i}" for i in range(n + 1)]
    with pytest.raises(ValueError, match="pair_by 'mismatched': 0 complete pair"):
        _de(adata, "tissue", "tumour", "normal", pair_by="mismatched", log_base=2)
    with pytest.raises(ValueError, match=r"several group samples for id\(s\) \['tumour'\]"):
        _de(adata, "tissue", "tumour", "normal", pair_by="tissue", log_base=2)


def test_rank_genes_errors(de_cohort):
    with pytest.raises(ValueError, match=r"'nope' not in obs.*cond"):
        _de(de_cohort, "nope", "A")
    with pytest.raises(ValueError, match=r"group 'C'.*\['A', 'B'\]"):
        _de(de_cohort, "cond", "C", log_base=2)
    with pytest.raises(ValueError, match="reference 'Z'"):
        _de(de_cohort, "cond", "A", "Z", log_base=2)
    shifted = de_cohort.copy()
    shifted.X = shifted.X - 9.0
    with pytest.raises(ValueError, match="log_base"):
        _de(shifted, "cond", "A")
    small = de_cohort[:21].copy()
    with pytest.raises(ValueError, match=r"reference 'rest' of obs\['cond'\] has 1 sample"):
        _de(small, "cond", "A", log_base=2)
    holes = de_cohort.copy()
    holes.X[[3, 30]] = np.nan
    with pytest.raises(ValueError, match="P003, P030"):
        _de(holes, "cond", "A", log_base=2)
    holes.obs[K.HAS_EXPRESSION] = ~np.isin(np.arange(40), [3, 30])  # flagged: skipped
    assert _de(holes, "cond", "A", log_base=2)["selected"].sum() == 5


def test_rank_genes_on_phantom_skips_rows_without_expression(phantom_adata, tmp_path):
    adata = phantom_adata.copy()
    _de(adata, "sex", "F", log_base=2)
    params = adata.uns[K.UNS]["rg_de"]
    assert params["n_group"] + params["n_reference"] == 43
    assert np.isfinite(adata.var["rg_de_pval"]).all()
    back = read_cohort(write_cohort(adata, tmp_path / "de.h5ad"))  # uns stays h5ad-writable
    assert back.uns[K.UNS]["rg_de"]["n_selected"] == params["n_selected"]


def test_volcano(de_cohort, tmp_path):
    with pytest.raises(ValueError, match="pp.rank_genes"):
        pl.volcano(de_cohort)
    _de(de_cohort, "cond", "A", log_base=2)
    fig = pl.volcano(de_cohort, n_labels=3, save=tmp_path / "volcano.png")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert (tmp_path / "volcano.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert len(labels) == 3 and set(labels) <= {f"G{j:03d}" for j in range(5)}


# --------------------------------------------------------------------------------------------
# pathways


GMT = (
    "KEGG_hsa05214_GLIOMA\tGlioma hsa05214\tEGFR\tPTEN\tTP53\tNOTAGENE\n"
    "KEGG_hsa05224_BREAST_CANCER\tBreast cancer\tESR1\tTP53\t\n"  # trailing tab
    "\n"
    "HALLMARK_P53\tp53 pathway\tTP53\tCDKN1A\tMDM2\n"
)


def test_read_gmt(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text(GMT)
    sets = pp.read_gmt(path)
    assert sets == {
        "KEGG_hsa05214_GLIOMA": ["EGFR", "PTEN", "TP53", "NOTAGENE"],
        "KEGG_hsa05224_BREAST_CANCER": ["ESR1", "TP53"],
        "HALLMARK_P53": ["TP53", "CDKN1A", "MDM2"],
    }
    with pytest.raises(FileNotFoundError, match="missing.gmt"):
        pp.read_gmt(tmp_path / "missing.gmt")
    bad = tmp_path / "bad.gmt"
    bad.write_text("A\tdesc\tG1\nB\tonly a description\n")
    with pytest.raises(ValueError, match=r"bad.gmt, line 2"):
        pp.read_gmt(bad)
    dup = tmp_path / "dup.gmt"
    dup.write_text("A\td\tG1\nA\td\tG2\n")
    with pytest.raises(ValueError, match="'A' on lines 1 and 2"):
        pp.read_gmt(dup)


def test_pathway_genes(tmp_path, caplog):
    path = tmp_path / "sets.gmt"
    path.write_text(GMT)
    adata = _cohort(np.zeros((3, 5)), genes=["TP53", "MDM2", "EGFR", "GAPDH", "PTEN"])
    with caplog.at_level(logging.INFO, logger="radiogenomics.pp"):
        report = _pathways(adata, path, ["hsa05214", "p53"])
    assert "NOTAGENE" in caplog.text
    assert list(report.index) == ["KEGG_hsa05214_GLIOMA", "HALLMARK_P53"]
    assert report["n_genes"].tolist() == [4, 3]
    assert report["n_present"].tolist() == [3, 2]
    assert report["n_missing"].tolist() == [1, 1]
    assert report["missing"].tolist() == ["NOTAGENE", "CDKN1A"]
    assert adata.var["rg_pathways_selected"].tolist() == [True, True, True, False, True]
    stored = adata.uns[K.UNS]["rg_pathways"]
    assert stored["n_selected"] == 4 and stored["pathways"] == list(report.index)
    adata.write_h5ad(tmp_path / "p.h5ad")  # the report is h5ad-writable
    # a dict works too, and the default is every set
    assert len(_pathways(adata, pp.read_gmt(path))) == 3
    with pytest.raises(ValueError, match="matches 2 sets"):
        _pathways(adata, path, ["KEGG"])
    with pytest.raises(ValueError, match="close.*KEGG_hsa05214_GLIOMA"):
        _pathways(adata, path, ["KEGG_hsa05214_GLIOMAA"])


def test_pathway_genes_no_overlap_names_file_and_case(tmp_path):
    path = tmp_path / "mouse.gmt"
    path.write_text("GLIOMA\tGlioma\tEgfr\tPten\n")
    adata = _cohort(np.zeros((2, 3)), genes=["EGFR", "PTEN", "GAPDH"])
    with pytest.raises(
        ValueError, match=r"\['GLIOMA'\] from .*mouse\.gmt.*2 gene\(s\) match ignoring case"
    ):
        _pathways(adata, path)
    other = _cohort(np.zeros((2, 1)), genes=["GAPDH"])
    with pytest.raises(ValueError, match="data genes") as err:
        _pathways(other, path)
    assert "ignoring case" not in str(err.value)


@needs_shared
def test_glioma_pathway_on_tcga_gbm():
    from pathlib import Path

    from radiogenomics.data.manifest import build_cohort

    manifest = Path(__file__).resolve().parents[1] / "data_manifests" / "tcga_gbm.yaml"
    adata = build_cohort(manifest)
    report = _pathways(adata, GENESETS / "kegg2021_cancer5.gmt", ["Glioma"])
    row = report.loc["KEGG_hsa05214_GLIOMA"]
    # seen on the shared data: 75 genes in the set, 12 of them among the 840 ClaNC genes
    assert (row["n_genes"], row["n_present"], row["n_missing"]) == (75, 12, 63)
    genes = adata.var_names[adata.var["rg_pathways_selected"]].tolist()
    assert len(genes) == 12 and {"EGFR", "CDK6", "PDGFA"} <= set(genes)
    sub = pp.select_genes(adata, genes)
    assert sub.n_vars == 12 and sub.n_obs == 156
    hallmark = pp.read_gmt(GENESETS / "h.all.v7.0.symbols.gmt")
    assert len(hallmark) == 50


# --------------------------------------------------------------------------------------------
# subsetting


def test_select_genes_keeps_var_order_and_stats(phantom_adata):
    adata = phantom_adata.copy()
    pp.standardize(adata)
    genes = [adata.var_names[9], adata.var_names[2], adata.var_names[5]]
    sub = pp.select_genes(adata, genes)
    assert list(sub.var_names) == list(adata.var_names[[2, 5, 9]])
    assert sub.n_obs == adata.n_obs
    np.testing.assert_array_equal(sub.X, adata.X[:, [2, 5, 9]])
    stats, full = sub.uns[K.UNS][K.GENE_STATS], adata.uns[K.UNS][K.GENE_STATS]
    assert stats["genes"] == list(sub.var_names)
    assert stats["mean"] == [full["mean"][i] for i in (2, 5, 9)]
    assert len(full["mean"]) == 256  # the original is untouched
    with pytest.raises(ValueError, match="NOPE1, NOPE2"):
        pp.select_genes(adata, [genes[0], "NOPE1", "NOPE2"])


def test_highly_variable():
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.0, (30, 50))
    X[:, [7, 31, 12]] *= [10.0, 6.0, 4.0]
    X[:3] = np.nan
    adata = _cohort(X, {K.HAS_EXPRESSION: np.arange(30) >= 3})
    assert pp.highly_variable(adata, 3) == ["G007", "G031", "G012"]
    with pytest.raises(ValueError, match="n_top"):
        pp.highly_variable(adata, 51)
