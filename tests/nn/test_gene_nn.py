"""The gene networks' Gaussian start (`GaussianStart`, `GeneGenerator(start="gaussian")`) and
the critic's random-projection std input, each against a hand computation."""

from __future__ import annotations

import pytest
import torch

from radiogenomics.nn.gene import GaussianStart, GeneCritic, GeneGenerator, projection_std


def _covariates(B=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack(
        [torch.randint(3, (B,), generator=g), torch.randint(2, (B,), generator=g)], 1
    )
    numeric = torch.randn(B, 1, generator=g)
    return codes, numeric


def _fit(n_genes=5, n_design=1 + 2 + 1 + 1, seed=1):
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(n_design, n_genes, generator=g)
    factor = torch.tril(torch.randn(n_genes, n_genes, generator=g))
    return coef, factor


def _by_hand(z, codes, numeric, coef, factor):
    """intercept, one-hot of covariate 0 less category 0 (2 columns), of covariate 1 less
    category 0 (1 column), the numeric covariate; then mean + L z."""
    B = len(z)
    design = torch.zeros(B, 5)
    for i in range(B):
        design[i, 0] = 1.0
        if codes[i, 0] > 0:
            design[i, codes[i, 0]] = 1.0  # columns 1-2: categories 1 and 2 of covariate 0
        if codes[i, 1] > 0:
            design[i, 3] = 1.0
        design[i, 4] = numeric[i, 0]
    return design @ coef + torch.stack([factor @ z[i] for i in range(B)])


def test_gaussian_start_is_mean_plus_factor_times_z():
    codes, numeric = _covariates()
    coef, factor = _fit()
    start = GaussianStart(5, [3, 2], 1)
    assert start.coef.shape == (5, 5) and start.factor.shape == (5, 5)
    start.set(coef, factor)
    z = torch.randn(10, 5, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(start(z, codes, numeric), _by_hand(z, codes, numeric, coef, factor),
                          atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="factor has shape"):
        start.set(coef, factor[:4])
    assert set(start.state_dict()) == {"coef", "factor"}  # saved with the weights


def test_untrained_generator_samples_exactly_the_gaussian():
    codes, numeric = _covariates()
    coef, factor = _fit()
    G = GeneGenerator(5, [3, 2], 1, n_noise=4, n_hidden=16, start="gaussian")
    assert G.noise_features == 5 + 4
    G.gaussian.set(coef, factor)
    noise = torch.randn(10, 9, generator=torch.Generator().manual_seed(3))
    x, hidden = G(noise, codes, numeric)
    assert hidden.shape == (10, 16)
    # the Gaussian's z is the noise's first n_genes columns; the correction is zero
    assert torch.allclose(x, _by_hand(noise[:, :5], codes, numeric, coef, factor), atol=1e-5)
    # the correction's last layer learns: one step moves the output, the hidden layer sees z
    x.square().sum().backward()
    assert G.out.weight.grad.abs().sum() > 0
    other = noise.clone()
    other[:, :5] += 1.0
    assert not torch.allclose(G(other, codes, numeric)[1], hidden)
    with pytest.raises(ValueError, match=r"expected \(batch, 9\)"):
        G(noise[:, :4], codes, numeric)


def test_noise_start_is_unchanged():
    """The default generator builds and draws as before: same parameters, noise width n_noise,
    no buffers."""
    torch.manual_seed(0)
    G = GeneGenerator(6, [2], 0, n_noise=4, n_hidden=8)
    assert G.noise_features == 4 and G.gaussian is None
    assert set(G.state_dict()) == {"covariates.embeddings.0.weight", "body.0.weight",
                                   "body.0.bias", "body.2.weight", "body.2.bias",
                                   "out.weight", "out.bias"}  # fmt: skip
    assert G.out.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="start"):
        GeneGenerator(6, start="copula")


def test_projection_std_by_hand():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    d = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    expected = torch.stack(
        [torch.sqrt(((x @ d[:, k] - (x @ d[:, k]).mean()) ** 2).mean() + 1e-8) for k in range(3)]
    )
    assert torch.allclose(projection_std(x, d), expected.expand(8, 3), atol=1e-5)


def test_critic_sees_the_covariance_through_projections():
    """Two batches with the same first sample and the same per-gene values (so the same
    per-gene std), one with correlated genes: a per-gene std critic cannot tell them apart,
    the projections can."""
    a = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    shuffled = torch.cat([a[:1], a[1:][torch.randperm(63, generator=torch.Generator())]])
    correlated, independent = torch.cat([a, a], 1), torch.cat([a, shuffled], 1)
    codes, num = torch.zeros(64, 0, dtype=torch.long), torch.zeros(64, 0)
    per_gene = GeneCritic(2, n_hidden=8, minibatch_std=64)
    with torch.no_grad():
        assert torch.allclose(per_gene(independent, codes, num)[0],
                              per_gene(correlated, codes, num)[0])  # fmt: skip
    torch.manual_seed(0)
    critic = GeneCritic(2, n_hidden=8, minibatch_std=0, projection_std=4)
    assert critic.body[0].in_features == 2 + 4
    assert torch.allclose(critic.directions.norm(dim=0), torch.ones(4))
    codes, num = torch.zeros(64, 0, dtype=torch.long), torch.zeros(64, 0)
    with torch.no_grad():
        s_ind = critic(independent, codes, num)
        s_cor = critic(correlated, codes, num)
    assert not torch.allclose(s_ind[0], s_cor[0])  # same first sample, other batch covariance
    assert set(critic.state_dict()) >= {"directions"}
    assert "directions" not in GeneCritic(2, n_hidden=8).state_dict()
    with pytest.raises(ValueError, match="projection_std"):
        GeneCritic(2, projection_std=-1)
