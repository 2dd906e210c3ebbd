"""Image-side networks from MONAI blocks, one code path for 2D and 3D (`spatial_dims`).

- `GeneEncoder(expression[, present]) -> gene code`: an MLP; patients without expression get a
  learned "no genes" code, so image-only patients train in the same batches.
- `ImageGenerator(mask, code, noise[, background]) -> image`: a decoder from a noise grid;
  at every scale the mask and its relative depth enter through SPADE (MONAI), the gene code
  through FiLM (the multi-scale gene fusion of Xu et al. 2019), per-pixel noise adds texture
  (its strength set by the genes through FiLM), and an optional
  background image is fused through learned gates. Output in [-1, 1].
- `MaskGenerator(code, noise) -> mask probabilities`: the same decoder without a mask input.
- `ImageCritic(image, mask, code) -> patch scores`: a PatchGAN (instance norm or none, never
  batch norm, which breaks the gradient penalty) with a projection term for the gene code.
- `GeneRegressor(image, mask) -> gene components`: a MONAI `Regressor` on the critic side that
  reads a patient's genes back from a real image (an auxiliary-classifier head for continuous
  conditions), so the generator can be asked for images whose genes can be read back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.blocks.spade_norm import SPADE
from monai.networks.layers.factories import Norm
from monai.networks.nets import Regressor
from torch import nn

from radiogenomics._device import to_device


def check_image(x: torch.Tensor, spatial_dims: int, channels: int, what: str, size=None) -> None:
    """ValueError naming the tensor when its shape is not `(B, channels, *size)`."""
    want = (channels, *size) if size is not None else None
    if (
        x.ndim != spatial_dims + 2
        or x.shape[1] != channels
        or (want is not None and tuple(x.shape[1:]) != tuple(want))
    ):
        spatial = "x".join(map(str, size)) if size is not None else f"{spatial_dims} dims"
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; expected (batch, {channels}, {spatial}) "
            f"for spatial_dims={spatial_dims}"
        )


def check_geometry(spatial_dims: int, image_size, channels, key: str) -> list[int]:
    """`image_size` as ints, after checking it against `spatial_dims` and a decoder or U-Net of
    `len(channels)` levels (each but the last halving it); `key` names the widths' config key
    in the error."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims}")
    size = [int(s) for s in image_size]
    if len(size) != spatial_dims:
        raise ValueError(f"image_size {size} does not have {spatial_dims} entries")
    factor = 2 ** (len(channels) - 1)
    if any(s % factor for s in size):
        raise ValueError(
            f"image_size {size} must be divisible by 2**(len({key}) - 1) = {factor} "
            f"({key}={list(channels)})"
        )
    return size


def _conv(
    spatial_dims, in_channels, out_channels, *, kernel_size=3, strides=1, norm=None, act=None
):
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=strides,
        kernel_size=kernel_size,
        norm=norm,
        act=act,
        padding=(kernel_size - 1) // 2 if strides == 1 else 1,
    )


PADDINGS = ("zeros", "reflect", "replicate")


def set_padding(module: nn.Module, mode: str) -> nn.Module:
    """Every padded convolution inside `module` pads with `mode` ('zeros', 'reflect' or
    'replicate'); returns `module`.

    Zero padding prints a frame along a generated image's border: every convolution sees a
    rim of zeros there that no real image has, and a generator learns to draw with it (a
    bright or dark frame, blobs in the corners). Reflection padding shows the convolutions
    a continuation of the image instead. MONAI's `Convolution` takes no padding mode, so it is
    set on the torch convolutions it builds, SPADE's included.
    """
    if mode not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}; got {mode!r}")
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and any(p > 0 for p in _pads(m)):
            m.padding_mode = mode
    return module


def _pads(conv) -> tuple:
    return conv.padding if isinstance(conv.padding, tuple) else (1,)  # 'same' pads


def _downsample(mask: torch.Tensor, size) -> torch.Tensor:
    """Area-averaged mask at `size`: a soft boundary at coarse scales, not nearest aliasing."""
    pool = F.adaptive_avg_pool2d if mask.ndim == 4 else F.adaptive_avg_pool3d
    return pool(mask, list(size))


@torch.no_grad()
def mask_depth(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, *S) mask -> (B, 1, *S) depth: the distance to the lesion's edge over the largest
    such distance in the sample, 0 outside and 1 at the lesion's centre.

    Relative depth lets a network place a core that is a fraction of the lesion (necrosis)
    with one threshold, where a bare mask would need the whole lesion in its receptive field.
    MONAI's EDT (cuCIM on CUDA when installed, else SciPy) works per channel: batch rows are
    passed as channels.
    """
    from monai.transforms.utils import distance_transform_edt

    # one background voxel around the field: a lesion cut by the edge (or filling the
    # field) then has its depth measured to the edge, not left without a zero to measure from
    binary = F.pad((mask[:, 0] > 0.5).float(), [1, 1] * (mask.ndim - 2))
    inner = (slice(None), *[slice(1, -1)] * (mask.ndim - 2))
    depth = torch.as_tensor(distance_transform_edt(binary))[inner]
    depth = depth.to(mask.device, torch.float32).unsqueeze(1)
    peak = depth.flatten(1).amax(1).clamp_min(1.0).view(-1, *([1] * (depth.ndim - 1)))
    return (depth / peak).to(mask.dtype)


MASK_FEATURES = 2  # channels of mask_features


def mask_features(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, *S) -> (B, 2, *S): the mask and its relative depth (`mask_depth`)."""
    return torch.cat([mask, mask_depth(mask)], dim=1)


def _mask_input(mask: torch.Tensor, spatial_dims: int, size, depth: bool) -> torch.Tensor:
    """A mask `(B, 1, *S)`, or its `mask_features` `(B, 2, *S)` that a training loop computed
    once for its fixed masks, as the network's mask channels (with depth or without)."""
    if mask.ndim == spatial_dims + 2 and mask.shape[1] == MASK_FEATURES:
        check_image(mask, spatial_dims, MASK_FEATURES, "mask features", size)
        return mask if depth else mask[:, :1]
    check_image(mask, spatial_dims, 1, "mask", size)
    return mask_features(mask) if depth else mask


class GeneEncoder(nn.Module):
    """(expression (B, n_genes)[, present (B,) bool][, latent (B, n_latent)]) -> gene code
    (B, n_code).

    Expression is on the model's standardised scale. Rows with `present` False (patients
    without expression) get the learned `missing` code instead. With `n_latent` > 0 the gene
    generator's latent (its last hidden layer) enters beside the expression; real patients,
    who have no latent, take the learned `no_latent` vector in its place.
    """

    def __init__(
        self,
        n_genes: int,
        n_code: int = 64,
        *,
        n_hidden: int = 256,
        n_layers: int = 2,
        n_latent: int = 0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_genes + n_latent
        for _ in range(n_layers):
            layers += [nn.Linear(width, n_hidden), nn.LeakyReLU(0.2)]
            width = n_hidden
        layers.append(nn.Linear(width, n_code))
        self.mlp = nn.Sequential(*layers)
        self.missing = nn.Parameter(torch.zeros(n_code))
        self.no_latent = nn.Parameter(torch.zeros(n_latent)) if n_latent else None
        self.n_genes, self.n_code, self.n_latent = n_genes, n_code, n_latent

    def forward(
        self,
        expression: torch.Tensor,
        present: torch.Tensor | None = None,
        latent: torch.Tensor | None = None,
    ):
        if expression.ndim != 2 or expression.shape[1] != self.n_genes:
            raise ValueError(
                f"expression has shape {tuple(expression.shape)}; expected (batch, {self.n_genes})"
            )
        x = expression
        if self.n_latent:
            if latent is None:
                latent = self.no_latent.to(x.dtype).expand(len(x), -1)
            elif latent.shape != (len(x), self.n_latent):
                raise ValueError(
                    f"gene latent has shape {tuple(latent.shape)}; expected "
                    f"({len(x)}, {self.n_latent})"
                )
            x = torch.cat([x, latent.to(x.dtype)], dim=1)
        elif latent is not None:
            raise ValueError("this GeneEncoder takes no gene latent (n_latent=0)")
        code = self.mlp(x)
        if present is None:
            return code
        return torch.where(present[:, None].bool(), code, self.missing.to(code.dtype))


class FiLM(nn.Module):
    """x * (1 + gamma(code)) + beta(code), per channel; zero-initialised, so it starts as identity."""

    def __init__(self, n_code: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(n_code, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.linear(code).chunk(2, dim=1)
        view = (*gamma.shape, *([1] * (x.ndim - 2)))  # (B, C, 1, ...)
        return x * (1 + gamma.view(view)) + beta.view(view)


class _DecoderBlock(nn.Module):
    """conv -> SPADE(mask, depth) or instance norm -> + noise -> FiLM(code) -> LeakyReLU
    [-> gate]. The noise enters before FiLM so that the genes can set its strength (texture)."""

    def __init__(
        self,
        spatial_dims,
        in_channels,
        out_channels,
        *,
        use_mask,
        n_code,
        bg_channels,
        mask_channels,
    ):
        super().__init__()
        self.conv = _conv(spatial_dims, in_channels, out_channels)
        self.norm = (
            SPADE(
                mask_channels,
                out_channels,
                spatial_dims=spatial_dims,
                hidden_channels=min(64, 2 * out_channels),
            )
            if use_mask
            else Norm[Norm.INSTANCE, spatial_dims](out_channels, affine=True)
        )
        self.film = FiLM(n_code, out_channels) if n_code else None
        self.noise_weight = nn.Parameter(torch.zeros(1, out_channels, *([1] * spatial_dims)))
        self.gate = (
            _conv(spatial_dims, out_channels + bg_channels + mask_channels, out_channels)
            if bg_channels
            else None
        )
        self.bg_proj = (
            _conv(spatial_dims, bg_channels, out_channels, kernel_size=1) if bg_channels else None
        )

    def forward(self, x, mask, code, noise_map, bg):
        x = self.conv(x)
        x = self.norm(x, mask) if isinstance(self.norm, SPADE) else self.norm(x)
        x = x + self.noise_weight * noise_map
        if self.film is not None:
            x = self.film(x, code)  # after the noise, so the genes also scale its strength
        x = F.leaky_relu(x, 0.2)
        if self.gate is not None:
            # Xu et al.: the background enters through learned gates, g * generated + (1 - g) * bg
            b = self.bg_proj(bg)
            g = torch.sigmoid(self.gate(torch.cat([x, bg, mask], dim=1)))
            x = g * x + (1 - g) * b
        return x


class ImageGenerator(nn.Module):
    """(mask (B, 1, *S), code (B, n_code), noise (B, n_noise)[, background (B, C, *S)]) -> image.

    `channels` are the decoder widths, coarse to fine: the noise is projected to a grid of
    `image_size / 2**(len(channels) - 1)` and each further block doubles it. `activation`
    'tanh' gives images in [-1, 1]; 'sigmoid' gives probabilities (the MaskGenerator).
    `mask_depth` adds the mask's relative depth to SPADE's input; the mask may also come as
    precomputed `mask_features` (B, 2, *S). `padding`: how every convolution pads
    (`set_padding`). `output_noise`: per-pixel noise added after the last convolution (the
    finest scale's noise map, its strength per channel set by the gene code), so the output
    can carry texture that the head convolution would otherwise smooth.
    """

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        image_size: Sequence[int],
        channels: Sequence[int] = (128, 64, 32, 16),
        *,
        n_noise: int = 64,
        n_code: int = 64,
        use_mask: bool = True,
        background_channels: int = 0,
        activation: str = "tanh",
        mask_depth: bool = True,
        padding: str = "zeros",
        output_noise: bool = False,
    ):
        super().__init__()
        self.spatial_dims, self.out_channels = spatial_dims, out_channels
        self.image_size = check_geometry(spatial_dims, image_size, channels, "image.channels")
        factor = 2 ** (len(channels) - 1)
        self.base = [s // factor for s in self.image_size]
        if padding == "reflect" and min(self.base) < 2:
            raise ValueError(
                f"padding 'reflect' needs a coarsest grid of >= 2 pixels a side; image_size "
                f"{self.image_size} with {len(channels)} scales gives {self.base} (use "
                "'replicate' or fewer image.channels)"
            )
        self.channels = list(channels)
        self.n_noise, self.n_code, self.use_mask = n_noise, n_code, use_mask
        self.background_channels = background_channels
        self.mask_depth = mask_depth
        mask_channels = MASK_FEATURES if mask_depth else 1
        self.fc = nn.Linear(n_noise, channels[0] * math.prod(self.base))
        self.blocks = nn.ModuleList()
        prev = channels[0]
        for ch in channels:
            self.blocks.append(
                _DecoderBlock(
                    spatial_dims,
                    prev,
                    ch,
                    use_mask=use_mask,
                    n_code=n_code,
                    bg_channels=ch if background_channels else 0,
                    mask_channels=mask_channels,
                )
            )
            prev = ch
        # Background pyramid, fine to coarse: one stride-2 conv per scale.
        self.bg_encoder = nn.ModuleList()
        if background_channels:
            fine_to_coarse = self.channels[::-1]
            prev = background_channels
            for i, ch in enumerate(fine_to_coarse):
                self.bg_encoder.append(
                    _conv(
                        spatial_dims,
                        prev,
                        ch,
                        strides=1 if i == 0 else 2,
                        kernel_size=3,
                        norm=Norm.INSTANCE,
                        act=("leakyrelu", {"negative_slope": 0.2}),
                    )
                )
                prev = ch
        self.head = _conv(spatial_dims, channels[-1], out_channels)
        if activation not in ("tanh", "sigmoid"):
            raise ValueError(f"activation must be 'tanh' or 'sigmoid'; got {activation!r}")
        self.activation = activation
        # strength of the output noise, per channel: bias + W code, zero at the start
        self.output_noise = nn.Linear(max(n_code, 1), out_channels) if output_noise else None
        if self.output_noise is not None:
            nn.init.zeros_(self.output_noise.weight)
            nn.init.zeros_(self.output_noise.bias)
        set_padding(self, padding)

    def scale_sizes(self) -> list[list[int]]:
        return [[b * 2**i for b in self.base] for i in range(len(self.channels))]

    def noise_maps(self, batch: int, *, generator: torch.Generator | None = None, device=None):
        """Per-pixel noise, one map `(B, 1, *size)` per scale; drawn with `generator` so that a
        seeded caller samples reproducibly."""
        return [
            to_device(torch.randn((batch, 1, *size), generator=generator), device)
            for size in self.scale_sizes()
        ]

    def forward(
        self,
        mask: torch.Tensor | None,
        code: torch.Tensor | None,
        noise: torch.Tensor,
        background: torch.Tensor | None = None,
        noise_maps: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B = noise.shape[0]
        if noise.ndim != 2 or noise.shape[1] != self.n_noise:
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}; expected (batch, {self.n_noise})"
            )
        if self.use_mask:
            if mask is None:
                raise ValueError("this ImageGenerator is mask-conditioned: pass a mask")
            mask = _mask_input(
                mask.to(noise.dtype), self.spatial_dims, self.image_size, self.mask_depth
            )
        if self.n_code:
            if code is None or code.shape != (B, self.n_code):
                got = None if code is None else tuple(code.shape)
                raise ValueError(f"gene code has shape {got}; expected ({B}, {self.n_code})")
        bg_feats: list = [None] * len(self.channels)
        if self.background_channels:
            if background is None:
                raise ValueError("this ImageGenerator fuses a background image: pass one")
            check_image(
                background,
                self.spatial_dims,
                self.background_channels,
                "background",
                self.image_size,
            )
            h, feats = background, []
            for enc in self.bg_encoder:
                h = enc(h)
                feats.append(h)
            bg_feats = feats[::-1]  # coarse to fine, like the decoder
        if noise_maps is None:
            noise_maps = self.noise_maps(B, device=noise.device)
        x = self.fc(noise).view(B, self.channels[0], *self.base)  # (B, C, *base)
        for i, (block, size) in enumerate(zip(self.blocks, self.scale_sizes(), strict=True)):
            if i:
                # linear, not nearest: a coarse scale's noise would otherwise print as blocks
                mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
                x = F.interpolate(x, scale_factor=2, mode=mode, align_corners=False)
            m = (
                _downsample(mask, size)
                if mask is not None
                else x.new_zeros(B, MASK_FEATURES if self.mask_depth else 1, *size)
            )
            x = block(x, m, code, noise_maps[i].to(x.dtype), bg_feats[i])
        x = self.head(x)
        if self.output_noise is not None:
            c = code if self.n_code else x.new_ones(B, 1)
            strength = self.output_noise(c.to(x.dtype))  # (B, C_out)
            x = x + strength.view(B, -1, *([1] * self.spatial_dims)) * noise_maps[-1].to(x.dtype)
        return torch.tanh(x) if self.activation == "tanh" else torch.sigmoid(x)


class MaskGenerator(ImageGenerator):
    """(code (B, n_code), noise (B, n_noise)) -> lesion mask probabilities (B, 1, *S).

    The ImageGenerator's decoder without a mask: the gene code modulates every scale, so lesion
    shape can depend on the genes in fully synthetic patients. Threshold at 0.5 for a mask.
    """

    def __init__(
        self,
        spatial_dims,
        image_size,
        channels=(128, 64, 32, 16),
        *,
        n_noise=64,
        n_code=64,
        padding="zeros",
    ):
        super().__init__(
            spatial_dims,
            1,
            image_size,
            channels,
            n_noise=n_noise,
            n_code=n_code,
            use_mask=False,
            activation="sigmoid",
            padding=padding,
        )

    def forward(self, code, noise, noise_maps=None):  # type: ignore[override]
        return super().forward(None, code, noise, noise_maps=noise_maps)


class ImageCritic(nn.Module):
    """(image (B, C, *S)[, mask (B, 1, *S)][, code (B, n_code)]) -> patch scores (B, 1, *s).

    A PatchGAN of stride-2 4x4 convolutions with LeakyReLU; instance norm (or none) after the
    first layer. The gene code enters as a projection term (Miyato & Koyama 2018) at every
    patch: score = psi(h) + <embed(code), h>, so the critic can tell right genes from wrong
    ones, which is what the matching-aware negatives train.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 128),
        *,
        use_mask: bool = True,
        n_code: int = 0,
        norm: str = "instance",
        mask_depth: bool = False,
    ):
        super().__init__()
        if norm not in ("instance", "none"):
            raise ValueError(
                f"critic norm must be 'instance' or 'none' (never batch); got {norm!r}"
            )
        self.spatial_dims, self.in_channels, self.use_mask, self.n_code = (
            spatial_dims,
            in_channels,
            use_mask,
            n_code,
        )
        layers: list[nn.Module] = []
        self.mask_depth = mask_depth
        prev = in_channels + ((MASK_FEATURES if mask_depth else 1) if use_mask else 0)
        for i, ch in enumerate(channels):
            layers.append(
                Convolution(
                    spatial_dims,
                    prev,
                    ch,
                    strides=2,
                    kernel_size=4,
                    padding=1,
                    norm=(Norm.INSTANCE, {"affine": True}) if (i and norm == "instance") else None,
                    act=("leakyrelu", {"negative_slope": 0.2}),
                )
            )
            prev = ch
        self.features = nn.Sequential(*layers)
        self.psi = _conv(spatial_dims, prev, 1)
        self.embed = nn.Linear(n_code, prev, bias=False) if n_code else None

    def forward(self, image, mask=None, code=None) -> torch.Tensor:
        return self.head(self.trunk(image, mask), code)

    def trunk(self, image, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The part of the score that the gene code does not enter: the patch features h
        (B, F, *s) and psi(h) (B, 1, *s). `head` finishes the score for a code, so scores
        of one image and mask under other codes (matching-aware negatives) reuse them."""
        check_image(image, self.spatial_dims, self.in_channels, "image")
        x = image
        if self.use_mask:
            if mask is None:
                raise ValueError("this ImageCritic is mask-conditioned: pass a mask")
            mask = _mask_input(
                mask.to(image.dtype), self.spatial_dims, image.shape[2:], self.mask_depth
            )
            x = torch.cat([image, mask], dim=1)
        h = self.features(x)  # (B, F, *s)
        return h, self.psi(h)

    def head(self, trunk: tuple[torch.Tensor, torch.Tensor], code=None) -> torch.Tensor:
        """The patch scores (B, 1, *s) from `trunk`'s (h, psi(h)) and the gene code."""
        h, score = trunk
        if self.embed is not None:
            if code is None:
                raise ValueError("this ImageCritic has a gene projection: pass a gene code")
            # the critic's code comes from autocast; the gradient penalty runs without it
            e = self.embed(code.to(self.embed.weight.dtype)).view(
                *code.shape[:1], -1, *([1] * self.spatial_dims)
            )
            score = score + (h * e).sum(dim=1, keepdim=True)
        return score


class GeneRegressor(nn.Module):
    """(image (B, C, *S), mask (B, 1 or 2, *S)) -> (B, n_out) gene components.

    Trained on real paired patients only (AC-GAN's auxiliary classifier trained on real data,
    with a regression for continuous genes): what it learns to read is what real images carry.
    The mask is an input, so what the lesion's shape already tells is not asked of the pixels.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        size: Sequence[int],
        n_out: int,
        channels: Sequence[int] = (32, 64, 128),
    ):
        super().__init__()
        self.spatial_dims, self.in_channels, self.size = spatial_dims, in_channels, list(size)
        self.net = Regressor(
            in_shape=(in_channels + 1, *size),
            out_shape=(n_out,),
            channels=tuple(channels),
            strides=(2,) * len(channels),
            num_res_units=1,
            dropout=0.1,  # a little regularisation; on 270 phantom images it still memorises
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_image(image, self.spatial_dims, self.in_channels, "image", self.size)
        m = _mask_input(mask.to(image.dtype), self.spatial_dims, image.shape[2:], False)
        return self.net(torch.cat([image, m], dim=1))


@dataclasses.dataclass
class Generated:
    """What one pass of the patient chain made, for B patients.

    Attributes
    ----------
    images : torch.Tensor
        (B, C, *S) in [-1, 1].
    masks : torch.Tensor
        (B, 1, *S) binary masks the images were drawn in (straight-through in training: the
        binary mask forward, the soft mask's gradient backward).
    conditions : torch.Tensor or None
        The masks as the image networks take them: mask and relative depth (B, 2, *S); None
        for an image side without masks.
    soft_masks : torch.Tensor or None
        (B, 1, *S) mask generator probabilities, where the masks were generated.
    code : torch.Tensor or None
        (B, n_code) gene code the images follow.
    expression, latent, present : torch.Tensor or None
        The generated standardised expression (B, n_genes), the gene generator's latent and
        presence flags, for fully synthetic patients (`nn.joint.JointGenerator`).
    """

    images: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    conditions: torch.Tensor | None = None
    soft_masks: torch.Tensor | None = None
    code: torch.Tensor | None = None
    expression: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    present: torch.Tensor | None = None

    @property
    def critic_masks(self) -> torch.Tensor:
        """The mask channels a critic takes: `conditions`, else the binary masks."""
        return self.masks if self.conditions is None else self.conditions


def binarize(soft_masks: torch.Tensor, *, straight_through: bool = False) -> torch.Tensor:
    """Binary masks (> 0.5) of mask probabilities; with `straight_through`, the binary mask
    forward and the soft mask's gradient backward (how the chain trains its mask generator
    through the image critic)."""
    hard = (soft_masks.detach().float() > 0.5).to(soft_masks.dtype)
    # (soft - soft.detach()) is exactly 0 forward, so the mask stays binary in bf16 too, where
    # hard + soft - soft.detach() rounds
    return hard + (soft_masks - soft_masks.detach()) if straight_through else hard


class ImageSide(nn.Module):
    """The image half of the patient chain: gene code -> mask -> image.

    Parameters
    ----------
    encoder : GeneEncoder or None
        Expression (and gene latent) -> gene code; None for images that follow no genes.
    image : ImageGenerator
    mask : MaskGenerator or None
        Draws lesion masks from the gene code; None where masks are always given.

    Examples
    --------
    >>> import torch
    >>> from radiogenomics.nn.noise import Noise
    >>> side = ImageSide(GeneEncoder(5, 8), ImageGenerator(2, 1, (16, 16), (8, 4), n_noise=4,
    ...     n_code=8), MaskGenerator(2, (16, 16), (8, 4), n_noise=4, n_code=8))
    >>> noise = Noise.draw(side, 3, torch.Generator().manual_seed(0))
    >>> out = side(side.code(torch.randn(3, 5), torch.ones(3, dtype=torch.bool)), noise)
    >>> tuple(out.images.shape), tuple(out.masks.shape)
    ((3, 1, 16, 16), (3, 1, 16, 16))
    """

    def __init__(self, encoder, image, mask):
        super().__init__()
        self.encoder, self.image, self.mask = encoder, image, mask

    def code(self, expression, present, latent=None):
        """The gene code (B, n_code) of standardised expression; None without an encoder.
        `latent` is passed on only to an encoder that reads the gene latent."""
        if self.encoder is None:
            return None
        return self.encoder(expression, present, latent if self.encoder.n_latent else None)

    def soft_masks(self, code, noise) -> torch.Tensor:
        """(B, 1, *S) mask probabilities the mask generator draws for `code` and `noise`."""
        if self.mask is None:
            raise ValueError("this image side has no mask generator (image.train_masks=false)")
        return self.mask(code, noise.mask_vector, noise.mask_maps)

    def forward(
        self, code, noise, masks=None, background=None, *, straight_through: bool = False,
        images: bool = True,
    ) -> Generated:  # fmt: skip
        """Images for the gene `code` (B, n_code) and `noise` (`nn.noise.Noise`), drawn in
        the given `masks` ((B, 1, *S), or mask and depth (B, 2, *S)), else in masks the mask
        generator draws (hard; with `straight_through`, the soft mask's gradient backward),
        else (a side without masks) in the whole patch. `background` (B, C, *S): the image
        with the lesion cut out, for a side that fuses one. `images` False: the chain up to
        the masks only (`Generated.images` None)."""
        out = self.masks_of(code, noise, masks, straight_through=straight_through)
        if images:
            out.images = self.image(out.conditions, code, noise.image, background, noise.image_maps)
        return out

    def masks_of(self, code, noise, masks=None, *, straight_through: bool = False) -> Generated:
        """The masks images are drawn in (`forward` without the images): the given `masks`,
        else the mask generator's for `code` and `noise`, else (a side without masks) the whole
        patch; with the mask channels the image network takes (`Generated.conditions`)."""
        soft = None
        if masks is None:
            if self.mask is not None:
                soft = self.soft_masks(code, noise)
                masks = binarize(soft, straight_through=straight_through)
            elif self.image.use_mask:
                raise ValueError("this image side draws no masks (no mask generator): pass masks")
            else:
                n = len(noise)
                masks = torch.ones(n, 1, *self.image.image_size, device=_device_of(noise, code))
        conditions = None
        if masks.shape[1] == MASK_FEATURES:
            conditions, masks = (masks if self.image.use_mask else None), masks[:, :1]
        elif self.image.use_mask:
            conditions = mask_features(masks)
        return Generated(None, masks, conditions, soft, code)


def _device_of(noise, code) -> torch.device:
    """Where a batch's tensors live: its noise's, else its gene code's, else the CPU."""
    for x in (noise.image, noise.start, noise.mask, code):
        if x is not None:
            return x.device
    return torch.device("cpu")


class CriticSide(nn.Module):
    """The critic side: its own gene encoder (the generator's cannot be trusted to keep codes
    apart), the image critic, (optionally) the mask critic, the gene regressor and the
    segmenter (a `SegmentationNet` that reads the mask back from an image)."""

    def __init__(self, encoder, image, mask, regressor=None, segmenter=None):
        super().__init__()
        self.encoder, self.image, self.mask = encoder, image, mask
        self.regressor, self.segmenter = regressor, segmenter

    def code(self, expression, present, latent=None):
        return None if self.encoder is None else self.encoder(expression, present, latent)
