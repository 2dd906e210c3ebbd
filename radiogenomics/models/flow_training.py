"""The flow backend's training (`image.backend: flow`): its steps for ImageGAN and for
JointGAN, on the same batches, engine, selection scores and checkpoints as the GAN's; the
losses are `train.flow_objectives`'."""

from __future__ import annotations

from radiogenomics.train.flow_objectives import (
    flow_critic_loss,
    flow_generator_loss,
    pair_mask_critic_loss,
    pair_mask_generator_loss,
)
from radiogenomics.train.loop import train_gan, train_generator


def train_image_flow(G, C, draw, img, train, *, shape=None, **run) -> tuple[dict, dict]:
    """Train an image side `G` (`nn.flow.FlowSide`) and its critic side `C` on the batches
    `draw(rng)` makes: the flow loss, and the mask generator against the mask critic
    (`train_gan`, `n_critic` mask critic steps per step); without a mask generator the flow
    loss alone (`train_generator`). `run`: the engine's other arguments (score, device, seed,
    run_dir, progress, fingerprint). Returns (summary, the weights to sample with)."""

    def generator_step(rng):
        return flow_generator_loss(G, C, draw(rng), img, rng=rng, shape=shape)

    if G.mask is None:
        return train_generator(G, generator_step, train, lr=img.lr, **run)

    def critic_step(rng):
        return flow_critic_loss(G, C, draw(rng), img, gp_weight=train.gp_weight, rng=rng)

    return train_gan(G, C, critic_step, generator_step, train, lr=img.lr, **run)


def joint_flow_losses(G, C, img, train, *, project=None, shape=None):
    """The image side's terms of a joint model with the flow backend, as
    `(image_critic(b, rng), image_generator(b, rng), pair_critic(b, p, rng),
    pair_generator(b, p, rng))`, each `(loss, logs)`: the flow side's (`flow_critic_loss`,
    `flow_generator_loss`) on real patients, and the mask critic's on fully synthetic ones."""

    # `real` (objectives.RealScores) is the GAN's shared real scores: the flow has none
    def image_critic(b, rng, real=None):
        return flow_critic_loss(G.side, C.side, b, img, gp_weight=train.gp_weight, rng=rng)

    def image_generator(b, rng):
        return flow_generator_loss(G.side, C.side, b, img, rng=rng, shape=shape)

    def pair_critic(b, p, rng, real=None):
        return pair_mask_critic_loss(G, C.side, b, p, img, gp_weight=train.gp_weight, rng=rng)

    def pair_generator(b, p, rng):
        return pair_mask_generator_loss(G, C.side, b, p, img, project=project, shape=shape)

    return image_critic, image_generator, pair_critic, pair_generator
