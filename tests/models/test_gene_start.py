"""GeneGAN with `gene.start: gaussian`: the untrained model samples exactly the multivariate
Gaussian fitted by hand on its training patients, covariates included, and evaluate's
`MultivariateGaussian` baseline fitted on the same patients; the fit is saved with the weights
and comes back on load; the default stays the plain generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.covariance import LedoitWolf
from test_gene_gan import _config, _toy_cohort

from radiogenomics.data.cohort import make_cohort
from radiogenomics.evaluate.baselines import MultivariateGaussian, fit_gaussian
from radiogenomics.models.gene_gan import GeneGAN
from radiogenomics.models.gene_gan import repeated as gene_gan_repeated


def _gaussian_config(steps=60):
    cfg = _config(steps=steps)
    cfg.gene.start = "gaussian"
    return cfg


@pytest.fixture(scope="module")
def adata():
    return _toy_cohort()


def test_untrained_model_samples_the_hand_fitted_gaussian(adata):
    model = GeneGAN(adata, _gaussian_config())
    data = model.gene_data
    Z = data.expression[data.train].astype(np.float64)
    # the design by hand: intercept, group B (category 1 of A, B), standardised age
    codes, numeric = data.codes[data.train], data.numeric[data.train]
    design = np.column_stack([np.ones(len(Z)), codes[:, 0] == 1, numeric[:, 0]]).astype(float)
    coef = np.linalg.lstsq(design, Z, rcond=None)[0]
    # Ledoit-Wolf on the cohort's scale (the baseline's), then back to the standardised one
    std = model.scaler.std
    residuals = (Z - design @ coef) * std
    cov = LedoitWolf(assume_centered=True).fit(residuals).covariance_ * len(Z) / (len(Z) - 3)
    L = np.linalg.cholesky(cov / np.outer(std, std))
    # the same draw as sample(): covariate rows, then the noise; the Gaussian's z comes first
    n, seed = 300, 5
    obs = model.covariates_for(n, None, seed)
    c, u = model.encode_covariates(obs)
    noise = torch.randn(
        n, model.sampler.noise_features, generator=torch.Generator().manual_seed(seed)
    )
    z = noise[:, : len(model.genes)].numpy().astype(np.float64)
    D = np.column_stack([np.ones(n), c[:, 0] == 1, u[:, 0]]).astype(float)
    expected = model.scaler.inverse_transform((D @ coef + z @ L.T).astype(np.float32))
    synth = model.sample(n, seed=seed).adata
    np.testing.assert_allclose(synth.X, expected, rtol=1e-5, atol=1e-3)  # scale ~100
    # the group effect (+40 on genes 0-5) is the regression's: the covariates still work
    a = model.sample(400, {"group": "A"}, seed=1).adata.X
    b = model.sample(400, {"group": "B"}, seed=1).adata.X
    assert np.all(a[:, :6].mean(0) - b[:, :6].mean(0) > 30)


def test_fit_gaussian_is_the_baselines_fit(adata):
    """One fit for the baseline and the generator: the same coefficients and factor."""
    base = MultivariateGaussian(covariates=["group"]).fit(adata)
    design = np.column_stack([np.ones(adata.n_obs), adata.obs["group"] == "B"]).astype(float)
    coef, factor, shrinkage = fit_gaussian(np.asarray(adata.X), design)
    np.testing.assert_allclose(coef, base.coef_, atol=1e-9)
    np.testing.assert_allclose(factor, base.factor_, atol=1e-9)
    assert shrinkage == pytest.approx(base.shrinkage_) and 0 < shrinkage < 1
    with pytest.raises(ValueError, match="one design row per patient"):
        fit_gaussian(np.asarray(adata.X), design[:-1])


def _realish_cohort(n=45, n_genes=24, seed=3):
    """Expression like a real pathway's: genes on scales from 0.2 to 20 (Ledoit-Wolf is not
    scale-equivariant, so this is where a fit on standardised genes and one on the cohort's
    scale part), correlated through 3 programs, a 3-class subtype shifting 5 genes, and
    fewer patients than twice the genes (Ledoit-Wolf shrinkage ~0.1)."""
    rng = np.random.default_rng(seed)
    subtype = np.array(["a", "b", "c"])[np.arange(n) % 3]
    programs = rng.normal(size=(n, 3)) @ rng.normal(size=(3, n_genes))
    Z = (
        programs
        + rng.normal(size=(n, n_genes))
        + 1.5 * (subtype == "b")[:, None] * (np.arange(n_genes) < 5)
    )
    scale = np.exp(rng.uniform(np.log(0.2), np.log(20.0), n_genes))
    X = 8.0 + Z * scale
    ids = [f"p{i:03d}" for i in range(n)]
    expr = pd.DataFrame(X, index=ids, columns=[f"G{j}" for j in range(n_genes)])
    obs = pd.DataFrame({"subtype": subtype}, index=ids)
    return make_cohort(expr, obs, categorical=["subtype"])


def test_untrained_start_samples_the_multivariate_gaussian_baseline():
    """Fitted on the same patients (train.val_fraction 0: all of them), the untrained start
    and `MultivariateGaussian` are one distribution: the same covariance exactly (on the
    cohort's scale), and with the same covariate rows, 20000 draws each agree in mean within
    0.05 sd per gene (sampling sd of the difference 0.01), in std within 3% (0.7%) and in
    every correlation within 0.05 (<= 0.01)."""
    adata = _realish_cohort()
    cfg = _gaussian_config()
    cfg.train.val_fraction = 0.0
    model = GeneGAN(adata, cfg)
    assert len(model.gene_data.train) == adata.n_obs
    base = MultivariateGaussian().fit(adata)
    assert base.shrinkage_ > 0.05  # the case where the scale of the shrinkage matters
    std = model.scaler.std
    L = model.sampler.gaussian.factor.double().numpy() * std[:, None]
    np.testing.assert_allclose(L @ L.T, base.factor_ @ base.factor_.T, rtol=1e-4, atol=1e-4)

    n = 20000
    start = model.sample(n, seed=7).adata
    gauss = base.sample(start.obs[["subtype"]], seed=8)
    A, B = np.asarray(start.X, np.float64), np.asarray(gauss.X, np.float64)
    sd = B.std(0)
    np.testing.assert_array_less(np.abs((A.mean(0) - B.mean(0)) / sd), 0.05)
    np.testing.assert_allclose(A.std(0) / sd, 1.0, atol=0.03)
    np.testing.assert_allclose(np.corrcoef(A.T), np.corrcoef(B.T), atol=0.05)
    # per subtype too: the covariate regression is the same
    for value in ("a", "b", "c"):
        a, b = A[start.obs["subtype"] == value], B[gauss.obs["subtype"] == value]
        np.testing.assert_array_less(np.abs((a.mean(0) - b.mean(0)) / sd), 0.1)


def test_fit_gaussian_scale_shrinks_on_the_data_scale():
    """`scale`: the fit of X / scale is the fit of X divided by scale (coefficients and
    covariance), not Ledoit-Wolf on X / scale; without it, the two differ here."""
    adata = _realish_cohort()
    X = np.asarray(adata.X, np.float64)
    design = np.column_stack(
        [np.ones(len(X)), adata.obs["subtype"] == "b", adata.obs["subtype"] == "c"]
    ).astype(float)
    scale = X.std(0)
    coef, factor, shrinkage = fit_gaussian(X, design)
    coef_s, factor_s, shrinkage_s = fit_gaussian(X / scale, design, scale=scale)
    np.testing.assert_allclose(coef_s * scale, coef, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(factor_s * scale[:, None], factor, rtol=1e-9, atol=1e-9)
    assert shrinkage_s == pytest.approx(shrinkage)
    _, unscaled, _ = fit_gaussian(X / scale, design)
    cov_unscaled = (unscaled @ unscaled.T) * np.outer(scale, scale)
    assert np.abs(np.diag(cov_unscaled) / np.diag(factor @ factor.T) - 1).max() > 0.1
    with pytest.raises(ValueError, match="one positive number per gene"):
        fit_gaussian(X, design, scale=scale[:-1])


def test_fit_is_saved_and_loaded_and_training_moves_away_from_it(adata, tmp_path):
    model = GeneGAN(adata, _gaussian_config(steps=60))
    fitted = model.sampler.gaussian.factor.clone()
    assert fitted.abs().sum() > 0
    before = model.sample(50, seed=2).adata.X
    model.train(run_dir=tmp_path / "run", progress=False)
    # the fit stays (a buffer, not trained); the correction moved the samples
    assert torch.equal(model.sampler.gaussian.factor, fitted)
    after = model.sample(50, seed=2).adata.X
    assert not np.allclose(before, after)
    loaded = GeneGAN.load(tmp_path / "run")
    assert torch.equal(loaded.sampler.gaussian.factor, fitted)
    assert torch.equal(loaded.sampler.gaussian.coef, model.sampler.gaussian.coef)
    np.testing.assert_array_equal(loaded.sample(50, seed=2).adata.X, after)
    # loading with the cohort keeps the saved fit (it is not refitted)
    again = GeneGAN.load(tmp_path / "run", adata)
    assert torch.equal(again.generator.gaussian.factor, fitted)


def test_default_config_builds_the_plain_generator(adata):
    model = GeneGAN(adata, _config())
    assert model.generator.gaussian is None
    assert model.generator.noise_features == model.config.gene.n_noise
    assert not any("gaussian" in k for k in model.generator.state_dict())
    assert "directions" not in model.critic.state_dict()


def test_projection_critic_trains(adata):
    cfg = _gaussian_config(steps=20)
    cfg.gene.projection_std = 8
    model = GeneGAN(adata, cfg)
    assert model.critic.directions.shape == (len(model.genes), 8)
    model.train(progress=False)
    assert np.isfinite(model.sample(20).adata.X).all()


def test_selection_that_keeps_the_start_refits_it_on_all_the_models_patients(adata, monkeypatch):
    """train.select_start with a score only step 0 wins: the sampler is the Gaussian, fitted
    by hand on the training and held-out patients together, and no correction."""
    from radiogenomics.models import gene_gan

    calls = []

    def score(sampler):  # step 0 scores 1, every later evaluation 0
        calls.append(1)
        return 1.0 if len(calls) == 1 else 0.0

    monkeypatch.setattr(gene_gan, "gene_realism_score", lambda *args: score)
    cfg = _gaussian_config(steps=100)
    cfg.train.select_start = True
    model = GeneGAN(adata, cfg)
    summary = model.train(progress=False)
    assert summary["best_step"] == 0 and summary["best_score"] == 1.0 and len(calls) == 3
    data = model.gene_data
    rows = np.r_[data.train, data.held_out]
    assert len(data.held_out) > 0
    design = np.column_stack(
        [np.ones(len(rows)), data.codes[rows, 0] == 1, data.numeric[rows, 0]]
    ).astype(float)
    coef, factor, _ = fit_gaussian(data.expression[rows], design, scale=model.scaler.std)
    np.testing.assert_allclose(model.sampler.gaussian.coef.numpy(), coef, atol=1e-5)
    np.testing.assert_allclose(model.sampler.gaussian.factor.numpy(), factor, atol=1e-5)
    assert model.sampler.out.weight.abs().sum() == 0  # the untrained correction
    # the generator that trained on keeps its own fit, on the training patients alone
    assert not torch.allclose(model.generator.gaussian.coef, model.sampler.gaussian.coef)


def test_repeated_rows_reach_n_whole():
    rows = np.array([3, 5, 7])
    np.testing.assert_array_equal(gene_gan_repeated(rows, 7), np.tile(rows, 3))
    np.testing.assert_array_equal(gene_gan_repeated(rows, 6), np.tile(rows, 2))
    np.testing.assert_array_equal(gene_gan_repeated(rows, 0), rows)
    np.testing.assert_array_equal(gene_gan_repeated(rows, 2), rows)


def test_selection_score_draws_select_samples_patients(adata):
    """gene.select_samples: the score is the hand computation on the held-out patients' rows
    repeated (tiled) to at least that many synthetic patients, noise seeded with seed + 1."""
    from radiogenomics.evaluate.genes import dendrogram_correlation, distance_correlation
    from radiogenomics.models.gene_gan import gene_realism_score

    cfg = _gaussian_config()
    cfg.gene.select_samples, cfg.gene.select_dispersion = 100, 0.0
    model = GeneGAN(adata, cfg)
    data, sampler = model.gene_data, model.generator.eval()
    rows = np.tile(data.held_out, -(-100 // len(data.held_out)))
    assert len(rows) >= 100
    noise = torch.randn(
        len(rows), sampler.noise_features, generator=torch.Generator().manual_seed(cfg.seed + 1)
    )
    with torch.no_grad():
        fake = sampler(noise, *data.tensors(rows, "cpu")[1:])[0].numpy()
        got = gene_realism_score(data, cfg, "cpu")(sampler)
    real = data.expression[data.held_out]
    expected = 0.5 * (distance_correlation(real, fake) + dendrogram_correlation(real, fake))
    assert got == pytest.approx(expected, abs=1e-6)


def test_selection_score_reports_its_spread_over_held_out_resamples(adata):
    """train.select_margin > 0: the score also reports `score_sd`, by hand the sd (ddof 1) of
    the correlations' mean over 25 resamples with replacement of the held-out patients
    (numpy's generator seeded with seed + 1) against the same synthetic patients; the score
    itself is unchanged, and without the margin no spread is computed."""
    from radiogenomics.evaluate.genes import dendrogram_correlation, distance_correlation
    from radiogenomics.models.gene_gan import gene_realism_score

    cfg = _gaussian_config()
    cfg.gene.select_samples, cfg.gene.select_dispersion = 100, 0.0
    cfg.train.select_margin = 1.0
    model = GeneGAN(adata, cfg)
    data, sampler = model.gene_data, model.generator.eval()
    with torch.no_grad():
        value, extra = gene_realism_score(data, cfg, "cpu")(sampler)
        rows = np.tile(data.held_out, -(-100 // len(data.held_out)))
        noise = torch.randn(
            len(rows), sampler.noise_features, generator=torch.Generator().manual_seed(cfg.seed + 1)
        )
        fake = sampler(noise, *data.tensors(rows, "cpu")[1:])[0].numpy()
    real = data.expression[data.held_out]
    rng, n, boot = np.random.default_rng(cfg.seed + 1), len(real), []
    for _ in range(25):
        r = real[rng.integers(0, n, n)]
        boot.append(0.5 * (distance_correlation(r, fake) + dendrogram_correlation(r, fake)))
    assert set(extra) == {"score_sd"}
    assert extra["score_sd"] == pytest.approx(np.std(boot, ddof=1), abs=1e-9)
    assert extra["score_sd"] > 0
    cfg.train.select_margin = 0.0
    with torch.no_grad():
        plain = gene_realism_score(data, cfg, "cpu")(sampler)
    assert plain == pytest.approx(value, abs=1e-9)
