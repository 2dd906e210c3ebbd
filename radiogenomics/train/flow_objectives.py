"""Training objectives of the flow backend (`image.backend: flow`, `nn.flow`), over the same
batches as the GAN's (`train.objectives.ImageBatch`, `PairBatch`).

The image network learns by the rectified-flow loss on real patients (`flow_loss`); the mask
generator as with the GAN, against the mask critic (`flow_critic_loss`,
`flow_generator_loss`). Fully synthetic patients (the joint model's `joint` mode) are scored
by the mask critic only (`pair_mask_critic_loss`, `pair_mask_generator_loss`): drawing their
images takes the whole ODE, too dear for every step.
"""

from __future__ import annotations

import torch

from radiogenomics.nn.flow import velocity_loss
from radiogenomics.train.losses import OBJECTIVES, gradient_penalty
from radiogenomics.train.objectives import (
    ImageBatch,
    PairBatch,
    _add_term,
    mask_critic_loss,
    mask_generator_terms,
    shape_association_loss,
    soft,
    synthesize,
)


def flow_loss(G, b: ImageBatch, img, *, rng: torch.Generator):
    """The rectified-flow loss (`nn.flow.velocity_loss`) of the batch's real images in their
    masks, from the batch's starting noise, at timesteps the scheduler draws (logit-normal,
    from the global RNG, which the engine seeds and checkpoints). A share
    `image.flow_gene_dropout` of the patients (drawn from `rng`) take the "no genes" code, as
    image-only patients do: the unconditional velocity classifier-free guidance needs."""
    present = b.present
    if img.flow_gene_dropout > 0:
        keep = torch.rand(len(present), generator=rng) >= img.flow_gene_dropout
        present = present & keep.to(present.device)
    code = G.code(b.expression, present)
    conditions = G.masks_of(code, b.noise, b.masks).conditions
    t = G.scheduler.sample_timesteps(b.images)
    loss = velocity_loss(G, b.images, conditions, code, b.noise.start, t)
    return loss, {"flow": loss.detach()}


def flow_critic_loss(G, C, b: ImageBatch, img, *, gp_weight: float, rng=None):
    """The critic side's loss: the mask critic's (`objectives.mask_critic_loss`), the only
    critic the flow backend has; None without a mask generator (nothing to criticise)."""
    if G.mask is None:
        return None
    code_c = C.code(b.expression, b.present)
    with torch.no_grad():
        code_g = G.code(b.expression, b.present)
    loss, logs = mask_critic_loss(G, C, b, img, code_g, code_c, gp_weight=gp_weight, rng=rng)
    logs["critic"] = loss.detach()
    return loss, logs


def flow_generator_loss(G, C, b: ImageBatch, img, *, rng: torch.Generator, shape=None):
    """The generator side's loss: `flow_loss` plus the mask generator's adversarial loss and
    (with `shape`) its shape association (`objectives.mask_generator_terms`)."""
    loss, logs = flow_loss(G, b, img, rng=rng)
    if G.mask is None:
        return loss, logs
    code_g = G.code(b.expression, b.present)
    code_c = C.code(b.expression, b.present)
    return mask_generator_terms(loss, logs, G, C, b, img, code_g, code_c, shape=shape)


def pair_mask_critic_loss(J, C, b: ImageBatch, p: PairBatch, img, *, gp_weight, rng=None):
    """The mask critic on real patients' (mask, expression) against fully synthetic ones'
    (generated expression and the mask drawn from its code), with the gradient penalty (on
    interpolated masks, conditioned on the real genes) and drift term for wgan-gp."""
    crit_loss = OBJECTIVES[img.objective][0]
    with torch.no_grad():
        s = synthesize(J, b, p, images=False)
    code_real = C.code(b.expression, b.present)
    code_fake = C.code(s.expression, s.present)
    real_m, fake_m = soft(b.masks[:, :1]), soft(s.soft_masks)
    real_ms = C.mask(real_m, None, code_real)
    loss = crit_loss(real_ms, C.mask(fake_m, None, code_fake))
    if img.objective == "wgan-gp":
        gp = gradient_penalty(lambda v: C.mask(v, None, code_real), real_m, fake_m, generator=rng)
        loss = loss + gp_weight * gp + img.drift_weight * real_ms.float().square().mean()
    return loss, {"critic_pair": loss.detach()}


def pair_mask_generator_loss(J, C, b: ImageBatch, p: PairBatch, img, *, project=None, shape=None):
    """The generator loss of fully synthetic patients' masks: the mask critic on (generated
    mask, expression) and (with `shape` and `project`) the masks' shape association with the
    generated expression's components; both reach the gene generator through the gene code."""
    gen_loss = OBJECTIVES[img.objective][1]
    s = synthesize(J, b, p, images=False)
    loss = gen_loss(C.mask(soft(s.soft_masks), None, C.code(s.expression, s.present)))
    logs = {"generator_pair": loss.detach()}
    if project is not None and shape is not None:
        c = project(s.expression.detach())  # cut from the graph, as the GAN's pair terms do
        term = shape_association_loss(shape, s.masks, c)
        loss = _add_term(loss, logs, "shape_assoc_pair", img.shape_association_weight, term)
    return loss, logs
