"""The gene GAN's dispersion: the critic's minibatch-std input, the generator's dispersion term,
the selection score's shrinkage penalty and their config keys."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from radiogenomics.config import Config, GeneConfig, load_config
from radiogenomics.models.gene_gan import GeneGAN, gene_realism_score
from radiogenomics.nn.gene import GeneCritic, GeneGenerator, minibatch_std
from radiogenomics.train.losses import gradient_penalty
from radiogenomics.train.objectives import (
    GeneBatch,
    dispersion_loss,
    gene_critic_loss,
    gene_generator_loss,
)


def test_minibatch_std_is_each_groups_per_gene_std():
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    s = minibatch_std(x, 4)  # 3 groups: samples i % 3
    assert s.shape == (12, 5)
    for g in range(3):
        expected = x[g::3].std(dim=0, unbiased=False)
        assert torch.allclose(s[g::3], expected.expand(4, 5), atol=1e-5)
    # a batch smaller than the group is one group; a ragged batch keeps groups >= group size
    assert torch.allclose(minibatch_std(x[:3], 4), x[:3].std(0, unbiased=False).expand(3, 5))
    ragged = minibatch_std(x[:11], 4)  # 2 groups, of 6 and 5 samples
    assert torch.allclose(ragged[0], x[:11][0::2].std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(ragged[1], x[:11][1::2].std(0, unbiased=False), atol=1e-5)
    assert torch.isfinite(minibatch_std(torch.ones(4, 3), 4)).all()  # no spread, finite


def test_critic_sees_the_spread_of_its_group():
    torch.manual_seed(0)
    x, codes, num = torch.randn(8, 6), torch.zeros(8, 1, dtype=torch.long), torch.zeros(8, 0)
    shrunk = x.clone()
    shrunk[1:] *= 0.3  # the other samples shrink; sample 0 stays
    plain = GeneCritic(6, [2], 0, n_hidden=16, minibatch_std=0)
    with torch.no_grad():
        assert plain(x, codes, num)[0].item() == pytest.approx(plain(shrunk, codes, num)[0].item())
    critic = GeneCritic(6, [2], 0, n_hidden=16, minibatch_std=4)
    assert critic.body[0].in_features == 2 * 6 + 2
    with torch.no_grad():
        assert critic(x, codes, num)[0].item() != pytest.approx(
            critic(shrunk, codes, num)[0].item()
        )
    # the default critic has the feature on
    assert GeneCritic(6).minibatch_std == GeneConfig().minibatch_std > 0
    with pytest.raises(ValueError, match="minibatch_std"):
        GeneCritic(6, minibatch_std=-1)


def test_gradient_penalty_covers_the_dispersion_path():
    """The statistic is not detached: under the penalty, sample i's gradient carries the
    scores of its group's other samples, and the penalty backpropagates to the critic."""
    torch.manual_seed(0)
    critic = GeneCritic(5, n_hidden=16, minibatch_std=4)
    codes, num = torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0)
    x = torch.randn(8, 5, requires_grad=True)
    (grad_own,) = torch.autograd.grad(critic(x, codes, num)[0], x)
    assert grad_own[2].abs().sum() > 0  # sample 2 is in sample 0's group (i % 2)
    assert grad_own[1].abs().sum() == 0  # sample 1 is not
    real, fake = torch.randn(8, 5), torch.randn(8, 5) * 0.5
    gp = gradient_penalty(lambda v: critic(v, codes, num), real, fake)
    assert torch.isfinite(gp)
    gp.backward()
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


def test_dispersion_loss_known_answers():
    real = torch.randn(64, 7, generator=torch.Generator().manual_seed(1))
    assert dispersion_loss(real + 3.0, real).item() == pytest.approx(0.0, abs=1e-6)
    assert dispersion_loss(0.5 * real, real).item() == pytest.approx(math.log(2) ** 2, rel=1e-4)
    # symmetric in the log: twice as wide costs as much as half as wide
    assert dispersion_loss(2 * real, real).item() == pytest.approx(math.log(2) ** 2, rel=1e-4)


def _batch(n_genes=6, B=32, seed=0) -> GeneBatch:
    g = torch.Generator().manual_seed(seed)
    return GeneBatch(
        torch.randn(B, n_genes, generator=g) * 2.0,
        torch.randint(2, (B, 1), generator=g),
        torch.zeros(B, 1),
        torch.randn(B, 8, generator=g),
    )


def test_generator_loss_keeps_its_signature_and_pushes_the_spread_up():
    torch.manual_seed(0)
    G = GeneGenerator(6, [2], 1, n_noise=8, n_hidden=32)
    C = GeneCritic(6, [2], 1, n_hidden=32)
    b = _batch()
    loss, logs, (fake, latent) = gene_generator_loss(G, C, b)
    assert fake.shape == (32, 6) and latent.shape == (32, 32) and "dispersion" in logs
    off, logs_off, _ = gene_generator_loss(G, C, b, dispersion_weight=0)
    assert "dispersion" not in logs_off
    weight = GeneConfig().dispersion_weight * 6**0.5  # sqrt(n_genes)
    assert loss.item() == pytest.approx(off.item() + weight * logs["dispersion"].item(), rel=1e-5)
    loss_c, logs_c = gene_critic_loss(G, C, b, gp_weight=10.0, rng=torch.Generator())
    assert torch.isfinite(loss_c) and "gp" in logs_c
    # the dispersion term alone widens a generator whose output is too narrow
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    before = G(b.noise, b.codes, b.numeric)[0].std(0).median().item()
    for _ in range(50):
        opt.zero_grad()
        dispersion_loss(G(b.noise, b.codes, b.numeric)[0], b.expression).backward()
        opt.step()
    after = G(b.noise, b.codes, b.numeric)[0].std(0).median().item()
    assert before < 1.0 and after > 1.5, (before, after)


def test_defaults_are_on_and_agree_with_the_shared_functions():
    g = GeneConfig()
    assert g.minibatch_std > 0 and g.dispersion_weight > 0 and g.select_dispersion > 0
    sig = inspect.signature(gene_generator_loss).parameters
    assert sig["dispersion_weight"].default == g.dispersion_weight
    assert inspect.signature(GeneCritic).parameters["minibatch_std"].default == g.minibatch_std
    cfg = load_config(None, ["gene.minibatch_std=0", "gene.dispersion_weight=0"])
    assert cfg.gene.minibatch_std == 0 and cfg.gene.dispersion_weight == 0


@pytest.mark.parametrize(
    "override",
    ["gene.minibatch_std=-1", "gene.dispersion_weight=-0.5", "gene.select_dispersion=-1"],
)
def test_dispersion_config_errors_name_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_selection_score_penalises_a_shrunken_sampler():
    from tests.models.test_gene_gan import _toy_cohort

    cfg = Config()
    cfg.gene.n_noise, cfg.gene.n_hidden = 8, 32
    model = GeneGAN(_toy_cohort(n=80), cfg)
    torch.manual_seed(0)
    G = GeneGenerator(12, [2], 1, n_noise=8, n_hidden=32).eval()

    class Shrunk(torch.nn.Module):
        noise_features = G.noise_features  # the width of the noise a sampler reads

        def forward(self, *args):
            z, h = G(*args)
            return 0.5 * z, h  # gene-gene correlations unchanged, half the spread

    score = gene_realism_score(model.gene_data, model.config, model.device)
    with torch.no_grad():
        full, shrunk = score(G), score(Shrunk())
    assert shrunk < full - 0.5 * math.log(2)
    model.config.gene.select_dispersion = 0.0  # correlations alone cannot tell them apart
    plain = gene_realism_score(model.gene_data, model.config, model.device)
    with torch.no_grad():
        assert plain(Shrunk()) == pytest.approx(plain(G), abs=1e-9)
    assert np.isfinite(full)
