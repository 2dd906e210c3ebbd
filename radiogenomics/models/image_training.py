"""ImageGAN's training: its batches, the engine run, and the held-out score that picks the
weights. Kept apart from `image_gan` (the model's API) so each file reads on its own; the losses
are `train.objectives.image_critic_loss` and `image_generator_loss`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from radiogenomics._device import to_device
from radiogenomics.models.data import ImageData
from radiogenomics.nn.image import binarize, mask_features
from radiogenomics.nn.noise import Noise
from radiogenomics.train import augment as A
from radiogenomics.train import distributed as D
from radiogenomics.train.loop import train_gan
from radiogenomics.train.losses import partners
from radiogenomics.train.objectives import (
    Association,
    ImageBatch,
    background_of,
    image_critic_loss,
    image_generator_loss,
)

log = logging.getLogger(__name__)
# Held-out patients with expression needed for the joint distance: its covariance has the six
# lesion features plus up to 8 gene components, and a handful of rows cannot estimate it.
MIN_JOINT = 16


def to_channels_last(x: torch.Tensor, device: torch.device, on: bool = True) -> torch.Tensor:
    """On CUDA with `on` (train.channels_last), images in channels-last memory (faster
    convolutions under bf16)."""
    if device.type != "cuda" or not on:
        return x
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return x.contiguous(memory_format=fmt)


def nets_channels_last(device: torch.device, on: bool, ndim: int, *nets) -> None:
    """On CUDA with `on` (train.channels_last), `nets` in channels-last memory for images of
    `ndim` dimensions (batch and channel included), as `to_channels_last` puts the batches."""
    if device.type == "cuda" and on:
        fmt = torch.channels_last if ndim == 4 else torch.channels_last_3d
        for net in nets:
            net.to(memory_format=fmt)


def batch_sampler(data: ImageData, img, batch_size: int, G, C, device, *, channels_last=True):
    """`draw(rng) -> ImageBatch` over the training patients of `data`: a random batch with the same left-right flip of image and mask,
    the image side `G`'s noise (`Noise.draw`), and matching-aware partners. `C`: the critic
    side (its gene regressor decides whether read-back targets are needed). Patients are
    drawn uniformly; in a cohort of slice stacks, then one slice of each (`ImageData.slices`).
    `channels_last`: train.channels_last (CUDA only)."""
    positions = data.train
    to = lambda t: t[positions].to(device)  # noqa: E731
    slices = data.slices(positions)
    images = to_channels_last(slices.images.to(device), device, channels_last)
    # mask and relative depth, once: the networks would otherwise recompute the depth
    # (a distance transform) at every call; a flip keeps the depth of the flipped mask
    masks = slices.masks
    masks = (mask_features(masks) if img.use_mask else masks).to(device)
    masks = to_channels_last(masks, device, channels_last)
    Z, present = to(data.expression), to(data.present)
    present_cpu = data.present[positions]
    k = img.gene_aux_components
    wanted = (
        C.regressor is not None
        or max(img.shape_association_weight, img.appearance_association_weight) > 0
    )
    targets = (aux_targets(Z.cpu(), present.cpu(), k) if wanted else torch.zeros(len(Z), k)).to(
        device
    )
    B, n_train = batch_size, len(positions)

    def draw(rng) -> ImageBatch:
        idx = torch.randint(n_train, (B,), generator=rng)
        i = to_device(idx, device)
        j = i if not slices.stacked else to_device(slices.draw(idx, rng), device)
        x, m = images[j], masks[j]
        flip = torch.rand(B, generator=rng) < 0.5  # the same left-right flip of image and mask
        if flip.any():
            f = to_device(flip, device).view(B, *[1] * (x.ndim - 1))
            x = torch.where(f, x.flip(-1), x)
            m = torch.where(f, m.flip(-1), m)
        noise = Noise.draw(G, B, rng, device=device)
        perm = partners(idx, m[:, 0], img.negatives)
        # drawn with replacement: a partner may be the same patient, which is no negative
        distinct = idx != idx[perm]
        return ImageBatch(
            images=x,
            masks=m,
            expression=Z[i],
            present=present[i],
            noise=noise,
            targets=targets[i],
            present_cpu=present_cpu[idx],
            perm=perm,
            distinct=distinct,
        )

    return draw


def fit_image_gan(model, run_dir, progress: bool) -> dict:
    """Train `model` (an ImageGAN) on its training patients with the engine; keep the weights
    best on the held-out score; save into `run_dir` (rank 0)."""
    cfg, img, t, device = model.config, model.config.image, model.config.train, model.device
    data = model.image_data
    G, C = model.generator.to(device), model.critic.to(device)
    nets_channels_last(device, t.channels_last, data.images.ndim, G, C)
    draw = batch_sampler(data, img, t.batch_size, G, C, device, channels_last=t.channels_last)
    shape, appearance = association_references(data, img, device)
    aug = A.from_config(img).to(device)

    def critic_step(rng):
        return image_critic_loss(G, C, draw(rng), img, gp_weight=t.gp_weight, rng=rng, augment=aug)

    def generator_step(rng):
        return image_generator_loss(
            G, C, draw(rng), img, shape=shape, appearance=appearance, augment=aug, rng=rng
        )

    score = None
    if len(data.held_out) >= 4:
        score = realism_score(data, cfg, phantom=bool(model.meta.get("phantom")), device=device)
    else:
        log.warning("fewer than 4 held-out patients: keeping the last weights")
    run = dict(score=score, device=device, seed=cfg.seed, run_dir=run_dir, progress=progress,
               fingerprint=model._fingerprint)  # fmt: skip
    if img.backend == "flow":
        from radiogenomics.models.flow_training import train_image_flow

        summary, weights = train_image_flow(G, C, draw, img, t, shape=shape, **run)
    else:
        summary, weights = train_gan(
            G, C, critic_step, generator_step, t, lr=img.lr, state=A.checkpointed(aug), **run
        )
    model.sampler.load_state_dict(weights)
    model.sampler.to(device).eval()
    model.trained = True
    model.meta["summary"] = {**summary, "n_train": len(data.train), "n_val": len(data.held_out)}
    if run_dir is not None and D.is_main():
        model.save(run_dir)
    return summary


def realism_score(data: ImageData, cfg, *, phantom: bool, device, side=lambda sampler: sampler):
    """Held-out score for model selection, `score(sampler)`: minus the Frechet distance
    between image features of the held-out patients' real images and of images generated
    from their masks and genes, with fixed noise (seed `cfg.seed + 1`). The features: on a
    `phantom` cohort its lesion features (size ... necrosis, radiomap.features), on real
    cohorts the general radiomic features that `evaluate` computes (first-order, shape, GLCM,
    in the mask), and for unconditional models those of the whole patch. With genes, the
    distance is joint with the genes' principal components (`gene_components`) over the
    patients with expression. `side(sampler)`: the image side of what the engine rates (a
    joint model's sampler holds one)."""
    from radiogenomics.evaluate.images import frechet_distance, radiomic_table
    from radiogenomics.radiomap.features import lesion_feature_table

    img = cfg.image
    idx = torch.as_tensor(data.held_out)
    x, m = data.images[idx], data.masks[idx]
    z, p = data.expression[idx], data.present[idx]
    if not img.use_mask:
        # nothing puts the lesion of a generated image inside a real mask: compare whole
        # patches by their radiomic features instead
        region = np.ones_like(m[:, :1].numpy())
        features = lambda v: radiomic_table(v, region, progress=False).to_numpy()  # noqa: E731
    elif phantom:
        # the phantom's own phenotypes, which its genes drive
        features = lambda v: lesion_feature_table(v, m.numpy()).to_numpy()  # noqa: E731
    else:
        region = m[:, :1].numpy()
        features = lambda v: radiomic_table(v, region, progress=False).to_numpy()  # noqa: E731
    real = features(x[:, :1].numpy())

    genes = gene_components(z[p].numpy()) if z.shape[1] else None
    if genes is not None and int(p.sum()) < MIN_JOINT:
        # e.g. TCGA-LGG: 12 held-out patients, 3 with expression, gave -inf at every
        # evaluation, so no weights were ever selected
        log.warning(
            "%d of the %d held-out patients have expression, and the joint distance needs "
            ">= %d: weights are selected on the image features alone",
            int(p.sum()),
            len(idx),
            MIN_JOINT,
        )
        genes = None
    if genes is not None:
        keep = p.numpy()  # patients with expression: the joint distance needs their genes
        mu, sd = np.nanmean(real[keep], 0), np.nanstd(real[keep], 0) + 1e-8

    def score(sampler) -> float:
        fake = images_for(side(sampler), z, p, m, x, margin=img.background_margin,
                          device=device, seed=cfg.seed + 1)  # fmt: skip
        feats = features(fake[:, :1].float().cpu().numpy())
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


@torch.no_grad()
def images_for(side, Z, present, masks, images=None, *, margin: int, device, seed=0,
               batch_size=64) -> torch.Tensor:  # fmt: skip
    """Images (N, C, *S) from an image side (`nn.image.ImageSide`) for given masks (N, 1, *S),
    standardised expression Z and presence flags, with the noise `Noise.chunks` draws from
    `seed`; `images` give the backgrounds (the lesion dilated by `margin` cut out) of a side
    that fuses one."""
    fuses = side.image.background_channels > 0
    if fuses and images is None:
        raise ValueError("this image model fuses a background image: pass `backgrounds`")
    out = []
    for rows, noise in Noise.chunks(side, len(masks), seed, batch_size, device=device):
        m = masks[rows].to(device)
        code = side.code(Z[rows].to(device), present[rows].to(device))
        bg = background_of(images[rows].to(device), m, margin) if fuses else None
        out.append(side(code, noise, m, bg).images.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def masks_for(side, Z, present, *, device, seed=0, batch_size=64) -> torch.Tensor:
    """Binary masks (N, 1, *S) the mask generator of `side` draws for standardised expression
    Z and presence flags, with the mask noise `Noise.chunks` draws from `seed`."""
    if side.mask is None:
        raise ValueError("this model has no mask generator (image.train_masks=false): pass masks")
    out = []
    for rows, noise in Noise.chunks(side, len(Z), seed, batch_size, device=device, masks=True):
        code = side.code(Z[rows].to(device), present[rows].to(device))
        out.append(binarize(side.soft_masks(code, noise)).float().cpu())
    return torch.cat(out)


class GeneComponents:
    """Up to `k` principal components of standardised expression (n, n_genes), each scaled to
    unit variance over the patients it is fitted on, so the genes weigh like standardised
    image features (the selection scores) and read-back targets have one scale. The one
    home of "PCA of genes, unit variance": `gene_components`, `aux_projection` and the joint
    model's `paired_score` use it; `fit` returns None with fewer than 3 patients."""

    def __init__(self, pca, scale: np.ndarray):
        self.pca, self.scale = pca, scale
        self.k = len(scale)

    @classmethod
    def fit(cls, Z: np.ndarray, k: int = 8) -> GeneComponents | None:
        from sklearn.decomposition import PCA

        k = min(k, Z.shape[1], len(Z) - 2)
        if k < 1:
            return None
        pca = PCA(k, random_state=0).fit(Z)
        return cls(pca, pca.transform(Z).std(0) + 1e-8)

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """(n, k) unit-variance components of standardised expression `Z`."""
        return self.pca.transform(Z) / self.scale

    def projection(self, width: int):
        """`project(expression) -> (B, width)` in torch on the expression's device: the
        components, zero columns past `k`."""
        P = torch.zeros(self.pca.components_.shape[1], width)
        P[:, : self.k] = torch.as_tensor(self.pca.components_.T / self.scale, dtype=torch.float32)
        mean = torch.as_tensor(self.pca.mean_, dtype=torch.float32)

        def project(expression: torch.Tensor) -> torch.Tensor:
            return (expression - mean.to(expression.device)) @ P.to(expression.device)

        return project


def gene_components(Z: np.ndarray, k: int = 8) -> np.ndarray | None:
    """Up to `k` unit-variance principal components of the patients' standardised expression
    `Z` (`GeneComponents` fitted on them); None if too few patients."""
    pcs = GeneComponents.fit(Z, k)
    return None if pcs is None else pcs.transform(Z)


def aux_projection(Z: torch.Tensor, present: torch.Tensor, k: int):
    """`project(expression) -> (B, k)`: the training patients' top principal components of
    standardised expression, each scaled to unit variance over them (the gene read-back
    targets; zero columns where fewer components exist); None if too few patients."""
    pcs = GeneComponents.fit(Z[present].numpy(), k)
    return None if pcs is None else pcs.projection(k)


def association_references(data: ImageData, img, device) -> tuple:
    """`(shape, appearance)`: the `Association`s of the training patients with expression
    (`Association.of_shapes`, `.of_appearance`), on `device`; each None when its weight
    (`image.shape_association_weight`, `image.appearance_association_weight`) is 0, or when
    too few training patients have both expression and a lesion (then a warning; the config
    refuses the terms without genes, and the shape term without a mask generator)."""
    wanted = {
        "shape": img.shape_association_weight > 0,
        "appearance": img.appearance_association_weight > 0,
    }
    refs = dict.fromkeys(wanted)
    Z, present = data.expression[data.train], data.present[data.train]
    if any(wanted.values()) and Z.shape[1] and present.sum() > 2:
        c = aux_targets(Z, present, img.gene_aux_components)[present]
        rows = np.asarray(data.train)[present.numpy()]  # one copy of the images, not two
        masks = data.masks[rows]
        if wanted["shape"]:
            refs["shape"] = Association.of_shapes(masks, c)
        if wanted["appearance"]:
            refs["appearance"] = Association.of_appearance(data.images[rows], masks, c)
    for name, on in wanted.items():
        if on and refs[name] is None:
            log.warning(
                "too few training patients with expression and a lesion: no %s association", name
            )
    return tuple(None if r is None else r.to(device) for r in refs.values())


def aux_targets(Z: torch.Tensor, present: torch.Tensor, k: int) -> torch.Tensor:
    """The gene read-back targets (`aux_projection`) of the patients `Z`; zeros for patients
    without expression."""
    out = torch.zeros(len(Z), k)
    project = aux_projection(Z, present, k) if present.sum() > 2 else None
    if project is not None:
        out[present] = project(Z[present]).float()
    return out
