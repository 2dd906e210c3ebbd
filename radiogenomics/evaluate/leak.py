"""Do generated images show the training augmentations? (the leak check of DiffAugment/ADA)

Augmenting only real images teaches a generator to draw the augmentations: shifted lesions,
brightened or flattened images. Augmenting what the critic sees on both sides should not
(Zhao et al. 2020; Karras et al. 2020), but small data and strong p can still leak. Each
augmentation widens or moves the distribution of one per-image statistic:

- translation: the lesion's centroid (its offset from the field's centre, per axis, as a
  fraction of the side) and, where an image and its mask are moved apart, the correlation
  of the image with its mask;
- brightness: the image's mean; contrast: the image's standard deviation.

`augmentation_leak` compares the synthetic set's distribution of each statistic with the
real set's (1-Wasserstein distance) against the real-vs-real spread (between halves of the
real set, with a synthetic sample of a half's size), and flags the statistics where the
synthetic set is `threshold` times farther. A flag says where to look, not that a leak is
proven: a generator that misses the brightness distribution is flagged too; compare with a
run trained without augmentation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from radiogenomics.evaluate.images import _halves, _images, _masks


def _centroids(masks: np.ndarray) -> np.ndarray:
    """(N, d) lesion centroid minus the field's centre, over each side; NaN without lesion."""
    spatial = masks.shape[2:]
    grids = np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij")
    m = masks[:, 0].astype(np.float64)
    area = m.reshape(len(m), -1).sum(1)
    out = np.full((len(m), len(spatial)), np.nan)
    ok = area > 0
    for i, (g, s) in enumerate(zip(grids, spatial, strict=True)):
        c = (m * g).reshape(len(m), -1).sum(1)
        out[ok, i] = (c[ok] / area[ok] - (s - 1) / 2) / s
    return out


def _image_mask_correlation(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) Pearson correlation, over the pixels, of an image (its channels' mean) with its
    mask: high where the lesion is drawn in its mask, lower when it is shifted off it; NaN
    for an empty or full mask."""
    x = images.mean(1).reshape(len(images), -1)
    m = masks[:, 0].reshape(len(masks), -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    m = m - m.mean(1, keepdims=True)
    den = np.sqrt((x**2).sum(1) * (m**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * m).sum(1) / den, np.nan)


def leak_statistics(images, masks) -> pd.DataFrame:
    """Per image (rows): the statistics an augmentation would leak into (module docstring):
    `centroid_<axis>`, `image_mask_correlation`, `brightness`, `contrast`.

    Parameters
    ----------
    images : array (N, C, *S)
        In [-1, 1].
    masks : array (N, 1, *S)
        The lesion masks the images belong to.
    """
    x = _images(images, "images").astype(np.float64)
    m = _masks(masks, x, "masks")
    flat = x.reshape(len(x), -1)
    cols = {}
    for i, c in enumerate(_centroids(m).T):
        cols[f"centroid_{i}"] = c
    cols["image_mask_correlation"] = _image_mask_correlation(x, m)
    cols["brightness"] = flat.mean(1)
    cols["contrast"] = flat.std(1)
    return pd.DataFrame(cols)


def augmentation_leak(
    real_images,
    real_masks,
    fake_images,
    fake_masks,
    *,
    repeats: int = 20,
    threshold: float = 2.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Per statistic of `leak_statistics` (rows): `real_vs_real`, the median over `repeats`
    random halves of the real set of the 1-Wasserstein distance between them;
    `synthetic_vs_real`, the median distance between one half and as many synthetic images;
    their `ratio`; `spread_ratio`, the synthetic set's standard deviation over the real
    set's (an augmentation widens); `flagged`, ratio > `threshold`.

    Parameters
    ----------
    real_images, real_masks, fake_images, fake_masks : arrays (N, C, *S), (N, 1, *S)
        Real and synthetic images in [-1, 1] with their lesion masks (the masks a synthetic
        image was drawn in, or generated with it). At least 8 real images.
    repeats : int
        Random halvings of the real set.
    threshold : float
        The ratio above which a statistic is flagged.
    seed : int
    """
    real = leak_statistics(real_images, real_masks)
    fake = leak_statistics(fake_images, fake_masks)
    if len(real) < 8:
        raise ValueError(f"the leak check needs >= 8 real images; got {len(real)}")
    rng = np.random.default_rng(seed)
    rows = []
    for name in real.columns:
        r, f = real[name].dropna().to_numpy(), fake[name].dropna().to_numpy()
        if len(r) < 8 or len(f) < 4:
            rows.append({"statistic": name, "real_vs_real": np.nan,
                         "synthetic_vs_real": np.nan})  # fmt: skip
            continue
        rr, sr = [], []
        for _ in range(repeats):
            a, b = _halves(len(r), rng)
            rr.append(wasserstein_distance(r[a], r[b]))
            pick = rng.choice(len(f), size=min(len(b), len(f)), replace=False)
            sr.append(wasserstein_distance(r[a], f[pick]))
        rows.append(
            {
                "statistic": name,
                "real_vs_real": float(np.median(rr)),
                "synthetic_vs_real": float(np.median(sr)),
                "spread_ratio": float(f.std() / max(r.std(), 1e-12)),
            }
        )
    table = pd.DataFrame(rows).set_index("statistic")
    table["ratio"] = table["synthetic_vs_real"] / table["real_vs_real"].clip(lower=1e-12)
    table["flagged"] = table["ratio"] > threshold
    return table[["real_vs_real", "synthetic_vs_real", "ratio", "spread_ratio", "flagged"]]
