"""Differentiable lesion-appearance descriptors of images inside fixed binary masks, 2D and
3D in one code path: the intensity counterparts of `nn.shape`'s shape descriptors.

Written by hand for the same reason as `nn.shape`: `radiomap.features` measures these with
NumPy, without gradients, and training needs them as functions of the generated image.
Gaussian smoothing is MONAI's (`GaussianFilter`'s kernels through `separable_filtering`).

`appearance_descriptors`: (B, 3)
- contrast: mean grey level in the lesion minus that in the ring `RING` voxels around it
  (`radiomap.features`' `contrast`, with a square ring);
- log texture: log of the standard deviation of the high-pass residual (image minus its
  Gaussian blur, sigma 1) over the lesion's interior (`lesion_features`' texture);
- dark fraction: the share of the lesion's interior darker than halfway between the ring's
  mean and the lesion's 80th percentile (of the image smoothed at sigma 0.7), a sigmoid of
  width `SOFTNESS` instead of a step (`lesion_features`' necrosis).
"""

from __future__ import annotations

import functools

import torch

from radiogenomics.nn.shape import dilate

DESCRIPTORS = ("contrast", "log_texture", "dark_fraction")
MIN_VOXELS = 4.0  # lesion, ring and interior voxels below which a descriptor is NaN
RING = 3  # voxels around the lesion
SOFTNESS = 0.05  # grey levels (images in [-1, 1]): the dark fraction's sigmoid width


@functools.lru_cache(maxsize=16)
def _kernels(spatial_dims: int, sigma: float, device: torch.device) -> tuple:
    """MONAI's `GaussianFilter(spatial_dims, sigma)` kernels, built once per device: the
    filter rebuilds them at every call, reading sigma into Python (a wait for the device on
    CUDA)."""
    from monai.networks.layers import GaussianFilter
    from monai.networks.layers.convutils import gaussian_1d

    f = GaussianFilter(spatial_dims, sigma)
    return tuple(gaussian_1d(s, truncated=f.truncated, approx=f.approx).to(device) for s in f.sigma)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`x` (B, C, *S) smoothed as MONAI's `GaussianFilter(spatial_dims, sigma)(x)` does."""
    from monai.networks.layers import separable_filtering

    return separable_filtering(x, list(_kernels(x.ndim - 2, sigma, x.device)))


def appearance_descriptors(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) images (channels averaged) and (B, 1, *S) masks (thresholded at 0.5, no
    gradient) -> (B, 3) `DESCRIPTORS`, differentiable in the images; a descriptor is NaN
    where its region has fewer than `MIN_VOXELS` voxels."""
    with torch.autocast(images.device.type, enabled=False):  # sums of squares need fp32
        grey = images.float().mean(1, keepdim=True)
        m = (masks.detach()[:, :1].float() > 0.5).float()
        return _descriptors(grey, m)


def _mean(x: torch.Tensor, w: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return (x * w).flatten(1).sum(1) / n.clamp_min(1.0)


def _descriptors(grey: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    d = grey.ndim - 2
    view = (-1, *[1] * (d + 1))
    ring = dilate(m, RING) - m
    interior = -dilate(-m, 1)
    n, n_ring, n_in = (t.flatten(1).sum(1) for t in (m, ring, interior))
    ring_mean = _mean(grey, ring, n_ring)
    contrast = _mean(grey, m, n) - ring_mean
    residual = grey - _gaussian(grey, 1.0)
    res_mean = _mean(residual, interior, n_in)
    log_texture = (
        0.5 * (_mean((residual - res_mean.view(view)).square(), interior, n_in) + 1e-8).log()
    )
    smooth = _gaussian(grey, 0.7)
    inside = torch.where(m > 0, smooth, torch.full_like(smooth, float("nan"))).flatten(1)
    # a lesion-free row's quantile is NaN (its descriptors are NaN anyway): zeroed, so no
    # NaN reaches the other rows' gradients through the backward pass
    top = torch.nan_to_num(torch.nanquantile(inside, 0.8, dim=1))
    dark = torch.sigmoid(((0.5 * (ring_mean + top)).view(view) - smooth) / SOFTNESS)
    dark_fraction = _mean(dark, interior, n_in)
    out = torch.stack([contrast, log_texture, dark_fraction], dim=1)
    ok = torch.stack([(n >= MIN_VOXELS) & (n_ring >= MIN_VOXELS), n_in >= MIN_VOXELS,
                      (n_in >= MIN_VOXELS) & (n_ring >= MIN_VOXELS)], dim=1)  # fmt: skip
    return torch.where(ok, out, torch.full_like(out, float("nan")))
