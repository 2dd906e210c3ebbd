"""The map features' names and the lesion geometry shared by the lesion-by-lesion code
(`radiogenomics.radiomap.features`) and the code for a whole stack
(`radiogenomics.radiomap.batched`): both import this module, and neither imports the other
back (features uses batched for `image_feature_batch`).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import ConvexHull

N_LEVELS = 32  # fixed-range bins over [-1, 1] for the entropy histogram and the GLCM
MIN_VOXELS = 3  # smaller lesions have no shape or texture
FIRSTORDER = tuple(
    "firstorder_" + k for k in "mean std skewness kurtosis p10 p90 entropy energy range".split()
)
SHAPE = tuple(
    "shape_" + k
    for k in "volume surface surface_volume_ratio sphericity elongation solidity".split()
)
GLCM = tuple("glcm_" + k for k in "contrast homogeneity energy correlation dissimilarity".split())
RADIOMIC_FEATURES = FIRSTORDER + SHAPE + GLCM
# map features beyond the radiomic ones (see image_features)
MARGIN = ("shape_axis_ratio", "shape_radius_cv", "shape_margin")
RING = tuple("ring_" + k for k in "mean std skewness kurtosis p10 p90 entropy".split())
IMAGE_FEATURES = FIRSTORDER + SHAPE + MARGIN + RING + ("contrast", "necrosis_fraction") + GLCM
RING_WIDTH = 3  # voxels


def convex_hull(edge: np.ndarray) -> ConvexHull:
    """The convex hull of a lesion's voxels (as cubes) from its border voxels' coordinates
    `(n, spatial_dims)`: the hull of the border is the hull of all."""
    # By hand: skimage's regionprops hulls voxel centres, which fails in 3D (qhull error) for a
    # lesion one voxel thick; the hull of the voxels' corners is never flat and works in 2D and 3D.
    lo = edge.min(axis=0)
    corners = np.zeros(edge.max(axis=0) - lo + 2, bool)
    for offset in itertools.product((0, 1), repeat=edge.shape[1]):
        corners[tuple((edge - lo + offset).T)] = True
    # each line of corners along the last axis spans its two ends: qhull needs only those
    line = corners.any(axis=-1)
    first = corners.argmax(axis=-1)[line]
    last = corners.shape[-1] - 1 - corners[..., ::-1].argmax(axis=-1)[line]
    start = np.argwhere(line)
    ends = np.concatenate([np.c_[start, first], np.c_[start, last]])
    return ConvexHull(ends + lo)


def eigenvalues(coords: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of the covariance of voxel coordinates `(n, spatial_dims)`."""
    return np.linalg.eigvalsh(np.cov(coords.T.astype(np.float64)))


def shape_values(n: float, surface: float, eig: np.ndarray, hull, spatial_dims: int) -> dict:
    """`SHAPE` from the voxel count, the surface, `eigenvalues` and `convex_hull`."""
    if spatial_dims == 2:
        sphericity = 4 * np.pi * n / surface**2 if surface > 0 else np.nan  # circularity
    else:
        sphericity = np.pi ** (1 / 3) * (6 * n) ** (2 / 3) / surface
    # largest over smallest eigenvalue: 1 = round, -> 0 = elongated
    elongation = np.sqrt(max(eig[-2], 0.0) / eig[-1]) if eig[-1] > 0 else np.nan
    values = (n, surface, surface / n, sphericity, elongation, n / hull.volume)
    return {k: float(v) for k, v in zip(SHAPE, values, strict=True)}


def directions(spatial_dims: int) -> np.ndarray:
    """Unit vectors spread evenly over the circle (64) or the sphere (128, Fibonacci lattice)."""
    if spatial_dims == 2:
        a = 2 * np.pi * np.arange(64) / 64
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    k = np.arange(128) + 0.5
    z = 1 - 2 * k / 128
    phi = np.pi * (1 + 5**0.5) * k
    s = np.sqrt(1 - z**2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


def radius_cv(coords: np.ndarray, edge: np.ndarray) -> float:
    """Angular std of the boundary radius over its mean, from the lesion's voxel coordinates
    and its border voxels' (`(n, spatial_dims)` each): the border voxels' distances to the
    centroid binned by direction (64 angles in 2D, 128 directions in 3D), the outermost per
    direction; ~0 for a disk or ball, larger for elongated or spiky lesions."""
    units = directions(coords.shape[1])
    edge = edge - coords.mean(axis=0)
    r = np.linalg.norm(edge, axis=1)
    edge, r = edge[r > 0], r[r > 0]
    if r.size < 3:
        return float("nan")
    bins = np.argmax((edge / r[:, None]) @ units.T, axis=1)
    outer = np.zeros(len(units))
    np.maximum.at(outer, bins, r)
    outer = outer[outer > 0]
    return float(outer.std() / outer.mean())


def margin_values(eig: np.ndarray, radius_cv: float, surface: float, hull) -> dict[str, float]:
    """`MARGIN` from `eigenvalues` (the moment-equivalent ellipse/ellipsoid), `radius_cv`, the
    surface and `convex_hull` (in 2D qhull's `area` is the hull's perimeter)."""
    ratio = np.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else np.nan
    values = (ratio, radius_cv, surface / hull.area - 1.0)
    return {k: float(v) for k, v in zip(MARGIN, values, strict=True)}
