"""Differentiable augmentation for data-efficient GAN training, 2D and 3D.

A critic trained on a few hundred images memorises them, and its gradient stops teaching the
generator. DiffAugment (Zhao et al. 2020) augments everything the critic sees, real and
generated alike, in the critic's and the generator's steps, with transforms the generator's
gradient passes through; since both sides are augmented the same way, the generator is not
asked to draw the augmentations (they do not "leak"). ADA (Karras et al. 2020) applies each
transform with a probability p that follows the critic's overfitting: r_t = E[sign(D(real))]
is held near a target by raising p when above it and lowering it below.

One random draw per sample (`Augmenter.draw`) is applied (`Augmenter.apply`) to an image and
its mask channels (mask, depth) alike, so a mask stays on its lesion: geometric transforms
(translation, cutout, flip) move both, colour transforms (brightness, contrast) touch the
image only. Every draw comes from the step's `torch.Generator`, as many draws whatever p is,
so a run is reproducible and resumes bit-identically; with no policy nothing is drawn.

Hand-written on `grid_sample` rather than MONAI's random transforms: those draw from a NumPy
RandomState per sample, not from the step's torch generator, and work on one sample at a
time.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from radiogenomics._device import to_device
from radiogenomics.config import AUGMENT_POLICIES
from radiogenomics.train import distributed as D

TRANSLATION = 0.125  # largest shift, a fraction of each side (DiffAugment's 1/8)
CUTOUT = 0.5  # side of the cut-out box, a fraction of each side (DiffAugment's 1/2)


@dataclasses.dataclass
class Draw:
    """One batch's augmentation parameters, on the images' device: per policy, `on` (B,) bool
    says which samples it applies to; `shift` (B, d) integer pixels; `box` (B, d) the
    cut-out box's first corner; `brightness` (B,) the offset; `contrast` (B,) the factor."""

    on: dict[str, torch.Tensor]
    shift: torch.Tensor | None = None
    box: torch.Tensor | None = None
    brightness: torch.Tensor | None = None
    contrast: torch.Tensor | None = None


class Augmenter(nn.Module):
    """Applies `policies` (names from `AUGMENT_POLICIES`, in that order) each with probability p.

    Parameters
    ----------
    policies : sequence of str
        Transforms; empty turns augmentation off (`active` False, nothing drawn).
    p : float
        The probability (fixed), or its start (adaptive).
    target : float or None
        ADA's target for r_t; None keeps p fixed.
    ramp : int
        Adaptive p: critic steps in which p can go from 0 to 1 (ADA: 500k images).
    interval : int
        Adaptive p: critic steps between updates of p (ADA: 4).
    fill : {'reflect', 'zeros'}
        What translation shifts in at the border: the image's reflection (the mask reflects
        with it), or zeros.

    The adaptive state (p and the r_t accumulated since the last update) is kept in buffers,
    so a checkpoint of this module resumes it exactly.

    Examples
    --------
    >>> import torch
    >>> aug = Augmenter(["translation", "brightness"])
    >>> x, m = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    >>> xa, ma = aug(x, m, torch.Generator().manual_seed(0))
    >>> tuple(xa.shape), tuple(ma.shape)
    ((2, 1, 8, 8), (2, 1, 8, 8))
    """

    def __init__(
        self,
        policies=(),
        p: float = 1.0,
        *,
        target: float | None = None,
        ramp: int = 500,
        interval: int = 4,
        fill: str = "reflect",
    ):
        super().__init__()
        unknown = [x for x in policies if x not in AUGMENT_POLICIES]
        if unknown:
            raise ValueError(
                f"unknown augmentation policies {unknown}; choose from {AUGMENT_POLICIES}"
            )
        if fill not in ("reflect", "zeros"):
            raise ValueError(f"fill must be 'reflect' or 'zeros'; got {fill!r}")
        self.policies = tuple(x for x in AUGMENT_POLICIES if x in policies)
        self.target, self.ramp, self.interval, self.fill = target, ramp, interval, fill
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("signs", torch.tensor(0.0))  # sum of r_t since the last update
        self.register_buffer("count", torch.tensor(0.0))  # critic steps since then

    @property
    def active(self) -> bool:
        return bool(self.policies)

    @property
    def adaptive(self) -> bool:
        return self.active and self.target is not None

    # ---------------------------------------------------------------------------------------
    def draw(self, batch: int, size, rng: torch.Generator, device) -> Draw:
        """Parameters for `batch` samples of spatial `size`, drawn from `rng` (its device)."""
        where = rng.device
        on = {}
        out = Draw(on)
        for name in self.policies:
            u = torch.rand(batch, generator=rng, device=where)
            on[name] = to_device(u, device) < self.p.to(device)
            if name == "translation":
                cols = []
                for s in size:
                    k = max(1, int(s * TRANSLATION + 0.5))
                    cols.append(torch.randint(-k, k + 1, (batch,), generator=rng, device=where))
                out.shift = to_device(torch.stack(cols, 1), device)
            elif name == "cutout":
                cols = []
                for s in size:
                    cut = int(s * CUTOUT + 0.5)
                    # DiffAugment's offsets: the box may hang over the border
                    start = torch.randint(0, s + (1 - cut % 2), (batch,), generator=rng,
                                          device=where) - cut // 2  # fmt: skip
                    cols.append(start)
                out.box = to_device(torch.stack(cols, 1), device)
            elif name == "brightness":
                b = torch.rand(batch, generator=rng, device=where) - 0.5  # images in [-1, 1]
                out.brightness = to_device(b, device)
            elif name == "contrast":
                c = torch.rand(batch, generator=rng, device=where) + 0.5  # x0.5 to x1.5
                out.contrast = to_device(c, device)
        return out

    def apply(self, draw: Draw, images: torch.Tensor | None, masks: torch.Tensor | None):
        """`(images, masks)` with `draw` applied, either may be None: images (B, C, *S),
        masks (B, k, *S) (mask, depth). Differentiable in both."""
        ref = images if images is not None else masks
        d = ref.ndim - 2
        view = (-1, *([1] * (d + 1)))  # (B, 1, ...)
        c = 0 if images is None else images.shape[1]
        parts = [t for t in (images, masks) if t is not None]
        dtype = torch.promote_types(parts[0].dtype, parts[-1].dtype)
        x = torch.cat([t.to(dtype) for t in parts], 1)  # one tensor: one transform for all
        for name in self.policies:
            on = draw.on[name]
            if name == "translation":
                x = _translate(x, draw.shift * on[:, None], self.fill)
            elif name == "cutout":
                keep = _outside_box(draw.box, [int(s * CUTOUT + 0.5) for s in x.shape[2:]],
                                    x.shape[2:])  # fmt: skip
                keep = keep | ~on.view(view)
                x = x * keep.to(x.dtype)
            elif name == "flip":
                x = torch.where(on.view(view), x.flip(-1), x)
            elif c and name == "brightness":
                shift = (draw.brightness * on).view(view).to(x.dtype)
                x = torch.cat([x[:, :c] + shift, x[:, c:]], 1)
            elif c and name == "contrast":
                img = x[:, :c]
                mean = img.mean(dim=tuple(range(1, img.ndim)), keepdim=True)
                factor = draw.contrast.view(view).to(x.dtype)
                img = torch.where(on.view(view), (img - mean) * factor + mean, img)
                x = torch.cat([img, x[:, c:]], 1)
        out_images = None if images is None else x[:, :c].to(images.dtype)
        out_masks = None if masks is None else x[:, c:].to(masks.dtype)
        return out_images, out_masks

    def forward(self, images, masks, rng: torch.Generator):
        """`apply` a new `draw` to images and masks (either may be None); unchanged when no
        policy is set."""
        if not self.active:
            return images, masks
        ref = images if images is not None else masks
        return self.apply(self.draw(len(ref), ref.shape[2:], rng, ref.device), images, masks)

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> None:
        """Adaptive p (ADA): accumulate r_t of a critic step and, every `interval` steps, move
        p by `interval / ramp` toward where r_t meets `target`. r_t = E[sign(D(real) -
        E[D(fake)])]: ADA's E[sign(D(real))] measured from the fake scores' mean, because a
        Wasserstein critic has no fixed zero (its drift term centres the real scores on
        0 whatever the overfitting). Averaged over the ranks; no host-device sync."""
        if not self.adaptive:
            return
        r = torch.sign(real_scores.float() - fake_scores.float().mean()).mean()
        if D.active():
            torch.distributed.all_reduce(r)
            r = r / D.world_size()
        self.signs += r
        self.count += 1
        due = self.count >= self.interval
        step = torch.sign(self.signs / self.count.clamp_min(1) - self.target)
        moved = (self.p + step * self.interval / self.ramp).clamp(0.0, 1.0)
        self.p.copy_(torch.where(due, moved, self.p))
        self.signs.copy_(torch.where(due, 0.0, self.signs))
        self.count.copy_(torch.where(due, 0.0, self.count))


def _translate(x: torch.Tensor, shift: torch.Tensor, fill: str) -> torch.Tensor:
    """x (B, C, *S) moved by `shift` (B, d) whole pixels (axis order as S), nearest sampling,
    so every output pixel is an input pixel and the gradient passes to the input."""
    size = x.shape[2:]
    d = len(size)
    B = x.shape[0]
    # grid_sample's coordinates run last axis first; a shift of s pixels is 2 s / side
    t = torch.stack([-2 * shift[:, i].float() / size[i] for i in reversed(range(d))], 1)
    theta = torch.cat([torch.eye(d, device=x.device).expand(B, d, d), t[..., None]], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    padding = "reflection" if fill == "reflect" else "zeros"
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode=padding, align_corners=False)
    return out.to(x.dtype)


def _outside_box(start: torch.Tensor, cut, size) -> torch.Tensor:
    """(B, 1, *S) bool, True outside each sample's box [start, start + cut) per axis."""
    d = len(size)
    inside = None
    for i, (s, k) in enumerate(zip(size, cut, strict=True)):
        pos = torch.arange(s, device=start.device)
        a = start[:, i : i + 1]
        axis = (pos >= a) & (pos < a + k)  # (B, s)
        shape = [len(start), 1] + [1] * d
        shape[2 + i] = s
        axis = axis.view(shape)
        inside = axis if inside is None else inside & axis
    return ~inside


def from_config(img) -> Augmenter:
    """The `Augmenter` of an `ImageConfig` (image.augment_policy, augment_p, augment_target,
    augment_ramp, augment_fill)."""
    return Augmenter(
        img.augment_policy,
        img.augment_p,
        target=img.augment_target,
        ramp=img.augment_ramp,
        fill=img.augment_fill,
    )


def checkpointed(augmenter: Augmenter) -> dict[str, nn.Module]:
    """`{"augment": augmenter}` when its p adapts (state a checkpoint must keep), else {}:
    runs without it keep the checkpoint layout they had."""
    return {"augment": augmenter} if augmenter.adaptive else {}
