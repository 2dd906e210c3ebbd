"""Lesion features measured on an image and its mask (2D and 3D, one code path): the one
feature module for maps, metrics and model selection.

- `lesion_features`: the phenotypes the phantom plants (size, elongation, margin irregularity,
  contrast, texture, necrosis), measured only from pixels, so a map learned from images can be
  scored against the phantom's truth; model selection on the phantom uses them.
- `radiomic_features`: IBSI-style families (first-order, shape, GLCM) computed with scikit-image
  and scipy, since pyradiomics is only an optional extra (`tests/test_features.py` compares the
  two where it is installed); image metrics (Fréchet distances) and model selection on real
  cohorts use them.
- `image_features` / `image_feature_table`: the map features, `radiomic_features` plus the
  margin and axis-ratio shape features and first-order statistics of a ring around the lesion;
  conventional maps (`radiogenomics.radiomap.conventional`) use them. `image_feature_batch`
  computes them for a whole stack at once (`radiogenomics.radiomap.batched`).

The features' names (`IMAGE_FEATURES`, `RADIOMIC_FEATURES`, ...) and the lesion geometry both
paths share live in `radiogenomics.radiomap.definitions`.

Images hold intensities in [-1, 1] (the cohort loader's scale); histograms and the GLCM bin
that fixed range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import marching_cubes, mesh_surface_area, perimeter
from tqdm.auto import tqdm

from radiogenomics.radiomap.batched import image_feature_array
from radiogenomics.radiomap.definitions import (
    FIRSTORDER,
    GLCM,
    IMAGE_FEATURES,
    MIN_VOXELS,
    N_LEVELS,
    RADIOMIC_FEATURES,
    RING,
    RING_WIDTH,
    convex_hull,
    eigenvalues,
    margin_values,
    radius_cv,
    shape_values,
)

LESION_FEATURES = ("size", "elongation", "margin", "contrast", "texture", "necrosis")


def lesion_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Measure one lesion. `image` and `mask` are `(*spatial)` or `(1, *spatial)` arrays.

    size: log of the lesion's voxel count. elongation: sqrt of the ratio of the largest to the
    smallest eigenvalue of the voxel-coordinate covariance. margin: 1 - solidity (volume over
    convex-hull volume). contrast: mean lesion intensity minus the mean of a surrounding ring.
    texture: std of the high-pass residual (image - Gaussian blur) in the viable rim.
    necrosis: fraction of the lesion darker than halfway between the ring and the rim.
    """
    from skimage.measure import regionprops

    image = np.asarray(image, np.float64).squeeze()
    mask = np.asarray(mask).squeeze() > 0
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    n = int(mask.sum())
    if n < 3:
        return dict.fromkeys(LESION_FEATURES, float("nan"))
    coords = np.argwhere(mask).astype(np.float64)
    eig = np.linalg.eigvalsh(np.cov(coords.T) + 1e-6 * np.eye(mask.ndim))
    solidity = regionprops(mask.astype(np.uint8))[0].solidity
    ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
    bg = float(np.median(image[ring])) if ring.any() else 0.0
    # Smoothing first keeps texture from deciding which voxels count as the dark core.
    smooth = ndimage.gaussian_filter(image, 0.7)
    top = float(np.percentile(smooth[mask], 80))
    # The core is interior: edge voxels darkened by partial volume do not count.
    interior = ndimage.binary_erosion(mask, iterations=1)
    dark = interior & (smooth < (bg + top) / 2)
    # Texture is read in the viable rim away from both edges, where the high-pass residual
    # holds the texture rather than the lesion's or the core's boundary.
    rim = ndimage.binary_erosion(mask, iterations=2) & ~ndimage.binary_dilation(dark, iterations=2)
    if rim.sum() < 4:
        rim = mask & ~dark
    residual = image - ndimage.gaussian_filter(image, 1.0)
    return {
        "size": float(np.log(n)),
        "elongation": float(np.sqrt(eig[-1] / max(eig[0], 1e-6))),
        "margin": float(1.0 - solidity),
        "contrast": top - bg,
        "texture": float(residual[rim].std()) if rim.sum() > 2 else 0.0,
        "necrosis": float(dark.sum() / max(interior.sum(), 1)),
    }


def lesion_feature_table(images, masks, index=None) -> pd.DataFrame:
    """`lesion_features` for a batch `(N, 1, *spatial)`, as a DataFrame (patients x features)."""
    rows = [lesion_features(i, m) for i, m in zip(images, masks, strict=True)]
    return pd.DataFrame(rows, index=index, columns=list(LESION_FEATURES))


_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
CHUNK_VOXELS = 2**22  # image_feature_batch's working set: ~10 float64 copies of this


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------
# IBSI-style radiomic features (metrics and model selection)


def _firstorder(x: np.ndarray) -> dict[str, float]:
    std = float(x.std())
    flat = std <= 1e-12  # pyradiomics' convention: a flat region has zero skewness and kurtosis
    hist = np.histogram(np.clip(x, -1, 1), bins=N_LEVELS, range=(-1, 1))[0] / x.size
    p = hist[hist > 0]
    skew, kurt = (0.0, 0.0) if flat else (stats.skew(x), stats.kurtosis(x))  # excess kurtosis
    entropy = -(p * np.log2(p)).sum()
    p10, p90 = np.percentile(x, [10, 90])
    values = (x.mean(), std, skew, kurt, p10, p90, entropy, (x**2).sum(), np.ptp(x))
    return {k: float(v) for k, v in zip(FIRSTORDER, values, strict=True)}


def _edge(mask: np.ndarray) -> np.ndarray:
    """The lesion's voxels with a face neighbour outside it."""
    return mask & ~ndimage.binary_erosion(mask)


def _surface(mask: np.ndarray) -> float:
    """2D: skimage's perimeter; 3D: the marching-cubes mesh area."""
    if mask.ndim == 2:
        return float(perimeter(mask))
    verts, faces, *_ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
    return float(mesh_surface_area(verts, faces))


def _shape(mask: np.ndarray) -> dict[str, float]:
    coords = np.argwhere(mask)
    hull = convex_hull(np.argwhere(_edge(mask)))
    return shape_values(float(mask.sum()), _surface(mask), eigenvalues(coords), hull, mask.ndim)


def _glcm(grey: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """GLCM texture, distance 1, the 4 in-plane directions averaged, lesion voxel pairs only.

    A 2D image is one slice; a 3D volume's axial slices (along the last spatial axis) that hold
    lesion are pooled into one co-occurrence matrix per direction, so a lesion's polar slices with
    a few voxels weigh by their pairs rather than as much as the equator's.
    """
    coords = np.argwhere(mask)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True))
    grey, mask = grey[box], mask[box]
    q = np.clip(np.floor((grey + 1) / 2 * N_LEVELS), 0, N_LEVELS - 1).astype(np.uint8)
    q[~mask] = N_LEVELS  # outside the lesion: an extra level, dropped from the matrix below
    slices = [q] if q.ndim == 2 else [q[..., k] for k in range(q.shape[-1])]
    P = np.zeros((N_LEVELS, N_LEVELS, 1, len(_ANGLES)))
    for s in slices:
        if (s < N_LEVELS).sum() > 1:
            full = graycomatrix(s, [1], _ANGLES, levels=N_LEVELS + 1, symmetric=True)
            P += full[:N_LEVELS, :N_LEVELS]
    total = P.sum(axis=(0, 1), keepdims=True)
    valid = total[0, 0, 0] > 0  # directions with at least one pair of lesion voxels
    if not valid.any():
        return dict.fromkeys(GLCM, float("nan"))
    P = P[..., valid] / total[..., valid]
    return {k: float(graycoprops(P, k.removeprefix("glcm_")).mean()) for k in GLCM}


def radiomic_features(image, mask) -> dict[str, float]:
    """IBSI-style radiomic features of one image `(C, *spatial)` inside its mask `(1, *spatial)`.

    Channels are averaged into one grey image (channel 0 when C = 1), so every channel counts
    and the feature set does not grow with C. Families (names in `RADIOMIC_FEATURES`):
    - `firstorder_`: mean, std, skewness, excess kurtosis, p10, p90, entropy (bits) of a fixed
      32-bin histogram over [-1, 1], energy (sum of squares), range;
    - `shape_`: volume (area in 2D) in voxels, surface (2D: skimage perimeter; 3D: marching-cubes
      mesh area), surface/volume, sphericity (2D: circularity 4 pi A / P^2; both 1 for a
      disk/sphere), elongation sqrt(lambda_2 / lambda_1) of the voxel-coordinate covariance
      (1 = round), solidity (volume over the convex hull of the voxels; staircase edges put a
      digital disk at ~0.95 and a sphere at ~0.83);
    - `glcm_`: contrast, homogeneity, energy, correlation, dissimilarity of intensities quantised
      to 32 fixed levels over [-1, 1], counting pairs of lesion voxels only (see `_glcm` for 3D).
    An empty mask gives NaN for all; a mask of fewer than 3 voxels NaN for shape and texture.
    """
    image = _numpy(image).astype(np.float64)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (C, *spatial) with 2 or 3 spatial dims; got {image.shape}")
    grey = image.mean(axis=0)
    mask = _numpy(mask)
    if mask.shape != (1, *grey.shape):
        raise ValueError(f"mask must be (1, *spatial) like image {image.shape}; got {mask.shape}")
    mask = mask[0] > 0.5
    feats = dict.fromkeys(RADIOMIC_FEATURES, float("nan"))
    n = int(mask.sum())
    if n == 0:
        return feats
    feats.update(_firstorder(grey[mask]))
    if n >= MIN_VOXELS:
        feats.update(_shape(mask))
        feats.update(_glcm(grey, mask))
    return feats


# --------------------------------------------------------------------------------------------
# map features: radiomic features, margin and axis ratio, the ring around the lesion


def _margin(mask: np.ndarray, surface: float) -> dict[str, float]:
    coords, edge = np.argwhere(mask), np.argwhere(_edge(mask))
    return margin_values(eigenvalues(coords), radius_cv(coords, edge), surface, convex_hull(edge))


def image_features(image, mask, ring_width: int = RING_WIDTH) -> dict[str, float]:
    """The map features of one image `(C, *spatial)` inside its mask `(1, *spatial)`, 2D or 3D.

    `radiomic_features` (first-order, shape, GLCM; channels averaged) plus:
    - `shape_axis_ratio`: sqrt(lambda_max / lambda_min) of the voxel-coordinate covariance, the
      long over the short axis of the moment-equivalent ellipse/ellipsoid (1 for a disk or ball,
      a/b for an ellipse with semi-axes a, b);
    - `shape_radius_cv`: angular standard deviation of the boundary radius over its mean radius
      (`radius_cv`);
    - `shape_margin`: margin irregularity, the surface (2D: perimeter) over the convex hull's
      minus 1 (~0 for a convex lesion, within 0.05 for a digital disk or ball; grows with
      spiculation and lobulation);
    - `ring_*`: mean, std, skewness, kurtosis, p10, p90, entropy in a ring `ring_width` voxels
      wide around the lesion (clipped at the image's edge);
    - `contrast`: the lesion's mean intensity minus the ring's;
    - `necrosis_fraction`: the fraction of the lesion's interior darker than halfway between the
      ring and the lesion's bright rim (`lesion_features`' necrosis; VASARI's proportion necrosis).
    Features a lesion cannot have (an empty mask, fewer than 3 voxels, no ring) are NaN.
    """
    feats = dict.fromkeys(IMAGE_FEATURES, float("nan"))
    feats.update(radiomic_features(image, mask))
    grey = _numpy(image).astype(np.float64).mean(axis=0)
    mask = _numpy(mask)[0] > 0.5
    if mask.sum() >= MIN_VOXELS:
        feats.update(_margin(mask, feats["shape_surface"]))
    ring = ndimage.binary_dilation(mask, iterations=ring_width) & ~mask if mask.any() else mask
    if ring.sum() >= MIN_VOXELS:
        first = _firstorder(grey[ring])
        feats.update({r: first[f] for r, f in zip(RING, FIRSTORDER, strict=False)})
        feats["contrast"] = feats["firstorder_mean"] - feats["ring_mean"]
        feats["necrosis_fraction"] = lesion_features(grey, mask)["necrosis"]
    return feats


def image_feature_batch(
    images, masks, index=None, progress: bool = False, reference: bool = False
) -> pd.DataFrame:
    """`image_features` of a batch: images `(N, C, *spatial)`, masks `(N, 1, *spatial)`; one row
    per lesion (columns `IMAGE_FEATURES`). Computed for many lesions at once
    (`radiogenomics.radiomap.batched`, in chunks of about `CHUNK_VOXELS` voxels); `reference`
    calls `image_features` lesion by lesion instead (the same numbers, slower)."""
    images, masks = _numpy(images), _numpy(masks)
    if images.ndim not in (4, 5) or masks.shape != (len(images), 1, *images.shape[2:]):
        raise ValueError(
            f"images must be (N, C, *spatial) and masks (N, 1, *spatial) alike; got "
            f"{images.shape} and {masks.shape}"
        )
    if reference:
        bar = tqdm(range(len(images)), desc="image features", disable=not progress)
        rows = [image_features(images[i], masks[i]) for i in bar]
        return pd.DataFrame(rows, index=index, columns=list(IMAGE_FEATURES))
    step = max(1, CHUNK_VOXELS // max(1, int(np.prod(images.shape[2:]))))
    out = np.empty((len(images), len(IMAGE_FEATURES)))
    with tqdm(total=len(images), desc="image features", disable=not progress) as bar:
        for lo in range(0, len(images), step):
            grey = images[lo : lo + step].astype(np.float64).mean(axis=1)
            out[lo : lo + step] = image_feature_array(grey, masks[lo : lo + step, 0] > 0.5)
            bar.update(len(grey))
    return pd.DataFrame(out, index=index, columns=list(IMAGE_FEATURES))


def image_feature_table(adata, data_cfg=None, rows=None, progress: bool = True) -> pd.DataFrame:
    """`image_features` of a cohort's patients with an image and a mask (or the cohort rows
    `rows`), read with `radiogenomics.data.dataset.load_images` (the `data_cfg` pipeline:
    resampling, intensity scaling to [-1, 1]; default: the cohort's grid, each image min-max
    scaled); index = patient ids."""
    from radiogenomics import _keys as K
    from radiogenomics.config import DataConfig
    from radiogenomics.data.dataset import image_rows, load_images

    if data_cfg is None:
        data_cfg = DataConfig(spatial_dims=int(adata.uns[K.UNS][K.SPATIAL_DIMS]))
    rows = image_rows(adata, need_mask=True) if rows is None else np.asarray(rows)
    images, masks = load_images(adata, data_cfg, rows, progress=progress)
    index = pd.Index(adata.obs_names[rows], name=adata.obs_names.name)
    return image_feature_batch(images.numpy(), masks.numpy(), index=index, progress=progress)
