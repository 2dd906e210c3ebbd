"""Gene evaluation: known answers for each score, the baselines, the AnnData entry points, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from radiogenomics.data.cohort import make_cohort
from radiogenomics.data.phantom import make_phantom
from radiogenomics.evaluate import figures
from radiogenomics.evaluate.baselines import (
    IndependentGaussian,
    MultivariateGaussian,
    covariates_like,
    fit_baselines,
)
from radiogenomics.evaluate.genes import (
    CEILING,
    COVARIATE_METRICS,
    METRICS,
    covariate_fidelity,
    dendrogram_correlation,
    detection_auc,
    distance_correlation,
    evaluate_genes,
    gene_distance,
    kfold_scores,
    mmd,
    per_gene_distances,
    std_ratio,
    summarise,
    tstr,
)


def blocks(n: int, n_blocks: int = 5, size: int = 8, rho: float = 0.7, seed: int = 0):
    """Samples of a Gaussian whose genes come in blocks with within-block correlation `rho`."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, n_blocks)).repeat(size, axis=1)
    return np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((n, n_blocks * size))


# --------------------------------------------------------------------------------------------
# array-level known answers


def test_gene_distance_known_values_and_constant_gene():
    X = np.array([[1.0, 2.0, -1.0, 5.0], [2.0, 4.0, -2.0, 5.0], [3.0, 7.0, -3.0, 5.0]])
    D = gene_distance(X)
    assert D.shape == (4, 4) and np.isfinite(D).all()
    assert np.allclose(np.diag(D), 0.0)
    assert D[0, 2] == pytest.approx(2.0)  # perfectly anti-correlated
    assert D[0, 1] == pytest.approx(1 - np.corrcoef(X[:, 0], X[:, 1])[0, 1])
    assert np.allclose(D[3, :3], 1.0) and np.allclose(D[:3, 3], 1.0)  # constant gene


def test_identical_data_scores_perfectly():
    X = blocks(1000)
    assert distance_correlation(X, X) == pytest.approx(1.0, abs=1e-12)
    assert dendrogram_correlation(X, X) == pytest.approx(1.0, abs=1e-12)
    # unbiased MMD of a set with itself is 2 (mean off-diagonal kernel - 1) / n: in (-2/n, 0)
    assert -2 / 1000 < mmd(X, X) < 0
    per_gene = per_gene_distances(X, X, genes=[f"g{i}" for i in range(X.shape[1])])
    assert list(per_gene.columns) == ["ks", "ks_pval", "wasserstein"]
    assert per_gene.index[0] == "g0"
    assert np.allclose(per_gene["ks"], 0.0) and np.allclose(per_gene["wasserstein"], 0.0)
    shifted = per_gene_distances(X, X + 0.5)
    assert np.allclose(shifted["wasserstein"], 0.5)  # a pure shift moves every quantile by 0.5
    assert (shifted["ks"] > 0.15).all() and (shifted["ks_pval"] < 1e-6).all()


def test_mmd_by_hand():
    # X = {0, 1}, Y = {0, 2}, k = exp(-d^2 / 2): within X e^-1/2, within Y e^-2,
    # across (1 + e^-2 + 2 e^-1/2) / 4, so MMD^2 = (e^-2 - 1) / 2; the median pooled
    # distance (1, 2, 1, 1, 2) is 1
    want = 0.5 * np.exp(-2.0) - 0.5
    X, Y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    assert mmd(X, Y, bandwidth=1.0) == pytest.approx(want, abs=1e-12)
    assert mmd(X, Y) == pytest.approx(want, abs=1e-12)
    assert mmd(X, Y, bandwidth=2.0) != pytest.approx(want, abs=1e-3)


def test_structure_versus_noise_and_misplaced_genes():
    real = blocks(400, seed=0)
    noise = np.random.default_rng(1).standard_normal(real.shape)
    assert abs(distance_correlation(real, noise)) < 0.2
    assert abs(dendrogram_correlation(real, noise)) < 0.3
    # same marginals, correlations attached to the wrong genes
    shuffled = real[:, np.random.default_rng(2).permutation(real.shape[1])]
    assert distance_correlation(real, shuffled) < 0.2
    # an independent sample of the same distribution reproduces the structure
    again = blocks(400, seed=3)
    assert distance_correlation(real, again) > 0.9
    assert dendrogram_correlation(real, again) > 0.9


def test_std_ratio_known_answers():
    real = blocks(400, seed=0)
    assert std_ratio(real, real) == pytest.approx(1.0)
    # shrunken towards the mean, shifted, in other units of each gene: the ratio is the shrinkage
    assert std_ratio(real, 0.7 * real + 3.0) == pytest.approx(0.7)
    scaled = real * np.linspace(1.0, 5.0, real.shape[1])
    assert std_ratio(scaled, 1.2 * scaled) == pytest.approx(1.2)
    # a median over genes: a few wild genes do not move it
    wild = real.copy()
    wild[:, :3] *= 10.0
    assert std_ratio(real, wild) == pytest.approx(1.0)
    # genes constant in the reference are left out
    const = real.copy()
    const[:, 0] = 2.0
    assert std_ratio(const, 0.5 * real) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="constant"):
        std_ratio(np.ones((5, 3)), real[:5, :3])


def test_mmd_and_detection_auc_separate_shifted_data():
    a, b = blocks(300, seed=0), blocks(300, seed=1)
    shifted = b + 1.0
    assert abs(mmd(a, b)) < 0.01
    assert mmd(a, shifted) > 0.1
    assert detection_auc(a, b) == pytest.approx(0.5, abs=0.1)
    assert detection_auc(a, shifted) > 0.9
    assert detection_auc(a, shifted, classifier="forest") > 0.9
    with pytest.raises(ValueError, match="classifier"):
        detection_auc(a, b, classifier="svm")
    with pytest.raises(ValueError, match=r"\(300, 40\) vs \(300, 39\)"):
        mmd(a, b[:, :-1])


def labelled(n: int, seed: int, shift: float = 2.0):
    """Gene 0 is shifted by `shift` x the label index: the label is legible from expression."""
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b", "c"])[rng.integers(3, size=n)]
    X = rng.standard_normal((n, 6))
    X[:, 0] += shift * (y == "b") + 2 * shift * (y == "c")
    return X, y


def test_covariate_fidelity_and_tstr():
    Xtr, ytr = labelled(300, 0)
    Xte, yte = labelled(200, 1)
    Xs, ys = labelled(300, 2)
    faithful = covariate_fidelity(Xtr, ytr, Xte, yte, Xs, ys)
    assert faithful["real_accuracy"] > 0.7
    assert abs(faithful["gap"]) < 0.1
    # synthetic patients whose expression ignores their label: accuracy falls to chance (1/3)
    blind = covariate_fidelity(Xtr, ytr, Xte, yte, Xs, np.random.default_rng(3).permutation(ys))
    assert blind["synthetic_accuracy"] < 0.45 and blind["gap"] < -0.25
    with pytest.raises(ValueError, match=r"\['z'\]"):
        covariate_fidelity(Xtr, ytr, Xte, yte, Xs, np.where(ys == "a", "z", ys))
    good = tstr(Xs, ys, Xtr, ytr, Xte, yte)
    assert good["tstr_accuracy"] == pytest.approx(good["trtr_accuracy"], abs=0.05)
    assert good["trtr_balanced_accuracy"] > 0.7
    bad = tstr(Xs, np.random.default_rng(4).permutation(ys), Xtr, ytr, Xte, yte)
    assert bad["tstr_accuracy"] < 0.45 and bad["trtr_accuracy"] == good["trtr_accuracy"]


# --------------------------------------------------------------------------------------------
# baselines


def gaussian_cohort(n: int, seed: int, with_age: bool = False):
    """Block-correlated genes; group "B" adds 1.5 to the first 10 genes (and age to gene 0)."""
    X = blocks(n, n_blocks=5, size=8, rho=0.7, seed=seed)
    rng = np.random.default_rng(seed + 100)
    group = np.array(["A", "B"])[rng.integers(2, size=n)]
    age = rng.normal(60, 10, n)
    X[:, :10] += 1.5 * (group == "B")[:, None]
    obs = pd.DataFrame({"group": group}, index=[f"P{seed}_{i}" for i in range(n)])
    numeric = []
    if with_age:
        X[:, 0] += 0.2 * (age - 60)
        obs["age"], numeric = age, ["age"]
    expr = pd.DataFrame(X, index=obs.index, columns=[f"g{i}" for i in range(X.shape[1])])
    return make_cohort(expr, obs, categorical=["group"], numeric=numeric)


def test_baselines_follow_covariates_and_correlations():
    train, test = gaussian_cohort(300, 0), gaussian_cohort(300, 1)
    obs = covariates_like(train, 600, seed=0)
    assert set(obs["group"]) == {"A", "B"}
    mvn = MultivariateGaussian().fit(train).sample(obs, seed=1)
    ind = IndependentGaussian().fit(train).sample(obs, seed=1)
    assert mvn.X.dtype == np.float32 and list(mvn.var_names) == list(train.var_names)
    assert mvn.obs["has_expression"].all() and list(mvn.obs.index) == list(obs.index)
    d_mvn = distance_correlation(test.X, mvn.X)
    d_ind = distance_correlation(test.X, ind.X)
    assert d_mvn > 0.8 and d_mvn > d_ind + 0.2
    assert dendrogram_correlation(test.X, mvn.X) > dendrogram_correlation(test.X, ind.X)
    # the conditional means are the training group means (OLS on one categorical covariate)
    for model in (IndependentGaussian, MultivariateGaussian):
        fitted = model().fit(train)
        for g in ("A", "B"):
            want = train.X[train.obs["group"] == g].mean(axis=0)
            got = fitted.sample(pd.DataFrame({"group": [g] * 4000}), seed=2).X.mean(axis=0)
            assert np.abs(got - want).max() < 0.1, (model.__name__, g)


def test_baseline_numeric_covariate_and_errors():
    train = gaussian_cohort(400, 0, with_age=True)
    fitted = IndependentGaussian().fit(train)
    obs = pd.DataFrame({"group": ["A"] * 3000 + ["A"] * 3000, "age": [50.0] * 3000 + [70.0] * 3000})
    X = fitted.sample(obs, seed=0).X
    slope = (X[3000:, 0].mean() - X[:3000, 0].mean()) / 20
    assert slope == pytest.approx(0.2, abs=0.03)
    with pytest.raises(ValueError, match=r"\['Z'\].*'group'"):
        fitted.sample(pd.DataFrame({"group": ["A", "Z"], "age": [60.0, 60.0]}))
    with pytest.raises(ValueError, match="'age' is not an obs column"):
        fitted.sample(pd.DataFrame({"group": ["A"]}))
    with pytest.raises(ValueError, match="not fitted"):
        MultivariateGaussian().sample(obs)


# --------------------------------------------------------------------------------------------
# AnnData level on the phantom


@pytest.fixture(scope="module")
def phantom_split():
    adata = make_phantom(
        160, 2, size=32, n_genes=128, seed=3, frac_image_only=0.1, progress=False
    ).adata
    assert not adata.obs["has_expression"].all()  # NaN rows are present and must be dropped
    return adata, adata[:110].copy(), adata[110:].copy()


def test_evaluate_genes_on_phantom(phantom_split):
    _, train, test = phantom_split
    sets = fit_baselines(train, seed=0)
    # expression that ignores the subtype it claims: covariate scores fall towards chance (1/3)
    blind = sets["multivariate_gaussian"].copy()
    blind.obs["subtype"] = np.random.default_rng(0).permutation(blind.obs["subtype"].to_numpy())
    df = evaluate_genes(train, test, {**sets, "blind": blind}, covariate="subtype")
    assert df.loc["blind", "tstr_accuracy"] < 0.55 < df.loc[CEILING, "trtr_accuracy"]
    assert df.loc["blind", "covariate_synthetic_accuracy"] < 0.55
    df = df.drop("blind")
    assert list(df.index) == [CEILING, "independent_gaussian", "multivariate_gaussian"]
    assert list(df.columns) == list(METRICS) + list(COVARIATE_METRICS)
    assert df.notna().all().all()
    assert df.loc[CEILING, "distance_ratio"] == 1.0 and df.loc[CEILING, "dendrogram_ratio"] == 1.0
    assert df.loc[CEILING, "std_ratio"] == pytest.approx(1.0)
    # the multivariate Gaussian is as dispersed as the training patients by construction
    assert df.loc["multivariate_gaussian", "std_ratio"] == pytest.approx(1.0, abs=0.1)
    assert df.loc[CEILING, "tstr_accuracy"] == df.loc[CEILING, "trtr_accuracy"]
    assert (df["trtr_accuracy"] == df.loc[CEILING, "trtr_accuracy"]).all()
    # the full-covariance baseline keeps the phantom's gene programs, the diagonal one cannot
    mvn, ind = df.loc["multivariate_gaussian"], df.loc["independent_gaussian"]
    assert mvn["distance_ratio"] > 0.8 and ind["distance_ratio"] < 0.7
    # every set is z-scored with real_train's statistics: a change of units changes nothing
    scaled = [a.copy() for a in (train, test, sets["independent_gaussian"])]
    for a in scaled:
        a.X = a.X * 10.0 + 3.0
    units = evaluate_genes(*scaled)
    for col in ("mean_wasserstein", "mmd", "mean_ks"):
        assert units.loc["synthetic", col] == pytest.approx(ind[col], rel=1e-3, abs=1e-6), col
    # same genes in another order are aligned, not an error; other genes are
    shuffled = sets["multivariate_gaussian"][:, train.var_names[::-1]].copy()
    again = evaluate_genes(train, test, shuffled)
    assert again.loc["synthetic", "distance_corr"] == pytest.approx(mvn["distance_corr"])
    renamed = shuffled.copy()
    renamed.var_names = ["X" + g for g in renamed.var_names]
    with pytest.raises(ValueError, match="different genes"):
        evaluate_genes(train, test, {"bad": renamed})
    one_class = blind.copy()
    one_class.obs["subtype"] = "A"
    with pytest.raises(ValueError, match=r"set 'one_class': .*at least 2 classes"):
        evaluate_genes(train, test, {"one_class": one_class}, covariate="subtype")
    with pytest.raises(ValueError, match="covariate 'stage'"):
        evaluate_genes(train, test, sets, covariate="stage")


def test_kfold_scores_with_baselines(phantom_split):
    adata, _, _ = phantom_split
    df = kfold_scores(adata, fit_baselines, k=3, seed=0, stratify="subtype")
    assert df.index.value_counts().to_dict() == {
        CEILING: 3,
        "independent_gaussian": 3,
        "multivariate_gaussian": 3,
    }
    assert sorted(df["fold"].unique()) == [0, 1, 2]
    summary = summarise(df)
    assert summary.loc[CEILING, ("distance_ratio", "mean")] == 1.0
    assert summary.loc[CEILING, ("distance_ratio", "std")] == 0.0
    text = summarise(df, as_text=True)
    assert "±" in text.loc["multivariate_gaussian", "distance_corr"]


# --------------------------------------------------------------------------------------------
# figures and report


def test_figures_and_report(tmp_path):
    real, synth = blocks(120, seed=0), {"noise": np.random.default_rng(0).normal(size=(120, 40))}
    genes = [f"g{i}" for i in range(40)]
    paths = {}
    for name, make in {
        "distances": lambda p: figures.distance_matrices(real, synth, genes, max_genes=30, save=p),
        "dendrograms": lambda p: figures.dendrograms(real, synth, genes, n_genes=20, save=p),
        "distributions": lambda p: figures.gene_distributions(real, synth, genes, 6, save=p),
        "pca": lambda p: figures.embedding(real, synth, save=p),
    }.items():
        paths[name] = tmp_path / "fig" / f"{name}.png"
        fig = make(paths[name])
        assert isinstance(fig, Figure)
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'pca' or 'umap'"):
        figures.embedding(real, synth, method="tsne")
    results = pd.DataFrame(
        {"distance_corr": [0.91234567, 0.1]}, index=pd.Index([CEILING, "noise"], name="set")
    )
    out = figures.write_report(results, paths, tmp_path / "report.md", "Gene realism")
    text = out.read_text()
    assert text.startswith("# Gene realism")
    assert "| set | distance_corr |" in text and f"| {CEILING} | 0.9123 |" in text
    assert "![pca](fig/pca.png)" in text


# --------------------------------------------------------------------------------------------
# against the multivariate Gaussian


def test_versus_baseline_by_hand():
    from radiogenomics.evaluate.genes import versus_baseline

    table = pd.DataFrame(
        {
            "distance_ratio": [0.95, 0.99],  # higher is better: loses
            "dendrogram_ratio": [1.10, 1.00],  # wins
            "std_ratio": [1.9, 0.5],  # nearer 1 on a log scale: |log 1.9| < |log 0.5|, wins
            "detection_auc": [0.45, 0.60],  # nearer 0.5: wins
            "mmd": [0.02, 0.01],  # lower: loses
            "covariate_gap": [-0.1, 0.1],  # nearer 0: a tie, which does not beat
            "tstr_accuracy": [float("nan"), 0.5],  # NaN never beats
        },
        index=["GeneGAN", "multivariate Gaussian"],
    )
    vs = versus_baseline(table, "GeneGAN", "multivariate Gaussian")
    assert vs["beats"].to_dict() == {
        "distance_ratio": False, "dendrogram_ratio": True, "std_ratio": True,
        "detection_auc": True, "mmd": False, "covariate_gap": False, "tstr_accuracy": False,
    }  # fmt: skip
    assert vs.loc["std_ratio", "better when"] == "nearer 1"
    assert vs.loc["mmd", "GeneGAN"] == 0.02 and vs.loc["mmd", "multivariate Gaussian"] == 0.01
    with pytest.raises(ValueError, match="no set 'other'"):
        versus_baseline(table, "other", "multivariate Gaussian")


def test_reports_mark_where_the_gaussian_does_better(phantom_split, tmp_path):
    """The independent Gaussian as 'synthetic': the multivariate one keeps the gene programs,
    so the report marks the distance ratio NO; the k-fold report says it on the means."""
    from radiogenomics.evaluate.report import gaussian_verdict, gene_report, kfold_report

    _, train, test = phantom_split
    independent = IndependentGaussian().fit(train).sample(covariates_like(train, 110, 1), 1)
    table, report = gene_report(train, test, independent, tmp_path / "genes", privacy=False)
    text = report.read_text()
    assert "## Against the multivariate Gaussian (NO: the Gaussian does better)" in text
    against = text.split("## Against")[1].split("\n## ")[0]
    rows = {
        line.split("|")[1].strip(): line for line in against.splitlines() if line.startswith("| ")
    }
    assert "| NO |" in rows["distance_ratio"]
    assert "distance_ratio" in gaussian_verdict(table, "synthetic")
    assert "does NOT beat" in gaussian_verdict(table, "synthetic")
    scores = pd.concat([table.assign(fold=0), table.assign(fold=1)])
    folds = kfold_report(scores, tmp_path / "kfold.md").read_text()
    assert "'synthetic', mean over the folds" in folds and "does NOT beat" in folds
    assert "'independent Gaussian', mean over" not in folds
