"""Interpretable lesion features measured on an image and its mask (2D or 3D).

These are the phenotypes the phantom plants (size, elongation, margin irregularity, contrast,
texture, necrosis), measured only from pixels, so a map learned from images can be scored
against the phantom's truth. IBSI radiomics (pyradiomics) comes with the evaluation issue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

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
