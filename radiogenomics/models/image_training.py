"""ImageGAN's training: the critic and generator steps, and the held-out score that picks the
weights. Kept apart from `image_gan` (the model's API) so each file reads on its own.

One critic step: WGAN-GP (or least squares / hinge) on real vs generated images from the same
masks and genes, matching-aware negatives (a real image with another patient's genes or mask),
the mask critic when the model generates masks, and the gene read-back head on real images.
One generator step: the adversarial loss, the background L1 (Xu et al.), the read-back of the
genes from the generated images, and the mask generator's adversarial loss when there is one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from radiogenomics.nn.image import mask_features
from radiogenomics.train.losses import (
    OBJECTIVES,
    gradient_penalty,
    matching_loss,
    mismatched_scores,
    partners,
)

log = logging.getLogger(__name__)
# Held-out patients with expression needed for the joint distance: its covariance has the six
# lesion features plus up to 8 gene components, and a handful of rows cannot estimate it.
MIN_JOINT = 16


def training_steps(model, train_idx: np.ndarray):
    """`(critic_step, generator_step)` for `fit_model`, over the patients `train_idx`: each
    takes a torch.Generator and returns `(loss, logs)`."""
    cfg, img, device = model.config, model.config.image, model.device
    to = lambda t: t[train_idx].to(device)  # noqa: E731
    images = model._channels_last(to(model._images))
    # mask and relative depth, once: the networks would otherwise recompute the depth
    # (a distance transform) at every call; a flip keeps the depth of the flipped mask
    masks = model._masks[train_idx]
    masks = model._channels_last((mask_features(masks) if img.use_mask else masks).to(device))
    Z, present = to(model._Z), to(model._present)
    k = img.gene_aux_components
    targets = (
        aux_targets(Z.cpu(), present.cpu(), k)
        if model.critic.regressor is not None
        else torch.zeros(len(Z), k)
    ).to(device)
    if device.type == "cuda":
        fmt = torch.channels_last if images.ndim == 4 else torch.channels_last_3d
        model.generator.to(memory_format=fmt)
        model.critic.to(memory_format=fmt)
    G, C, B = model.generator, model.critic, cfg.train.batch_size
    crit_loss, gen_loss = OBJECTIVES[img.objective]
    n_train = len(train_idx)

    def batch(rng):
        idx = torch.randint(n_train, (B,), generator=rng)
        x, m = images[idx.to(device)], masks[idx.to(device)]
        flip = torch.rand(B, generator=rng) < 0.5  # the same left-right flip of image and mask
        if flip.any():
            f = flip.to(device).view(B, *[1] * (x.ndim - 1))
            x = torch.where(f, x.flip(-1), x)
            m = torch.where(f, m.flip(-1), m)
        noise = torch.randn(B, img.n_noise, generator=rng).to(device)
        maps = G.image.noise_maps(B, generator=rng, device=device)
        mask_maps = None if G.mask is None else G.mask.noise_maps(B, generator=rng, device=device)
        perm = partners(idx, m[:, 0], img.negatives).to(device)
        # drawn with replacement: a partner may be the same patient, which is no negative
        distinct = (idx != idx[perm.cpu()]).to(device)
        p, i = present[idx.to(device)], idx.to(device)
        negatives = (perm.to(device), distinct)
        return x, m, Z[i], p, noise, (maps, mask_maps), negatives, targets[i]

    def generate(x, m, code, noise, maps):
        bg = model.background_of(x, m[:, :1]) if img.use_background else None
        return G.image(m if img.use_mask else None, code, noise, bg, maps[0])

    def soft(mask):  # masks as the mask critic sees them: real ones slightly blurred
        pool = F.avg_pool2d if mask.ndim == 4 else F.avg_pool3d
        return pool(mask, 3, stride=1, padding=1, count_include_pad=False)

    def read_back(image, m, t, p):  # squared error of the genes read from the images
        if C.regressor is None or not p.any():
            return None
        return (C.regressor(image, m).float() - t).square()[p].mean()

    def critic_step(rng):
        x, m, z, p, noise, maps, (perm, distinct), t = batch(rng)
        code_c = C.code(z, p)
        with torch.no_grad():
            code_g = G.code(z, p)
            fake = generate(x, m, code_g, noise, maps)
        real_s = C.image(x, m, code_c)
        loss = crit_loss(real_s, C.image(fake, m, code_c))
        logs = {"critic": 0.0}
        if img.objective == "wgan-gp":
            gp = gradient_penalty(lambda v: C.image(v, m, code_c), x, fake, generator=rng)
            drift = real_s.float().square().mean()
            loss = loss + cfg.train.gp_weight * gp + img.drift_weight * drift
            logs["gp"] = gp.item()
        if img.mismatch_weight > 0:
            negatives = mismatched_scores(
                C.image, x, m, code_c, p, perm, img.use_mask, distinct=distinct
            )
            for s in negatives:
                loss = loss + img.mismatch_weight * matching_loss(real_s, s)
        if G.mask is not None:
            with torch.no_grad():
                fake_m = G.mask(code_g, noise, maps[1])
            real_ms = C.mask(soft(m[:, :1]), None, code_c)
            loss_m = crit_loss(real_ms, C.mask(soft(fake_m), None, code_c))
            if img.objective == "wgan-gp":
                loss_m = loss_m + img.drift_weight * real_ms.float().square().mean()
                gp_m = gradient_penalty(
                    lambda v: C.mask(v, None, code_c),
                    soft(m[:, :1]),
                    soft(fake_m),
                    generator=rng,
                )
                loss_m = loss_m + cfg.train.gp_weight * gp_m
            loss = loss + loss_m
            logs["critic_mask"] = loss_m.item()
        aux = read_back(x, m, t, p)  # the regressor learns from real images only
        if aux is not None:
            loss = loss + aux
            logs["gene_aux_real"] = aux.item()
        logs["critic"] = loss.item()
        return loss, logs

    def generator_step(rng):
        x, m, z, p, noise, maps, _, t = batch(rng)
        code_g = G.code(z, p)
        code_c = C.code(z, p)
        fake = generate(x, m, code_g, noise, maps)
        loss = gen_loss(C.image(fake, m, code_c))
        logs = {"generator": loss.item()}
        if img.use_background and img.background_l1 > 0:
            keep = 1 - model.hole(m[:, :1])  # 1 outside the cut-out lesion
            l1 = ((fake - x).abs() * keep).sum() / keep.sum().clamp_min(1)
            loss = loss + img.background_l1 * l1
            logs["background_l1"] = l1.item()
        aux = read_back(fake, m, t, p)
        if aux is not None:
            loss = loss + img.gene_aux_weight * aux
            logs["gene_aux"] = aux.item()
        if G.mask is not None:
            loss_m = gen_loss(C.mask(soft(G.mask(code_g, noise, maps[1])), None, code_c))
            loss = loss + loss_m
            logs["generator_mask"] = loss_m.item()
        return loss, logs

    return critic_step, generator_step


def realism_score(model, val_idx: np.ndarray):
    """Held-out score for model selection: minus the Frechet distance between the lesion
    features (size ... necrosis, radiomap.features) of the held-out patients' real images
    and images generated from their masks and genes, with fixed noise (unconditional
    models: minus the whole-patch radiomic FD). With genes, the distance is joint with the
    genes' principal components (`gene_components`) over the patients with expression."""
    from radiogenomics.evaluate.images import frechet_distance
    from radiogenomics.radiomap.features import lesion_feature_table

    idx = torch.as_tensor(val_idx)
    x, m = model._images[idx], model._masks[idx]
    z, p = model._Z[idx], model._present[idx]
    if not model.config.image.use_mask:
        # nothing puts the lesion of a generated image inside a real mask: compare whole
        # patches by their radiomic features instead
        from radiogenomics.evaluate.images import radiomic_table

        whole = np.ones_like(m[:, :1].numpy())
        real = radiomic_table(x[:, :1].numpy(), whole, progress=False).to_numpy()
        table = lambda v: radiomic_table(v, whole, progress=False).to_numpy()  # noqa: E731
    else:
        real = lesion_feature_table(x[:, :1].numpy(), m.numpy()).to_numpy()
        table = lambda v: lesion_feature_table(v, m.numpy()).to_numpy()  # noqa: E731

    genes = gene_components(z[p].numpy()) if model.genes else None
    if genes is not None and int(p.sum()) < MIN_JOINT:
        # e.g. TCGA-LGG: 12 held-out patients, 3 with expression, gave -inf at every
        # evaluation, so no weights were ever selected
        log.warning(
            "only %d of the %d held-out patients have expression (the joint distance needs "
            ">= %d): weights are selected on the image features alone",
            int(p.sum()),
            len(val_idx),
            MIN_JOINT,
        )
        genes = None
    if genes is not None:
        keep = p.numpy()  # patients with expression: the joint distance needs their genes
        mu, sd = np.nanmean(real[keep], 0), np.nanstd(real[keep], 0) + 1e-8

    def score(sampler) -> float:
        fake = model._generate_with(sampler, m, z, p, x, seed=model.config.seed + 1)
        feats = table(fake[:, :1].float().cpu().numpy())
        a, b = real, feats
        if genes is not None:
            # Frechet joint distance (DeVries et al. 2019): image features beside the
            # genes' principal components, whose own part is equal on both sides, so what
            # is scored is the features' distribution and how they follow the genes
            a = np.c_[(real[keep] - mu) / sd, genes]
            b = np.c_[(feats[keep] - mu) / sd, genes]
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)  # tiny lesions: NaN rows
        return -frechet_distance(a[ok], b[ok]) if ok.sum() >= 4 else -np.inf

    return score


def gene_components(Z: np.ndarray, k: int = 8) -> np.ndarray | None:
    """Up to `k` principal components of standardised expression, each scaled to unit
    variance so the genes weigh like the standardised image features; None if too few."""
    from sklearn.decomposition import PCA

    k = min(k, Z.shape[1], len(Z) - 2)
    if k < 1:
        return None
    pcs = PCA(k, random_state=0).fit_transform(Z)
    return pcs / (pcs.std(0) + 1e-8)


def aux_targets(Z: torch.Tensor, present: torch.Tensor, k: int) -> torch.Tensor:
    """The gene read-back targets: up to `k` principal components (unit variance) of the
    training patients' standardised expression; zeros for patients without expression."""
    out = torch.zeros(len(Z), k)
    if present.sum() > 2:
        pcs = gene_components(Z[present].numpy(), k)
        if pcs is not None:
            out[present, : pcs.shape[1]] = torch.as_tensor(pcs, dtype=torch.float32)
    return out


def split_patients(n: int, fraction: float, seed: int):
    """Patient-level train/validation split (rows are patients)."""
    n_val = int(round(n * fraction))
    if n_val < 2 or n - n_val < 2:
        return np.arange(n), np.array([], dtype=int)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
