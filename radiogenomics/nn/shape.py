"""Differentiable lesion-shape descriptors of (soft or binary) masks, 2D and 3D in one code path.

Written by hand: MONAI and scikit-image measure shape on binary masks with NumPy, without
gradients; training and the learned map's autograd need the same quantities as functions of
a mask generator's output.

- `mask_moments`: voxel count, centroid and coordinate covariance of mask-weighted voxels.
- `radial_extent`: the lesion's extent along rays from its centroid (the boundary radius of
  a star-shaped lesion), a smooth function of the mask through bilinear sampling.
- `shape_descriptors`: (B, 3) log area, log axis ratio (sqrt of the covariance's largest over
  smallest eigenvalue) and margin irregularity: the angular standard deviation of the
  boundary radius over the radius of the moment-matched ellipse (ellipsoid) in the same
  direction, 0 for an ellipse, larger for a lobulated or spiculated margin.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

DESCRIPTORS = ("log_area", "log_axis_ratio", "radial_irregularity")
MIN_AREA = 4.0  # voxels: below this a lesion has no shape to describe (NaN)
RAY_STEP = 0.5  # voxels between samples along a ray


def mask_moments(mask: torch.Tensor):
    """(B, *S) mask weights -> (area (B,), centre (B, d), covariance (B, d, d), grid (N, d)),
    the covariance unbiased over the weighted voxels, as `radiomap.features` measures it."""
    d = mask.ndim - 1
    axes = [torch.arange(s, device=mask.device, dtype=mask.dtype) for s in mask.shape[1:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
    w = mask.flatten(1)
    area = w.sum(1)
    centre = (w @ grid) / area.clamp_min(1e-6)[:, None]
    dx = grid[None] - centre[:, None]
    cov = torch.einsum("bn,bni,bnj->bij", w, dx, dx) / (area - 1).clamp_min(1e-6)[:, None, None]
    return area, centre, cov, grid


def dilate(m: torch.Tensor, r: int, *, cross: bool = False) -> torch.Tensor:
    """Grey dilation of (B, C, *S) by a (2r+1)-wide square (cube), zero outside the field;
    `-dilate(-m, r)` erodes. With `cross`, `r` dilations by the cross (scipy's default
    structure), so a binary mask dilates exactly as `scipy.ndimage.binary_dilation(m, None,
    r)`, as the map features' ring does. Max passes the gradient through."""
    if not cross:
        pool = F.max_pool2d if m.ndim == 4 else F.max_pool3d
        return pool(m, 2 * r + 1, stride=1, padding=r)
    for _ in range(r):
        out = m
        for ax in range(2, m.ndim):
            pad = [0, 0] * (m.ndim - 2)
            k = 2 * (m.ndim - 1 - ax)
            pad[k] = pad[k + 1] = 1
            p = F.pad(m, pad)  # zero outside
            n = m.shape[ax]
            out = torch.maximum(out, torch.maximum(p.narrow(ax, 0, n), p.narrow(ax, 2, n)))
        m = out
    return m


@functools.lru_cache(maxsize=2)
def ray_directions(spatial_dims: int) -> torch.Tensor:
    """Unit ray directions (n, d), in the mask's axis order: 64 evenly spaced angles in 2D,
    128 near-uniform points of the sphere (a Fibonacci lattice) in 3D. Cached: every
    training step measures its masks along the same rays (callers copy, never modify)."""
    if spatial_dims == 2:
        t = torch.arange(64, dtype=torch.float64) * (2 * math.pi / 64)
        return torch.stack([t.cos(), t.sin()], dim=1)
    n = 128
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = k * math.pi * (3 - math.sqrt(5))
    r = (1 - z**2).sqrt()
    return torch.stack([z, r * phi.cos(), r * phi.sin()], dim=1)


def radial_extent(mask: torch.Tensor, centre: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """(B, *S) mask, (B, d) centres, (n, d) unit directions -> (B, n): the integral of the
    mask along each ray from the centre (voxels), i.e. the boundary radius where the lesion
    is star-shaped about its centre; linearly interpolated, zero outside the field."""
    B, spatial = mask.shape[0], mask.shape[1:]
    d = len(spatial)
    steps = torch.arange(0.0, max(spatial) * 0.75, RAY_STEP, device=mask.device, dtype=mask.dtype)
    dirs = dirs.to(mask.device, mask.dtype)
    points = centre[:, None, None] + steps[None, None, :, None] * dirs[None, :, None]  # (B,n,s,d)
    size = torch.tensor(spatial, device=mask.device, dtype=mask.dtype)
    grid = (2 * points / (size - 1) - 1).flip(-1)  # grid_sample wants x (the last axis) first
    if d == 3:
        grid = grid[:, None]  # (B, 1, n, s, 3)
    sampled = F.grid_sample(mask[:, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)  # fmt: skip
    return sampled.reshape(B, dirs.shape[0], len(steps)).sum(-1) * RAY_STEP


def shape_descriptors(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, *S) mask (probabilities or binary) -> (B, 3) `DESCRIPTORS`; NaN rows for
    lesions under `MIN_AREA` voxels.

    The ellipse that the margin is measured against has the lesion's centroid and
    covariance: a uniform ellipsoid with semi-axes a_i has variances a_i^2 / (d + 2), so its
    radius along a unit direction u is sqrt((d + 2) / u^T cov^-1 u)."""
    with torch.autocast(mask.device.type, enabled=False):  # moments need fp32 under bf16
        return _descriptors(mask[:, 0].float())


def _descriptors(m: torch.Tensor) -> torch.Tensor:
    d = m.ndim - 1
    area, centre, cov, _ = mask_moments(m)
    eig = torch.linalg.eigvalsh(cov).clamp_min(1e-6)
    log_ratio = 0.5 * (eig[:, -1].log() - eig[:, 0].log())
    eye = torch.eye(d, device=m.device, dtype=m.dtype)
    inv = torch.linalg.inv(cov + 1e-3 * eye)
    dirs = ray_directions(d).to(m.device, m.dtype)
    ellipse = ((d + 2) / torch.einsum("ni,bij,nj->bn", dirs, inv, dirs).clamp_min(1e-6)).sqrt()
    radius = radial_extent(m, centre, dirs)
    irregularity = (radius / ellipse).std(dim=1)
    out = torch.stack([area.clamp_min(1e-6).log(), log_ratio, irregularity], dim=1)
    return torch.where((area >= MIN_AREA)[:, None], out, torch.full_like(out, float("nan")))
