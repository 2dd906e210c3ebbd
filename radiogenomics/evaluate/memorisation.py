"""Does a generator copy its training images? (docs/design.md, section 5, privacy)

Small cohorts make image generators, diffusion and flow models especially, reproduce training
patients (Dar et al. 2025). The feature records of `evaluate.privacy` see a lesion through 32
numbers; a copy is a pixel-level event, so this check compares the images themselves.

Distance: each image is standardised per channel (zero mean, unit variance over its pixels or
voxels), then
    d(a, b) = sqrt(1 - r(a, b)),   r = the mean over channels of the Pearson correlation,
which is the Euclidean distance of the standardised images over sqrt(2 x their size). It is 0
for a copy, whatever brightness and contrast the generator gave it, about 1 for unrelated
images, and it does not depend on the image size or the number of channels. Masks do not enter
it: a copy is a copy of the image, and image-only cohorts have none.

Per synthetic image s: `d_train` = its distance to the nearest training image, `d_held` = to
the nearest held-out real image, `ratio` = d_train / d_held. Per held-out image h, the real
reference: its `d_train`, and its `ratio` against the other held-out images (leave one out).
A nearest neighbour among more images is nearer, so with more training than held-out images
the ratio sits below 1 even for new patients; the held-out reference has (almost) the same set
sizes, and a synthetic set that does not copy has a median ratio near the reference's.

- `ratio` (reference `ratio_reference`): the median ratio; copies bring it near 0.
- `near_copy_share`: the share of synthetic images that are near-copies: closer to their
  nearest training image than the 1st percentile (NEAR_COPY_QUANTILE) of the held-out images'
  nearest-training distances (`near_copy_threshold`; with under 100 held-out images, about
  the closest of them), AND at most half as far from it as from the nearest held-out image
  (NEAR_COPY_RATIO): an image close to every real image (a blurred mean lesion, say) sits near
  training and held-out images alike and is no copy of anyone. `near_copy_share_reference`
  is the held-out images' own share under the same rule (leave one out).
- `distance` (reference `distance_reference`): the median d_train.
- `flag`: near_copy_share > NEAR_COPY_MAX, or ratio < RATIO_MIN x ratio_reference.

In metrics.json (`memorisation_metrics`): `image_near_copy_*` and `image_memorisation_<the
others>`, e.g. `image_memorisation_ratio`, `image_memorisation_flag`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

NEAR_COPY_QUANTILE = 0.01
NEAR_COPY_RATIO = 0.5
NEAR_COPY_MAX = 0.05
RATIO_MIN = 0.5
MIN_IMAGES = 5
CHUNK = 64  # query images per matrix product: memory grows with CHUNK x the reference set


def _standardised(images, name: str) -> torch.Tensor:
    """`(N, C * voxels)` float32: each channel of each image at zero mean and unit variance,
    divided by sqrt(C * voxels), so that a dot product is the mean channel correlation. A
    constant channel (no variance) becomes zeros."""
    x = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(
        np.asarray(images)
    )  # fmt: skip
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} images must be (N, C, *spatial), 2D or 3D; got {tuple(x.shape)}")
    x = x.to(torch.float32).flatten(2)  # (N, C, voxels)
    if not torch.isfinite(x).all():
        raise ValueError(f"the {name} images hold NaN/inf")
    x = x - x.mean(dim=2, keepdim=True)
    std = x.std(dim=2, correction=0, keepdim=True)
    x = torch.where(std > 1e-8, x / std.clamp_min(1e-8), torch.zeros_like(x))
    return x.flatten(1) / np.sqrt(x.shape[1] * x.shape[2])


def _nearest(query: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False):
    """(distance, index) of each query row's nearest reference row, `d = sqrt(1 - r)`, in
    chunks of CHUNK queries; `exclude_self`: query and reference are one set, skip i == i."""
    dist, index = [], []
    for i in range(0, len(query), CHUNK):
        r = query[i : i + CHUNK] @ reference.T  # (chunk, n_reference): mean correlations
        if exclude_self:
            rows = torch.arange(len(r))
            r[rows, rows + i] = -np.inf
        best, idx = r.max(dim=1)
        dist.append(torch.sqrt((1 - best.double()).clamp_min(0)))
        index.append(idx)
    return torch.cat(dist).numpy(), torch.cat(index).numpy()


def _near_copies(d_train: np.ndarray, d_held: np.ndarray, threshold: float) -> np.ndarray:
    return (d_train < threshold) & (d_train <= NEAR_COPY_RATIO * d_held)


def memorisation_scores(train, heldout, synthetic, *, ids: dict | None = None) -> dict:
    """Distances of synthetic images to their nearest training and held-out images.

    Parameters
    ----------
    train, heldout, synthetic
        Images `(N, C, *spatial)` (arrays or tensors, 2D or 3D, alike in C and spatial
        shape): the real training images, held-out real images, synthetic images.
    ids
        {'train', 'heldout', 'synthetic'}: the images' patient ids (default: their indices),
        for the per-image table.

    Returns
    -------
    A dict with the scalars `ratio`, `ratio_reference`, `near_copy_share`,
    `near_copy_share_reference`, `near_copy_threshold`, `distance`, `distance_reference`,
    `flag`, `n_train`, `n_heldout`, `n_synthetic`, and
    `images`: one row per synthetic image (index = its id; `d_train`, `nearest_train`,
    `d_held`, `nearest_heldout`, `ratio`, `near_copy`), `reference`: the same per held-out
    image (its `d_held` leave one out).
    """
    sets = {"train": train, "heldout": heldout, "synthetic": synthetic}
    z = {name: _standardised(x, name) for name, x in sets.items()}
    shapes = {name: tuple(x.shape[1:]) for name, x in sets.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"train, held-out and synthetic images differ in (C, *spatial): {shapes}")
    for name, x in z.items():
        if len(x) < MIN_IMAGES:
            raise ValueError(
                f"the {name} set has {len(x)} image(s); memorisation needs >= {MIN_IMAGES}"
            )
    ids = {k: np.asarray(ids[k]) if ids else np.arange(len(z[k])) for k in sets}
    for k in sets:
        if len(ids[k]) != len(z[k]):
            raise ValueError(f"{len(ids[k])} {k} ids for {len(z[k])} {k} images")
    # the real reference: held-out images to training, and to the other held-out images
    ref_train, ref_train_i = _nearest(z["heldout"], z["train"])
    ref_held, ref_held_i = _nearest(z["heldout"], z["heldout"], exclude_self=True)
    threshold = float(np.quantile(ref_train, NEAR_COPY_QUANTILE))
    d_train, train_i = _nearest(z["synthetic"], z["train"])
    d_held, held_i = _nearest(z["synthetic"], z["heldout"])

    def table(dt, ti, dh, hi, index):
        return pd.DataFrame(
            {
                "d_train": dt,
                "nearest_train": ids["train"][ti],
                "d_held": dh,
                "nearest_heldout": ids["heldout"][hi],
                "ratio": dt / np.maximum(dh, 1e-12),
                "near_copy": _near_copies(dt, dh, threshold),
            },
            index=pd.Index(index, name="image"),
        )

    images = table(d_train, train_i, d_held, held_i, ids["synthetic"])
    reference = table(ref_train, ref_train_i, ref_held, ref_held_i, ids["heldout"])
    ratio, ratio_ref = float(images["ratio"].median()), float(reference["ratio"].median())
    share = float(images["near_copy"].mean())
    flag = bool(share > NEAR_COPY_MAX or ratio < RATIO_MIN * ratio_ref)
    if flag:
        log.warning(
            "memorisation: the synthetic images look like copies of training images (median "
            "ratio %.3f, reference %.3f; near-copy share %.3f)",
            ratio,
            ratio_ref,
            share,
        )
    return {
        "ratio": ratio,
        "ratio_reference": ratio_ref,
        "near_copy_share": share,
        "near_copy_share_reference": float(reference["near_copy"].mean()),
        "near_copy_threshold": threshold,
        "distance": float(np.median(d_train)),
        "distance_reference": float(np.median(ref_train)),
        "flag": flag,
        "n_train": len(z["train"]),
        "n_heldout": len(z["heldout"]),
        "n_synthetic": len(z["synthetic"]),
        "images": images,
        "reference": reference,
        "nearest_train_rows": train_i,  # positions in `train`, for figures
    }


# --------------------------------------------------------------------------------------------
# the report's part


def memorisation_metrics(scores: dict) -> dict:
    """The scalars of `memorisation_scores` as metrics.json names them: `image_near_copy_*`
    and `image_memorisation_<score>`."""
    return {
        f"image_{k}" if k.startswith("near_copy") else f"image_memorisation_{k}": v
        for k, v in scores.items()
        if isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating))
    }


def shown_table(scores: dict) -> pd.DataFrame:
    """The scores a reader looks at, synthetic beside held-out real images (the reference)."""
    rows = {
        "median d_train / d_held": ("ratio", "ratio_reference"),
        "share of near-copies": ("near_copy_share", "near_copy_share_reference"),
        "median distance to the nearest training image": (
            "distance", "distance_reference"),
    }  # fmt: skip
    table = pd.DataFrame(
        {
            "synthetic": {k: scores[a] for k, (a, _) in rows.items()},
            "held-out real (reference)": {k: scores[b] for k, (_, b) in rows.items()},
        }
    )
    table.index.name = "image memorisation"
    return table


def memorisation_part(
    scores: dict,
    train_images,
    synthetic_images,
    out: str | Path,
    *,
    masks: Sequence | None = None,
    channel_names: Sequence[str] | None = None,
    n_shown: int = 6,
):
    """Write `out/memorisation.csv` (one row per synthetic image), `out/memorisation_scores.csv`
    (the scalars, as `memorisation_metrics` names them) and `out/memorisation.png`
    (the `n_shown` synthetic images with the smallest ratio, each beside its nearest training
    image, one grey panel per channel at the training images' window); return (the shown
    table, the figure's path, the paragraph that explains them). `masks`: (training masks,
    synthetic masks) for the outlines, or None."""
    from radiogenomics._atomic import atomic_write
    from radiogenomics.evaluate import figures

    out = Path(out)
    table = scores["images"]
    atomic_write(out / "memorisation.csv", lambda tmp: table.to_csv(tmp))
    summary = pd.Series(memorisation_metrics(scores), name="value").rename_axis("score")
    atomic_write(out / "memorisation_scores.csv", lambda tmp: summary.to_csv(tmp))
    figures.nearest_training_images(
        scores, train_images, synthetic_images, masks=masks, channel_names=channel_names,
        n=n_shown, save=out / "memorisation.png",
    )  # fmt: skip
    text = (
        "Image memorisation: each synthetic image's distance to its nearest training image "
        "(d_train) against its distance to the nearest held-out real image (d_held), on the "
        "images themselves (sqrt(1 - r), r the mean channel correlation of the two images: "
        "0 = a copy, whatever its brightness and contrast). A generator that does not copy "
        "has a median d_train / d_held like the held-out real images' own (the reference; "
        "below 1 when the training set is the larger one). A near-copy is closer to its "
        "nearest training image than the closest "
        f"{NEAR_COPY_QUANTILE:.0%} of held-out images are to theirs (distance "
        f"{scores['near_copy_threshold']:.3g}) and at most {NEAR_COPY_RATIO:g} times as far "
        "from it as from the nearest held-out image. Flagged when near-copies exceed "
        f"{NEAR_COPY_MAX:.0%} of the synthetic images or the median ratio falls below "
        f"{RATIO_MIN:g} x the reference: "
        + ("YES, the synthetic images look like copies." if scores["flag"] else "no.")
    )
    return shown_table(scores), out / "memorisation.png", text
