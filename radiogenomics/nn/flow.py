"""The rectified-flow image backend (`image.backend: flow`): the image is carried from Gaussian
noise by an ODE whose velocity a U-Net predicts, conditioned on the mask and the gene code.

- `FlowImage(x_t, t, conditions, code) -> velocity`: MONAI's `DiffusionModelUNet`; the mask
  and its relative depth (`nn.image.mask_features`) enter as input channels beside the noisy
  image, the gene code as one cross-attention context token (at the coarsest level and in the
  middle block), the time through the U-Net's own embedding.
- `FlowSide`: an `nn.image.ImageSide` whose image network is a `FlowImage`: the same gene
  encoder (`code`), mask generator (`soft_masks`, `masks_of`) and `forward`, which integrates
  the ODE from `Noise.start` with MONAI's `RFlowScheduler` and classifier-free guidance
  against the encoder's learned "no genes" code (the code of image-only patients too).
- `velocity_loss`: the rectified-flow training loss.

The convention is MONAI's `RFlowScheduler`'s: timesteps t in [0, T] (T = `TIMESTEPS`),
x_t = (1 - t/T) x_0 + (t/T) noise, so t = T is pure noise and t = 0 the image; the velocity
is v = x_0 - noise; an Euler step from t down to t' is x_t + v (t - t') / T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import RFlowScheduler
from torch import nn

from radiogenomics.nn.image import (
    MASK_FEATURES,
    ImageSide,
    _mask_input,
    check_geometry,
    check_image,
)

TIMESTEPS = 1000  # the scheduler's num_train_timesteps


def scheduler() -> RFlowScheduler:
    """The flow's scheduler: integer timesteps in [0, T), drawn logit-normal in training
    (Esser et al. 2024: the middle of the path, where the velocity is hardest, is drawn most)."""
    return RFlowScheduler(
        num_train_timesteps=TIMESTEPS, use_discrete_timesteps=True, sample_method="logit-normal"
    )


class FlowImage(nn.Module):
    """(x_t (B, C, *S), t (B,), conditions (B, 1 or 2, *S) or None, code (B, n_code) or None)
    -> velocity (B, C, *S).

    `channels` are the U-Net's widths, fine to coarse, one level each (every level but the
    last halves the resolution); `num_res_blocks` residual blocks per level. `use_mask`: the
    mask (and with `mask_depth` its relative depth) as input channels. `n_code` > 0: the gene
    code as a cross-attention token and, with `code_embedding`, added to the time embedding
    through a linear map (every residual block reads it).
    """

    background_channels = 0  # the flow fuses no background (ImageGenerator's attribute)

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        image_size: Sequence[int],
        channels: Sequence[int] = (32, 64, 64),
        *,
        n_code: int = 64,
        use_mask: bool = True,
        mask_depth: bool = True,
        num_res_blocks: int = 1,
        code_embedding: bool = False,
    ):
        super().__init__()
        self.spatial_dims, self.out_channels = spatial_dims, out_channels
        self.image_size = check_geometry(spatial_dims, image_size, channels, "image.flow_channels")
        self.n_code, self.use_mask, self.mask_depth = n_code, use_mask, mask_depth
        mask_channels = (MASK_FEATURES if mask_depth else 1) if use_mask else 0
        self.start_shape = (out_channels, *self.image_size)  # what `Noise.draw` draws
        self.unet = DiffusionModelUNet(
            spatial_dims,
            out_channels + mask_channels,
            out_channels,
            num_res_blocks=num_res_blocks,
            channels=tuple(channels),
            attention_levels=(False,) * (len(channels) - 1) + (True,),
            norm_num_groups=math.gcd(8, *channels),  # group norm over groups that divide all
            num_head_channels=math.gcd(32, channels[-1]),
            with_conditioning=n_code > 0,
            cross_attention_dim=n_code or None,
            num_class_embeds=1 if code_embedding and n_code else None,
        )
        self.code_embedding = bool(code_embedding and n_code)
        if self.code_embedding:
            # MONAI's class embedding is a lookup of integer labels; a linear map of the gene
            # code in its place adds the code to the time embedding that every block reads
            width = self.unet.class_embedding.embedding_dim
            self.unet.class_embedding = nn.Linear(n_code, width)

    def forward(self, x, timesteps, conditions=None, code=None) -> torch.Tensor:
        check_image(x, self.spatial_dims, self.out_channels, "noisy image", self.image_size)
        if self.use_mask:
            if conditions is None:
                raise ValueError("this FlowImage is mask-conditioned: pass a mask")
            m = _mask_input(conditions, self.spatial_dims, self.image_size, self.mask_depth)
            x = torch.cat([x, m.to(x.dtype)], dim=1)
        context = None
        if self.n_code:
            if code is None or code.shape != (len(x), self.n_code):
                got = None if code is None else tuple(code.shape)
                raise ValueError(f"gene code has shape {got}; expected ({len(x)}, {self.n_code})")
            context = code[:, None, :]  # (B, 1 token, n_code)
        labels = code if self.code_embedding else None
        return self.unet(x, timesteps, context, class_labels=labels)


class FlowSide(ImageSide):
    """The image half of the patient chain with a rectified-flow image network.

    Parameters
    ----------
    encoder : GeneEncoder or None
        Expression (and gene latent) -> gene code; its `missing` code is the unconditional
        code of classifier-free guidance. None for images that follow no genes.
    image : FlowImage
    mask : MaskGenerator or None
    steps : int
        Euler steps of the ODE when sampling (`image.flow_steps`).
    guidance : float
        Classifier-free guidance scale w (`image.flow_guidance`): v(no genes) + w (v(genes)
        - v(no genes)).

    Examples
    --------
    >>> import torch
    >>> from radiogenomics.nn.image import GeneEncoder
    >>> from radiogenomics.nn.noise import Noise
    >>> side = FlowSide(GeneEncoder(5, 8), FlowImage(2, 1, (8, 8), (8, 8), n_code=8), None,
    ...     steps=2)
    >>> noise = Noise.draw(side, 3, torch.Generator().manual_seed(0))
    >>> code = side.code(torch.randn(3, 5), torch.ones(3, dtype=torch.bool))
    >>> tuple(side(code, noise, torch.ones(3, 1, 8, 8)).images.shape)
    (3, 1, 8, 8)
    """

    def __init__(self, encoder, image: FlowImage, mask, *, steps: int = 25, guidance: float = 1.0):
        super().__init__(encoder, image, mask)
        self.steps, self.guidance = int(steps), float(guidance)

    @property
    def scheduler(self) -> RFlowScheduler:
        """A fresh `scheduler()`: MONAI's is an `nn.Module` that never initialises as one
        (no state to save, and a copy of this side could not hold it as a child)."""
        return scheduler()

    def unconditional(self, code: torch.Tensor) -> torch.Tensor:
        """The "no genes" code (the encoder's `missing`) in the shape of `code`."""
        return self.encoder.missing.to(code.dtype).expand_as(code)

    def velocity(self, x, timesteps, conditions, code, guidance: float | None = None):
        """The guided velocity (B, C, *S): v(code) where the scale is 1 (or no genes),
        v(no genes) where it is 0, else both in one batch and v0 + w (v - v0)."""
        w = self.guidance if guidance is None else float(guidance)
        if code is None or w == 1:
            return self.image(x, timesteps, conditions, code)
        empty = self.unconditional(code)
        if w == 0:
            return self.image(x, timesteps, conditions, empty)
        both = self.image(
            torch.cat([x, x]),
            torch.cat([timesteps, timesteps]),
            None if conditions is None else torch.cat([conditions, conditions]),
            torch.cat([code, empty]),
        )
        v, v0 = both.chunk(2)
        return v0 + w * (v - v0)

    def integrate(self, start, conditions, code, *, steps=None, guidance=None) -> torch.Tensor:
        """Images (B, C, *S) in [-1, 1]: the ODE from `start` (t = T) to t = 0 in `steps`
        Euler steps (`RFlowScheduler.step`), with the guided velocity."""
        if start is None:
            raise ValueError(
                "the noise has no starting image for the flow: draw it with Noise.draw on this "
                "flow side"
            )
        sched = self.scheduler
        sched.set_timesteps(self.steps if steps is None else int(steps), device=start.device)
        times = sched.timesteps
        after = torch.cat([times[1:], times.new_zeros(1)])
        x = start
        for t, t_next in zip(times, after, strict=True):
            v = self.velocity(x, t.expand(len(x)), conditions, code, guidance)
            x, _ = sched.step(v, t, x, t_next)
        return x.clamp(-1, 1)

    def forward(
        self, code, noise, masks=None, background=None, *, straight_through: bool = False,
        images: bool = True, steps: int | None = None, guidance: float | None = None,
    ):  # fmt: skip
        """As `ImageSide.forward` (masks given, drawn or the whole patch), the images drawn by
        `integrate` from `noise.start`; `steps` and `guidance` override the side's."""
        if background is not None:
            raise ValueError("the flow backend fuses no background image")
        out = self.masks_of(code, noise, masks, straight_through=straight_through)
        if images:
            out.images = self.integrate(
                noise.start, out.conditions, code, steps=steps, guidance=guidance
            )
        return out


def velocity_loss(side: FlowSide, images, conditions, code, start, timesteps) -> torch.Tensor:
    """The rectified-flow loss: the mean squared error, in fp32, of the velocity the network
    predicts at x_t = `scheduler.add_noise(images, start, timesteps)` against the target
    images - start."""
    x_t = side.scheduler.add_noise(images, start, timesteps)
    v = side.image(x_t, timesteps, conditions, code)
    return (v.float() - (images.float() - start.float())).square().mean()
