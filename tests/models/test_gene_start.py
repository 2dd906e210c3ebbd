"""GeneGAN with `gene.start: gaussian`: the untrained model samples exactly the multivariate
Gaussian fitted by hand on its training patients, covariates included; the fit is saved with
the weights and comes back on load; the default stays the plain generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from test_gene_gan import _config, _toy_cohort

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
    residuals = Z - design @ coef
    cov = LedoitWolf(assume_centered=True).fit(residuals).covariance_ * len(Z) / (len(Z) - 3)
    L = np.linalg.cholesky(cov)
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
    coef, factor, _ = fit_gaussian(data.expression[rows], design)
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
