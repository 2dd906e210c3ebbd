"""Adversarial losses. Each reads like its equation; scores are critic outputs of any shape."""

from __future__ import annotations

from collections.abc import Callable

import torch


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
    eps = torch.rand(shape, device=where, generator=generator).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        score = critic(x_hat).float()
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norm - 1) ** 2).mean()
