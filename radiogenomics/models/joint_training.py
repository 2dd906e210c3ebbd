"""JointGAN's training: its batches, the steps of each mode, and the held-out score that picks
the weights. The losses are the shared objectives (`train.objectives`): the gene, image and
mask critics of GeneGAN and ImageGAN, plus the fully synthetic patients' pair terms.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from radiogenomics.models.gene_gan import gene_batches
from radiogenomics.models.image_training import (
    GeneComponents,
    association_references,
    aux_projection,
    batch_sampler,
    nets_channels_last,
    realism_score,
)
from radiogenomics.train import augment as A
from radiogenomics.train import distributed as D
from radiogenomics.train.loop import train_gan
from radiogenomics.train.objectives import (
    PairBatch,
    RealScores,
    gene_critic_loss,
    gene_generator_loss,
    image_critic_loss,
    image_generator_loss,
    pair_critic_loss,
    pair_generator_loss,
)

log = logging.getLogger(__name__)
MIN_SCORED = 8  # held-out paired patients needed for the joint Frechet score


def _sum(*parts):
    """Add (loss, logs) pairs, skipping None."""
    parts = [p for p in parts if p is not None]
    loss = sum(p[0] for p in parts)
    logs = {}
    for p in parts:
        logs.update(p[1])
    return loss, logs


def _named(part):
    """The gene side's logs as gene_*: the image side logs the same names."""
    loss, logs = part
    return loss, {f"gene_{k}": v for k, v in logs.items()}


def make_steps(model, aug=None):
    """`(critic_step, generator_step)` of `model`'s mode, each `step(rng) -> (loss, logs)`
    drawing its own batches: the sum of the gene, image and (joint mode) pair terms; `aug`
    (`train.augment.Augmenter`) augments what the image and mask critics see."""
    img, t, device = model.config.image, model.config.train, model.device
    pair_weight = model.config.joint.pair_weight
    G, C = model.generator.to(device), model.critic.to(device)
    gene_batch = gene_batches(model.gene_data, model.config, device, G.gene.noise_features)
    gene_critic, gene_generator = gene_steps(model, gene_batch)

    def pair_batch(rng) -> PairBatch:
        # covariates of training patients with expression: what sampling draws from
        b = gene_batch(rng)
        return PairBatch(b.codes, b.numeric, b.noise)

    data = model.image_data
    nets_channels_last(device, t.channels_last, data.images.ndim, G.side, C.side)
    draw = batch_sampler(
        data, img, t.batch_size, G.side, C.side, device, channels_last=t.channels_last
    )
    shape, appearance = association_references(data, img, device)
    joint = model.mode == "joint" and pair_weight > 0
    project = None
    if joint and any(x is not None for x in (C.side.regressor, shape, appearance)):
        Zt, pt = data.expression[data.train], data.present[data.train]
        project = aux_projection(Zt, pt, img.gene_aux_components)

    if img.backend == "flow":
        from radiogenomics.models.flow_training import joint_flow_losses

        image_critic, image_generator, pair_critic, pair_generator = joint_flow_losses(
            G, C, img, t, project=project, shape=shape
        )
    else:

        def image_critic(b, rng, real=None):
            return image_critic_loss(
                G.side, C.side, b, img, gp_weight=t.gp_weight, rng=rng, augment=aug,
                real_out=real,
            )  # fmt: skip

        def image_generator(b, rng):
            return image_generator_loss(
                G.side, C.side, b, img, shape=shape, appearance=appearance, augment=aug, rng=rng
            )

        def pair_critic(b, p, rng, real=None):
            return pair_critic_loss(
                G, C.side, b, p, img, gp_weight=t.gp_weight, rng=rng, augment=aug, real=real
            )

        def pair_generator(b, p, rng):
            return pair_generator_loss(
                G, C.side, b, p, img, project=project, shape=shape, appearance=appearance,
                augment=aug, rng=rng,
            )  # fmt: skip

    def critic_step(rng):
        gene, pair = gene_critic(rng), None
        b = draw(rng)
        real = RealScores()  # the image and pair terms score the real batch once

        image = image_critic(b, rng, real)
        if joint:
            loss, logs = pair_critic(b, pair_batch(rng), rng, real)
            pair = (pair_weight * loss, logs)
        loss, logs = _sum(gene, image, pair)
        logs["critic"] = loss.detach()
        return loss, logs

    def generator_step(rng):
        gene, pair = gene_generator(rng), None
        b = draw(rng)
        image = image_generator(b, rng)
        if joint:
            loss, logs = pair_generator(b, pair_batch(rng), rng)
            pair = (pair_weight * loss, logs)
        loss, logs = _sum(gene, image, pair)
        logs["generator"] = loss.detach()
        return loss, logs

    return critic_step, generator_step


def gene_steps(model, draw=None):
    """`(critic_step, generator_step)` of the gene side alone (the extra gene updates, and
    the gene terms of `make_steps`), drawing batches with `draw` (default: a new sampler)."""
    t = model.config.train
    G, C = model.generator, model.critic
    if draw is None:
        draw = gene_batches(model.gene_data, model.config, model.device, G.gene.noise_features)

    def critic_step(rng):
        return _named(gene_critic_loss(G.gene, C.gene, draw(rng), gp_weight=t.gp_weight, rng=rng))

    def generator_step(rng):
        loss, logs, _ = gene_generator_loss(
            G.gene, C.gene, draw(rng), dispersion_weight=model.config.gene.dispersion_weight
        )
        return _named((loss, logs))

    return critic_step, generator_step


def fit_joint(model, run_dir, progress: bool) -> dict:
    """Train `model` (a JointGAN) on its training patients with the engine; keep the weights
    best on the held-out score; save into `run_dir` (rank 0)."""
    cfg, img, t, device = model.config, model.config.image, model.config.train, model.device
    G, C = model.generator, model.critic
    aug = A.from_config(img).to(device)
    critic_step, generator_step = make_steps(model, aug)
    j = cfg.joint
    extra = None
    if j.gene_steps:
        extra = (*gene_steps(model), j.gene_steps, j.gene_n_critic)
    lr_gene = cfg.gene.lr or t.lr
    lr_image = img.lr or t.lr
    summary, weights = train_gan(
        G, C, critic_step, generator_step, t,
        groups_g=[(G.gene, lr_gene), (G.side, lr_image)],
        groups_c=[(C.gene, cfg.gene.lr or t.lr_critic or t.lr),
                  (C.side, img.lr or t.lr_critic or t.lr)],
        extra=extra, state=A.checkpointed(aug), score=selection_score(model), device=device,
        seed=cfg.seed, run_dir=run_dir, progress=progress, fingerprint=model._fingerprint,
    )  # fmt: skip
    model.sampler.load_state_dict(weights)
    model.sampler.to(device).eval()
    model.trained = True
    n_val = len(model.gene_data.held_out) + len(model.image_data.held_out)
    model.meta["summary"] = {**summary, "n_train": model.meta["n_train"], "n_val": int(n_val)}
    if run_dir is not None and D.is_main():
        model.save(run_dir)
    return summary


# ------------------------------------------------------------------------------------------
# held-out score for model selection


def selection_score(model):
    """`score(sampler)` for the engine: `paired_score` on fully synthetic patients; without
    enough held-out pairs (an unpaired cohort, e.g. combined_breast) in separate mode, the
    image side's score (`image_training.realism_score`). None (keep the last weights) when
    too few patients are held out."""
    images = model.image_data
    paired = images.held_out[images.present[images.held_out].numpy()]
    if len(paired) >= MIN_SCORED:
        return paired_score(model, paired)
    if model.mode == "separate" and len(images.held_out) >= 4:
        log.warning("fewer than %d held-out paired patients: selecting on images", MIN_SCORED)
        return realism_score(
            images, model.config, phantom=bool(model.meta.get("phantom")),
            device=model.device, side=lambda s: s.side,
        )  # fmt: skip
    return _none("paired")


def _none(what: str):
    log.warning("too few held-out %s patients to score: keeping the last weights", what)
    return None


def paired_score(model, val_idx: np.ndarray):
    """Minus the Frechet distance between held-out real patients and as many fully synthetic
    ones (their covariates, fixed noise), each patient a vector of image features (measured
    in its mask: the phantom's lesion features, or the general radiomic ones) beside its
    expression's principal components (fitted on the held-out patients, unit variance). It
    scores the genes' spread, the masks and images, and how they go together, at once."""
    from radiogenomics.evaluate.images import frechet_distance, radiomic_table
    from radiogenomics.radiomap.features import lesion_feature_table

    data = model.image_data
    idx = torch.as_tensor(val_idx)
    x, m = data.images[idx][:, :1].numpy(), data.masks[idx].numpy()
    if model.meta.get("phantom"):
        features = lambda v, mask: lesion_feature_table(v, mask).to_numpy()  # noqa: E731
    else:
        features = lambda v, mask: radiomic_table(v, mask, progress=False).to_numpy()  # noqa: E731
    real_f = features(x, m)
    mu, sd = np.nanmean(real_f, 0), np.nanstd(real_f, 0) + 1e-8
    real_z = data.expression[idx].numpy()
    pcs = GeneComponents.fit(real_z, 8)
    real = np.c_[(real_f - mu) / sd, pcs.transform(real_z)]
    obs = model._covariate_frame(data.rows[val_idx])

    def score(sampler) -> float:
        s = model.synthesize(obs, seed=model.config.seed + 1, sampler=sampler)
        fake_f = features(s.images[:, :1].numpy(), s.masks.numpy())
        fake = np.c_[(fake_f - mu) / sd, pcs.transform(s.expression.numpy())]
        ok_r, ok_f = np.isfinite(real).all(1), np.isfinite(fake).all(1)  # empty masks: NaN
        if ok_r.sum() < 4 or ok_f.sum() < 4:
            return -np.inf
        return -frechet_distance(real[ok_r], fake[ok_f])

    return score
