"""How the figures show an image: a 2D view of every channel, one grey panel each, at a window
shared by the sets compared (a radiologist reads MRI sequences side by side in grey levels,
never as false colour). Used by `pl` and `evaluate.figures`."""

from __future__ import annotations

import anndata as ad
import numpy as np

from radiogenomics import _keys as K

WINDOW_PERCENTILES = (1.0, 99.0)
MAX_VALUES = 2_000_000


def display_slice(image: np.ndarray, mask: np.ndarray | None):
    """A 2D view of a `(C, *spatial)` image, every channel: `(C, H, W)` and the mask's `(H, W)`
    (or None); itself in 2D, in 3D the slice (last axis) with most lesion, else the middle."""
    msk = None if mask is None else np.asarray(mask)[0]
    image = np.asarray(image)
    if image.ndim - 1 == 3:
        k = (
            int(np.argmax(msk.sum(axis=(0, 1))))
            if msk is not None and msk.any()
            else image.shape[-1] // 2
        )
        image, msk = image[..., k], None if msk is None else msk[:, :, k]
    return image, msk


def intensity_window(images, percentiles=WINDOW_PERCENTILES) -> np.ndarray:
    """`(C, 2)`: each channel's grey-level window (vmin, vmax), the `percentiles` of its
    values over every image of `images` `(N, C, *spatial)`: one window for a set, so that
    images of the set (and another set drawn with it) are shown alike. Above MAX_VALUES
    values a channel, an even spread of them stands for all (a few hundred 3D volumes)."""
    x = np.asarray(images)
    x = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    x = x[:, :: max(1, -(-x.shape[1] // MAX_VALUES))].astype(np.float64)
    lo, hi = np.percentile(x, percentiles, axis=1)
    return np.stack([lo, np.maximum(hi, lo + 1e-8)], axis=1)


def draw_channels(axes, image, mask, window, names, title: str = "") -> None:
    """One grey panel per channel of a 2D view `(C, H, W)` on `axes` (one per channel), each
    at its channel's (vmin, vmax) of `window` (`(C, 2)`, or None: each panel scaled to its own
    range), with the mask's outline; `title` above the first, `names` above each."""
    for c, ax in enumerate(axes):
        vmin, vmax = (None, None) if window is None else (float(window[c][0]), float(window[c][1]))
        ax.imshow(image[c], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if mask is not None and mask.any():
            ax.contour(mask > 0, levels=[0.5], colors="tab:red", linewidths=0.7)
        label = "\n".join(t for t in (title if c == 0 else "", names[c] if names else "") if t)
        ax.set_title(label, fontsize=6)


def channel_names(adata: ad.AnnData, n_channels: int) -> list[str] | None:
    """The names of the cohort's image channels (uns['rg']['channel_names']), "channel i" where
    it has none, None for one channel; a list of another length is a ValueError."""
    names = adata.uns.get(K.UNS, {}).get(K.CHANNEL_NAMES)
    if names is None:
        return None if n_channels == 1 else [f"channel {c}" for c in range(n_channels)]
    names = [str(n) for n in names]
    if len(names) != n_channels:
        raise ValueError(
            f"uns['rg']['{K.CHANNEL_NAMES}'] names {len(names)} channels {names}; the images "
            f"have {n_channels}"
        )
    return names
