"""Training objectives over named batch fields, reusable by every model.

Each function takes the networks, a batch (`GeneBatch`, `ImageBatch`) and the settings, and
returns `(loss, logs)` with the logs as detached tensors (read off the device only when the
loop records them). A model's step is one of them or, for the joint model, their sum: the image
generator loss takes the gene code as an argument, so a code computed from generated expression
carries the image critic's gradient back into the gene generator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from radiogenomics.nn.appearance import appearance_descriptors
from radiogenomics.nn.image import Generated, binarize
from radiogenomics.nn.noise import Noise
from radiogenomics.nn.shape import dilate, shape_descriptors
from radiogenomics.train.losses import (
    OBJECTIVES,
    critic_loss,
    generator_loss,
    gradient_penalty,
    matching_loss,
    mismatched_scores,
)

# ------------------------------------------------------------------------------------------
# genes


@dataclass
class GeneBatch:
    """Real expression (B, n_genes), standardised; covariate codes (B, n_cat) and numerics
    (B, n_num) of the same patients; generator noise (B, n_noise)."""

    expression: torch.Tensor
    codes: torch.Tensor
    numeric: torch.Tensor
    noise: torch.Tensor


def gene_critic_loss(generator, critic, b: GeneBatch, *, gp_weight: float, rng=None):
    """WGAN-GP critic loss of the gene critic on real vs generated expression of the same
    covariates."""
    with torch.no_grad():
        fake = generator(b.noise, b.codes, b.numeric)[0]
    real_score = critic(b.expression, b.codes, b.numeric)
    fake_score = critic(fake, b.codes, b.numeric)
    gp = gradient_penalty(
        lambda x: critic(x, b.codes, b.numeric), b.expression, fake, generator=rng
    )
    loss = critic_loss(real_score, fake_score) + gp_weight * gp
    wasserstein = real_score.float().mean() - fake_score.float().mean()
    logs = {"critic": loss.detach(), "wasserstein": wasserstein.detach(), "gp": gp.detach()}
    return loss, logs


def dispersion_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over genes of (log std(fake) - log std(real))^2, the stds over the batch (which
    holds the same covariates on both sides): 0 when generated expression is as dispersed as
    the real batch, whatever its location. Both stds come from as many samples, so their
    small-sample bias cancels in the log ratio."""
    fake, real = fake.float(), real.detach().float()
    log_std = lambda x: 0.5 * torch.log(x.var(dim=0, unbiased=False) + 1e-8)  # noqa: E731
    return (log_std(fake) - log_std(real)).square().mean()


def gene_generator_loss(generator, critic, b: GeneBatch, *, dispersion_weight: float = 4.0):
    """WGAN generator loss of generated expression, plus `dispersion_weight` x sqrt(n_genes)
    times the `dispersion_loss` of the generated batch against the real one (0 turns it off);
    also returns `(fake, latent)` so a joint objective can pass them on to the image side.

    The sqrt(n_genes) keeps the term's gradient on one sample (whose norm goes as
    1 / sqrt(n_genes) for a mean over genes) the same size for 50 genes as for 1000, as the
    critic's is: the gradient penalty holds that one to norm 1 over all genes."""
    fake, latent = generator(b.noise, b.codes, b.numeric)
    loss = generator_loss(critic(fake, b.codes, b.numeric))
    logs = {"generator": loss.detach()}
    if dispersion_weight > 0:
        disp = dispersion_loss(fake, b.expression)
        loss = loss + dispersion_weight * fake.shape[1] ** 0.5 * disp
        logs["dispersion"] = disp.detach()
    return loss, logs, (fake, latent)


# ------------------------------------------------------------------------------------------
# images and masks


@dataclass
class ImageBatch:
    """Real images (B, C, *S) and mask channels (B, 1 or 2, *S: the mask and its depth);
    standardised expression (B, n_genes) with presence flags (B,); the generators' `Noise`;
    gene read-back targets (B, k). Matching-aware partners (`perm`, and `distinct` where
    the partner is another patient) are on the CPU, and so is a copy of `present`
    (`present_cpu`): the rows they select are decided there, without waiting for the device."""

    images: torch.Tensor
    masks: torch.Tensor
    expression: torch.Tensor
    present: torch.Tensor
    noise: Noise
    perm: torch.Tensor
    distinct: torch.Tensor
    targets: torch.Tensor
    present_cpu: torch.Tensor


def hole(masks: torch.Tensor, margin: int) -> torch.Tensor:
    """The lesion dilated by `margin` pixels: the region a background-fusing generator fills."""
    masks = masks.float()
    return dilate(masks, margin) if margin else masks


def background_of(images: torch.Tensor, masks: torch.Tensor, margin: int) -> torch.Tensor:
    """The image with the (dilated) lesion cut out and set to -1: what the generator fills."""
    h = hole(masks, margin)
    return images * (1 - h) - h


def soft(mask: torch.Tensor) -> torch.Tensor:
    """Masks as the mask critic sees them: slightly blurred, so real binary masks and generated
    soft ones differ by shape rather than by edge sharpness."""
    pool = F.avg_pool2d if mask.ndim == 4 else F.avg_pool3d
    return pool(mask, 3, stride=1, padding=1, count_include_pad=False)


def images_for_batch(G, b: ImageBatch, code, img) -> torch.Tensor:
    """The image side's images for the batch's real masks (and backgrounds) and `code`."""
    bg = (
        background_of(b.images, b.masks[:, :1], img.background_margin)
        if img.use_background
        else None
    )
    return G(code, b.noise, b.masks, bg).images


def read_back(C, image, b: ImageBatch):
    """Squared error of the gene components the critic-side regressor reads from `image`, over
    the patients with expression; None without a regressor or such patients."""
    if C.regressor is None or not b.present_cpu.any():
        return None
    return (C.regressor(image, b.masks).float() - b.targets).square()[b.present_cpu].mean()


_DICE_CE = DiceCELoss(sigmoid=True)


def mask_read_back(C, image, mask):
    """Dice + cross-entropy of the mask the critic-side segmenter reads from `image` against
    `mask` (B, 1, *S); None without a segmenter."""
    if C.segmenter is None:
        return None
    return _DICE_CE(C.segmenter(image).float(), mask.float())


FIT_VOXELS = 2**24  # voxels measured at once by Association.of_shapes/of_appearance
# the smallest descriptor std an Association standardises by (descriptor units: every
# descriptor spreads over 0.06 or more on the 2D phantom); a descriptor nearly constant in the
# real cohort (no necrotic cores at all) would otherwise turn small deviations into huge costs
SCALE_FLOOR = 0.01


def _chunked(measure, *stacks) -> torch.Tensor:
    """`measure` over the stacks (n, C, *S) in chunks of about FIT_VOXELS voxels: the mask
    moments hold (n, voxels, d) at once (400 masks at 96^3: ~4 GB)."""
    chunk = max(1, FIT_VOXELS // max(1, stacks[0][0].numel()))
    parts = zip(*(s.split(chunk) for s in stacks), strict=True)
    return torch.cat([measure(*(t.float() for t in ts)) for ts in parts])


@dataclass
class Association:
    """How the real training patients' lesion descriptors (`nn.shape`: shape of the masks;
    `nn.appearance`: intensity of the images inside them) follow their genes: the
    descriptors' `mean` and `scale` (D,); `coef` (D, k), the least-squares regression of the
    standardised descriptors on the gene read-back components (unit variance, uncorrelated:
    the coefficients are covariances); `residual` (D,), the standard deviation of what the
    components leave unexplained."""

    mean: torch.Tensor
    scale: torch.Tensor
    coef: torch.Tensor
    residual: torch.Tensor

    @classmethod
    def fit(cls, descriptors: torch.Tensor, components: torch.Tensor) -> Association | None:
        """From real lesions' descriptors (n, D) and their patients' components (n, k); None
        with fewer than 8 lesions measured in full."""
        ok = torch.isfinite(descriptors).all(1)
        if ok.sum() < 8:
            return None
        d, c = descriptors[ok].float(), components[ok].float()
        mean, scale = d.mean(0), d.std(0).clamp_min(SCALE_FLOOR)
        z = (d - mean) / scale
        cc = c - c.mean(0)
        # normal equations in float64, not lstsq: LAPACK's lstsq differed in its last bits
        # between processes, and a resumed run must repeat the uninterrupted one bit for bit
        x = cc.double()
        gram = x.T @ x + 1e-8 * torch.eye(x.shape[1], dtype=x.dtype)
        coef = torch.linalg.solve(gram, x.T @ z.double()).T.float()  # (D, k)
        residual = (z - cc @ coef.T).std(0)
        return cls(mean, scale, coef, residual)

    @classmethod
    def of_shapes(cls, masks: torch.Tensor, components: torch.Tensor) -> Association | None:
        """`fit` on the shape descriptors of real binary masks (n, 1, *S)."""
        return cls.fit(_chunked(shape_descriptors, masks), components)

    @classmethod
    def of_appearance(cls, images, masks, components) -> Association | None:
        """`fit` on the appearance descriptors of real images (n, C, *S) in their masks."""
        return cls.fit(_chunked(appearance_descriptors, images, masks), components)

    def predict(self, components: torch.Tensor) -> torch.Tensor:
        """The standardised descriptors (B, D) the real relation predicts for components."""
        return components.float() @ self.coef.T

    def to(self, device) -> Association:
        return Association(
            *(t.to(device) for t in (self.mean, self.scale, self.coef, self.residual))
        )


def shape_association_loss(ref: Association, masks: torch.Tensor, components: torch.Tensor):
    """How far the shape of `masks` (B, 1, *S) strays from what the real relation predicts
    for their genes' `components` (B, k): per lesion and descriptor (standardised), the
    squared distance beyond one real residual standard deviation from the prediction, so a
    lesion as close to its prediction as a typical real one costs nothing (a plain squared
    error would pull every lesion onto the regression line). Mean over lesions and
    descriptors; None with no measurable lesion."""
    return association_gap(ref, shape_descriptors(_edge_gradient(masks.float())), components)


def _edge_gradient(masks: torch.Tensor) -> torch.Tensor:
    """`masks` unchanged forward, their gradient kept only within one voxel of the lesion's
    edge: a shape descriptor's gradient reaches every voxel (a far speck stretches the
    covariance most), and a mask generator that follows it draws specks and holes, where
    moving the edge is what changes a lesion's shape."""
    hard = (masks.detach() > 0.5).float()
    band = dilate(hard, 1) - -dilate(-hard, 1)  # dilation minus erosion
    return masks.detach() + (masks - masks.detach()) * band


def _add_term(loss, logs: dict, key: str, weight: float, term):
    """`loss + weight * term`, the term logged under `key`; the loss unchanged where the term
    is None (no lesion to measure)."""
    if term is None:
        return loss
    logs[key] = term.detach()
    return loss + weight * term


def appearance_association_loss(ref: Association, images, masks, components: torch.Tensor):
    """`shape_association_loss` for the appearance (`nn.appearance`) of `images` (B, C, *S)
    in their binary `masks` (B, 1, *S): the gradient reaches the images only."""
    return association_gap(ref, appearance_descriptors(images, masks), components)


def association_gap(ref: Association, descriptors: torch.Tensor, components: torch.Tensor):
    """The association loss from the descriptors (B, D) of the batch's lesions."""
    d = (descriptors - ref.mean) / ref.scale
    ok = torch.isfinite(d).all(1)
    if not ok.any():
        return None
    miss = (d[ok] - ref.predict(components[ok].detach())).abs() - ref.residual
    return F.relu(miss).square().mean()


def _active(augment):
    """`augment` (a `train.augment.Augmenter`) when it has policies, else None."""
    return augment if augment is not None and augment.active else None


def augmented(augment, images, masks, rng):
    """`(images, masks)` through `augment` with a new draw from `rng` (either may be None);
    unchanged without an active augmenter."""
    if _active(augment) is None:
        return images, masks
    if rng is None:
        raise ValueError("differentiable augmentation draws from the step's generator: pass rng")
    return augment(images, masks, rng)


@dataclass
class RealScores:
    """What the critic side makes of a batch's real patients as they are (no augmentation):
    its gene code (B, n_code) or None, the image critic's scores and the mask critic's (None
    without one). `image_critic_loss` fills one (`real_out`) and `pair_critic_loss` reads it
    (`real`), so the joint critic step runs these networks once on the real batch, not once
    per term; the scores stay in the graph, so both terms' gradients reach the critics."""

    code: torch.Tensor | None = None
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def image_critic_loss(
    G, C, b: ImageBatch, img, *, gp_weight: float, rng=None, code=None, augment=None,
    real_out: RealScores | None = None,
):  # fmt: skip
    """The image side's critic loss: real vs generated images of the same masks and genes
    (with the gradient penalty and drift term for wgan-gp), matching-aware negatives, the mask
    critic when there is a mask generator, and the gene read-back head on real images.

    `code` is the generator's gene code (default: `G.code` of the batch's real expression).
    `augment` (`train.augment.Augmenter`): what the image and mask critics see is augmented,
    a real image and the image generated in its mask with one draw (they share the mask),
    the gradient penalty and the negatives on the augmented images; the read-back heads
    learn from the real images as they are. Its adaptive p observes this critic.

    `real_out` (`RealScores`): filled with the critic side's code and its scores of the real
    batch, where no augmentation is active (else left empty: each term draws its own)."""
    crit_loss = OBJECTIVES[img.objective][0]
    code_c = C.code(b.expression, b.present)
    with torch.no_grad():
        code_g = G.code(b.expression, b.present) if code is None else code
        fake = images_for_batch(G, b, code_g, img)
    x, m = b.images, b.masks
    aug = _active(augment)
    if aug is not None:
        if rng is None:
            raise ValueError("differentiable augmentation draws from the step's generator")
        draw = aug.draw(len(x), x.shape[2:], rng, x.device)
        x, m = aug.apply(draw, x, m)
        fake = aug.apply(draw, fake, None)[0]
    trunk = C.image.trunk(x, m)  # shared with the wrong-genes negatives
    real_s = C.image.head(trunk, code_c)
    fake_s = C.image(fake, m, code_c)
    loss = crit_loss(real_s, fake_s)
    if real_out is not None and aug is None:
        real_out.code, real_out.image = code_c, real_s
    logs = {}
    if aug is not None:
        aug.observe(real_s, fake_s)
        logs["augment_p"] = aug.p.detach().clone()
    if img.objective == "wgan-gp":
        gp = gradient_penalty(lambda v: C.image(v, m, code_c), x, fake, generator=rng)
        drift = real_s.float().square().mean()
        loss = loss + gp_weight * gp + img.drift_weight * drift
        logs["gp"] = gp.detach()
    if img.mismatch_weight > 0:
        negatives = mismatched_scores(
            C.image, x, m, code_c, b.present_cpu, b.perm, img.use_mask, distinct=b.distinct,
            trunk=trunk,
        )  # fmt: skip
        for s in negatives:
            loss = loss + img.mismatch_weight * matching_loss(real_s, s)
    if G.mask is not None:
        loss_m, logs_m = mask_critic_loss(
            G, C, b, img, code_g, code_c, gp_weight=gp_weight, rng=rng, augment=augment,
            real_out=real_out if aug is None else None,
        )  # fmt: skip
        loss = loss + loss_m
        logs.update(logs_m)
    aux = read_back(C, b.images, b)  # the regressor learns from real images only
    if aux is not None:
        loss = loss + aux
        logs["gene_aux_real"] = aux.detach()
    seg = mask_read_back(C, b.images, b.masks[:, :1])  # and so does the segmenter
    if seg is not None:
        loss = loss + seg
        logs["mask_read_real"] = seg.detach()
    logs["critic"] = loss.detach()
    return loss, logs


def mask_critic_loss(
    G, C, b: ImageBatch, img, code_g, code_c, *, gp_weight: float, rng=None, augment=None,
    real_out: RealScores | None = None,
):  # fmt: skip
    """The mask critic on real (blurred) masks vs the mask generator's, for the same genes;
    each side with its own `augment` draw (geometric transforms only reach masks).
    `real_out`: its scores of the real masks go into `real_out.mask`."""
    crit_loss = OBJECTIVES[img.objective][0]
    real_m = augmented(augment, None, soft(b.masks[:, :1]), rng)[1]
    with torch.no_grad():
        fake_m = augmented(augment, None, soft(G.soft_masks(code_g, b.noise)), rng)[1]
    trunk = C.mask.trunk(real_m)  # shared with the wrong-genes negatives
    real_ms = C.mask.head(trunk, code_c)
    if real_out is not None:
        real_out.mask = real_ms
    loss = crit_loss(real_ms, C.mask(fake_m, None, code_c))
    if img.mismatch_weight > 0 and code_c is not None:
        # matching-aware negatives for the mask critic too: a real mask with another
        # patient's genes is fake, so the mask generator must follow the genes (lesion size)
        pair = b.present_cpu & b.present_cpu[b.perm] & b.distinct
        if pair.any():
            wrong = C.mask.head(tuple(t[pair] for t in trunk), code_c[b.perm][pair])
            loss = loss + img.mismatch_weight * matching_loss(real_ms[pair], wrong)
    if img.objective == "wgan-gp":
        loss = loss + img.drift_weight * real_ms.float().square().mean()
        gp = gradient_penalty(lambda v: C.mask(v, None, code_c), real_m, fake_m, generator=rng)
        loss = loss + gp_weight * gp
    return loss, {"critic_mask": loss.detach()}


def image_generator_loss(
    G, C, b: ImageBatch, img, *, code=None, shape=None, appearance=None, augment=None, rng=None
):
    """The image side's generator loss: adversarial, background L1 (Xu et al.), the gene
    read-back of the generated images and (with `appearance`, an `Association`) their
    appearance association, and the mask generator's adversarial loss and (with `shape`) its
    shape association; the associations on the patients with expression.

    `code` is the generator's gene code (default: `G.code` of the batch's real expression);
    the joint model passes the code of generated expression here. `augment`: the critics
    score augmented images and masks (a draw from `rng`), as in `image_critic_loss`; the
    other terms see the images as generated."""
    gen_loss = OBJECTIVES[img.objective][1]
    code_g = G.code(b.expression, b.present) if code is None else code
    code_c = C.code(b.expression, b.present)
    fake = images_for_batch(G, b, code_g, img)
    loss = gen_loss(C.image(*augmented(augment, fake, b.masks, rng), code_c))
    logs = {"generator": loss.detach()}
    if img.use_background and img.background_l1 > 0:
        keep = 1 - hole(b.masks[:, :1], img.background_margin)  # 1 outside the cut-out lesion
        l1 = ((fake - b.images).abs() * keep).sum() / keep.sum().clamp_min(1)
        loss = loss + img.background_l1 * l1
        logs["background_l1"] = l1.detach()
    aux = read_back(C, fake, b)
    if aux is not None:
        loss = loss + img.gene_aux_weight * aux
        logs["gene_aux"] = aux.detach()
    seg = mask_read_back(C, fake, b.masks[:, :1])
    if seg is not None:
        loss = loss + img.mask_consistency_weight * seg
        logs["mask_read"] = seg.detach()
    # rows picked by the CPU copy of `present`: a mask on the device would wait for it
    rows, any_rows = b.present_cpu, bool(b.present_cpu.any())
    if appearance is not None and any_rows:
        term = appearance_association_loss(
            appearance, fake[rows], b.masks[rows, :1], b.targets[rows]
        )
        loss = _add_term(loss, logs, "appearance_assoc", img.appearance_association_weight, term)
    return mask_generator_terms(
        loss, logs, G, C, b, img, code_g, code_c, shape=shape, augment=augment, rng=rng
    )


def mask_generator_terms(
    loss, logs: dict, G, C, b: ImageBatch, img, code_g, code_c, *, shape, augment=None, rng=None
):
    """`loss` plus the mask generator's adversarial loss for the batch's genes (the mask
    critic sees them through `augment`, a draw from `rng`) and (with `shape`, an
    `Association`) its shape association on the patients with expression; `loss` unchanged
    without a mask generator. Logs into `logs`."""
    if G.mask is None:
        return loss, logs
    gen_loss = OBJECTIVES[img.objective][1]
    soft_masks = G.soft_masks(code_g, b.noise)
    seen = augmented(augment, None, soft(soft_masks), rng)[1]
    loss_m = gen_loss(C.mask(seen, None, code_c))
    loss = loss + loss_m
    logs["generator_mask"] = loss_m.detach()
    if shape is not None and bool(b.present_cpu.any()):
        rows = b.present_cpu  # on the CPU: a mask on the device would wait for it
        term = shape_association_loss(
            shape, binarize(soft_masks[rows], straight_through=True), b.targets[rows]
        )
        loss = _add_term(loss, logs, "shape_assoc", img.shape_association_weight, term)
    return loss, logs


# ------------------------------------------------------------------------------------------
# fully synthetic patients (the joint model)


@dataclass
class PairBatch:
    """What the gene generator needs to make the image batch's patients anew: their
    covariate codes and numerics, and gene noise (B, n_noise)."""

    codes: torch.Tensor
    numeric: torch.Tensor
    noise: torch.Tensor


def synthesize(J, b: ImageBatch, p: PairBatch, *, images: bool = True) -> Generated:
    """Fully synthetic patients of the joint generator `J` (`nn.joint.JointGenerator`) with
    the pair batch's covariates and gene noise and the image batch's image and mask noise.
    Masks are straight-through, so the image critic and the gene read-back also teach the
    mask generator (the depth channel, a distance transform, has no gradient); the image and
    mask critics reach the gene generator through the gene code. `images` False: expression
    and masks only."""
    noise = dataclasses.replace(b.noise, gene=p.noise)
    return J(noise, p.codes, p.numeric, straight_through=True, images=images)


def pair_critic_loss(J, C, b: ImageBatch, p: PairBatch, img, *, gp_weight, rng=None,
                     augment=None, real: RealScores | None = None):  # fmt: skip
    """The image and mask critics on real patients (image, mask, expression) against fully
    synthetic ones (generated expression, mask and image together). The gradient penalty runs
    on interpolates of image and mask channels together, conditioned on the real genes.
    `augment`: every input of the critics augmented, each side with its own draw (from
    `rng`), an image with its mask; the penalty on the augmented inputs. `real`
    (`RealScores` of the same batch, from `image_critic_loss`): the critic side's code and
    scores of the real patients, reused where no augmentation is active."""
    crit_loss = OBJECTIVES[img.objective][0]
    reuse = real is not None and real.image is not None and _active(augment) is None
    with torch.no_grad():
        s = synthesize(J, b, p)
    code_real = real.code if reuse else C.code(b.expression, b.present)
    code_fake = C.code(s.expression, s.present)
    real_x, real_c = augmented(augment, b.images, b.masks, rng)
    fake_x, fake_c = augmented(augment, s.images, s.critic_masks, rng)
    real_s = real.image if reuse else C.image(real_x, real_c, code_real)
    loss = crit_loss(real_s, C.image(fake_x, fake_c, code_fake))
    real_m = augmented(augment, None, soft(b.masks[:, :1]), rng)[1]
    fake_m = augmented(augment, None, soft(s.soft_masks), rng)[1]
    real_ms = real.mask if reuse and real.mask is not None else C.mask(real_m, None, code_real)
    loss_m = crit_loss(real_ms, C.mask(fake_m, None, code_fake))
    if img.objective == "wgan-gp":
        c = b.images.shape[1]

        def pair(v):
            return C.image(v[:, :c], v[:, c:], code_real)

        gp = gradient_penalty(
            pair, torch.cat([real_x, real_c], 1), torch.cat([fake_x, fake_c], 1), generator=rng
        )
        gp_m = gradient_penalty(lambda v: C.mask(v, None, code_real), real_m, fake_m, generator=rng)
        drift = real_s.float().square().mean() + real_ms.float().square().mean()
        loss = loss + loss_m + gp_weight * (gp + gp_m) + img.drift_weight * drift
    else:
        loss = loss + loss_m
    return loss, {"critic_pair": loss.detach()}


def pair_generator_loss(J, C, b: ImageBatch, p: PairBatch, img, *, project=None, shape=None,
                        appearance=None, augment=None, rng=None):  # fmt: skip
    """The generator loss of fully synthetic patients: image and mask critics on (generated
    image, mask, expression), the gene read-back: the components the critic-side regressor
    reads from the generated image against those of the generated expression
    (`project(expression)`), and (with `shape`, `appearance`) the masks' shape and the
    images' appearance association with those components. Every term reaches the gene
    generator through the gene code. `augment`: the critics score augmented inputs (draws
    from `rng`), the other terms the patients as generated."""
    gen_loss = OBJECTIVES[img.objective][1]
    s = synthesize(J, b, p)
    code_fake = C.code(s.expression, s.present)
    seen = augmented(augment, s.images, s.critic_masks, rng)
    loss = gen_loss(C.image(*seen, code_fake))
    seen_m = augmented(augment, None, soft(s.soft_masks), rng)[1]
    loss = loss + gen_loss(C.mask(seen_m, None, code_fake))
    logs = {"generator_pair": loss.detach()}
    if C.regressor is not None and project is not None:
        # the target is cut from the graph: pulling the expression toward what the image
        # shows would reward both for shrinking together
        target = project(s.expression.detach().float())
        aux = (C.regressor(s.images, s.critic_masks).float() - target).square()
        aux = aux.mean()
        loss = loss + img.gene_aux_weight * aux
        logs["gene_aux_pair"] = aux.detach()
    if project is not None and (shape is not None or appearance is not None):
        # the components are cut from the graph, as the read-back's target is
        c = project(s.expression.detach())
        if shape is not None:
            term = shape_association_loss(shape, s.critic_masks[:, :1], c)
            loss = _add_term(loss, logs, "shape_assoc_pair", img.shape_association_weight, term)
        if appearance is not None:
            term = appearance_association_loss(appearance, s.images, s.critic_masks[:, :1], c)
            w = img.appearance_association_weight
            loss = _add_term(loss, logs, "appearance_assoc_pair", w, term)
    return loss, logs
