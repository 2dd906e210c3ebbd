"""Adversarial losses. Each reads like its equation; scores are critic outputs of any shape."""

from __future__ import annotations

from collections.abc import Callable

import torch

from radiogenomics._device import to_device


def critic_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """WGAN critic: E[D(fake)] - E[D(real)] (minimised)."""
    return fake_score.float().mean() - real_score.float().mean()


def generator_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """WGAN generator: -E[D(fake)]."""
    return -fake_score.float().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = eps * real + (1 - eps) * fake.

    `critic` maps a batch of samples (B, ...) to scores; bind any conditioning beforehand.
    eps ~ U(0, 1) per sample. Computed in fp32 with autocast off: in bf16 the squared norms of
    the gradients lose the precision the penalty needs.
    """
    real, fake = real.detach().float(), fake.detach().float()
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    # drawn where the generator lives (the loop's is on the CPU, for reproducible resumes)
    where = generator.device if generator is not None else real.device
    eps = to_device(torch.rand(shape, device=where, generator=generator), real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        score = critic(x_hat).float()
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norm - 1) ** 2).mean()


# Other objectives (ImageConfig.objective). Each pair is (critic loss, generator loss); the
# gradient penalty is added for wgan-gp only.


def lsgan_critic_loss(real_score, fake_score):
    """Least squares (Mao et al. 2017): E[(D(real) - 1)^2] + E[D(fake)^2], halved."""
    return 0.5 * (((real_score.float() - 1) ** 2).mean() + (fake_score.float() ** 2).mean())


def lsgan_generator_loss(fake_score):
    """Least squares: E[(D(fake) - 1)^2], halved."""
    return 0.5 * ((fake_score.float() - 1) ** 2).mean()


def hinge_critic_loss(real_score, fake_score):
    """Hinge: E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
    return torch.relu(1 - real_score.float()).mean() + torch.relu(1 + fake_score.float()).mean()


def dcgan_critic_loss(real_score, fake_score):
    """DCGAN (binary cross-entropy on logits): E[softplus(-D(real))] + E[softplus(D(fake))]."""
    return (
        torch.nn.functional.softplus(-real_score.float()).mean()
        + torch.nn.functional.softplus(fake_score.float()).mean()
    )


def dcgan_generator_loss(fake_score):
    """Non-saturating DCGAN generator: E[softplus(-D(fake))] = -E[log sigmoid(D(fake))]."""
    return torch.nn.functional.softplus(-fake_score.float()).mean()


OBJECTIVES = {
    "wgan-gp": (critic_loss, generator_loss),
    "lsgan": (lsgan_critic_loss, lsgan_generator_loss),
    "hinge": (hinge_critic_loss, generator_loss),  # the hinge generator loss is -E[D(fake)]
    "dcgan": (dcgan_critic_loss, dcgan_generator_loss),
}


def matching_loss(right_score, wrong_score, margin: float = 1.0):
    """Matching-aware ranking: relu(margin - (E[D(right pair)] - E[D(wrong pair)])).

    A margin, not another Wasserstein term: the gradient penalty constrains the critic along
    images only, so a raw E[D(wrong)] - E[D(right)] can grow without bound through the mask
    and gene inputs (measured: critic losses of -1e4 within 1500 steps); past the margin
    this term stops pushing.
    """
    return torch.relu(margin - (right_score.float().mean() - wrong_score.float().mean()))


def mismatched_scores(
    critic, images, masks, code, present, perm, use_mask: bool, distinct=None, trunk=None
) -> list:
    """Critic scores of matching-aware negatives (Reed et al. 2016; Xu et al. 2019): real
    images with the gene code of their partner `perm[i]` (only where both have expression) and,
    for mask-conditioned critics, with the partner's mask. Training scores them as fake, so
    the critic, and through it the generator, must use the genes and the mask. `distinct`
    (B,) bool leaves out rows whose partner is the same patient. `trunk`: the critic's
    `ImageCritic.trunk` of these images and masks, which the wrong-genes negatives share
    (only the code differs), so they cost the projection alone."""
    scores = []
    distinct = torch.ones_like(present) if distinct is None else distinct
    pair = present & present[perm] & distinct
    if code is not None and pair.any():
        if trunk is not None:
            scores.append(critic.head(tuple(t[pair] for t in trunk), code[perm][pair]))
        else:
            scores.append(critic(images[pair], masks[pair], code[perm][pair]))
    if use_mask and distinct.any():
        c = None if code is None else code[distinct]
        scores.append(critic(images[distinct], masks[perm][distinct], c))
    return scores


def partners(idx: torch.Tensor, masks: torch.Tensor, how: str) -> torch.Tensor:
    """The partner of each batch row for the matching-aware negatives.

    'random': the next row. 'similar_mask': the other patient of the batch whose lesion is
    closest in size. The mask is given to the generator, so what it must learn from the genes
    is what the mask does not say; a partner with a lesion of another size would let the
    critic tell wrong genes from the shape alone (it reads size programs off the mask), and
    the generator then answers size genes with intensity changes.
    """
    n = len(idx)
    if how == "random":
        return torch.roll(torch.arange(n), 1)
    if how != "similar_mask":
        raise ValueError(f"negatives must be 'random' or 'similar_mask'; got {how!r}")
    area = masks.flatten(1).float().sum(1).cpu()
    gap = (area[:, None] - area[None, :]).abs()
    gap[idx[:, None] == idx[None, :]] = float("inf")  # never the same patient (or row)
    perm = gap.argmin(1)
    alone = torch.isinf(gap.min(1).values)  # every row is this patient: no partner
    perm[alone] = torch.roll(torch.arange(n), 1)[alone]
    return perm
