"""The segmentation net: a MONAI U-Net, tensors in and out, one code path for 2D and 3D.

    net = SegmentationNet(spatial_dims=2, in_channels=1, channels=[16, 32, 64], strides=[2, 2])
    logits = net(images)                 # (B, 1, *spatial); sigmoid -> lesion probability
    features = net.encoder_features(x)   # (B, channels[-1]): pooled deepest encoder level

It segments real images that lack masks and scores synthetic ones (Dice of its segmentation
against the mask they were generated from); its pooled bottleneck features serve as an image
embedding (Frechet distance on segmentation-net features).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from torch import nn


class SegmentationNet(nn.Module):
    """`(B, in_channels, *spatial)` images in [-1, 1] -> `(B, 1, *spatial)` lesion logits.

    A MONAI `UNet` (attribute `unet`) with instance norm (no batch norm: the net also scores
    single synthetic images and small batches). Each spatial size must be divisible by the
    product of `strides`, the total downsampling of the encoder.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims}")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"strides needs len(channels) - 1 = {len(channels) - 1} entries; got {list(strides)}"
            )
        self.spatial_dims, self.in_channels, self.out_channels = (
            spatial_dims,
            in_channels,
            out_channels,
        )
        self.channels, self.strides = list(channels), list(strides)
        self.divisor = math.prod(self.strides)
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=self.channels,
            strides=self.strides,
            num_res_units=num_res_units,
            dropout=dropout,
            norm="instance",
        )
        self._bottom = unet_bottom(self.unet)

    @property
    def n_features(self) -> int:
        """Width of `encoder_features`: the channels of the deepest level."""
        return self.channels[-1]

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError unless `x` is `(B, in_channels, *spatial)` with divisible spatial sizes."""
        want = f"(B, {self.in_channels}, " + ", ".join(["*"] * self.spatial_dims) + ")"
        shape = tuple(x.shape)
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"SegmentationNet (spatial_dims={self.spatial_dims}) takes {want} images; "
                f"got shape {shape} with {x.ndim - 2} spatial dims"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"SegmentationNet takes {want} images ({self.in_channels} channel(s)); got shape "
                f"{shape} with {x.shape[1]} channel(s)"
            )
        bad = [s for s in shape[2:] if s % self.divisor]
        if bad:
            raise ValueError(
                f"SegmentationNet: spatial size {shape[2:]} of input {shape} must be divisible "
                f"by {self.divisor} (the product of strides {self.strides}); resize the images "
                f"(data.image_size) to multiples of {self.divisor}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.unet(x)

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, channels[-1])`: the deepest encoder level, global-average-pooled.

        MONAI's UNet nests `Sequential(down, SkipConnection(inner), up)` blocks; the innermost
        `SkipConnection` wraps the bottom layer (no further skip inside), found once at
        construction by walking the modules. A forward hook on it catches its output
        `(B, channels[-1], *spatial / prod(strides))` during an ordinary forward pass, so the
        features follow MONAI's own wiring whatever `num_res_units` or depth. The decoder runs
        too (the hook does not cut the pass short); gradients flow as in `forward`.
        """
        self.check_input(x)
        caught: list[torch.Tensor] = []
        handle = self._bottom.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            self.unet(x)
        finally:
            handle.remove()
        (bottom,) = caught
        return bottom.float().mean(dim=tuple(range(2, bottom.ndim)))  # (B, F, *s) -> (B, F)


def unet_bottom(unet: nn.Module) -> nn.Module:
    """The bottom layer of a MONAI UNet: the submodule of the SkipConnection that holds no
    other SkipConnection."""
    skips = [m for m in unet.modules() if isinstance(m, SkipConnection)]
    inner = [
        s for s in skips if not any(isinstance(m, SkipConnection) for m in s.submodule.modules())
    ]
    if len(inner) != 1:
        raise RuntimeError(
            f"cannot find the bottom layer of this MONAI UNet ({len(skips)} skip connections, "
            f"{len(inner)} innermost); has MONAI changed its UNet layout?"
        )
    return inner[0].submodule
