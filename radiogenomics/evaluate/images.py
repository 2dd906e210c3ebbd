"""Realism of synthetic lesion images: Fréchet distances, diversity, Dice and detection.

Images are `(N, C, *spatial)` arrays or tensors with intensities in [-1, 1], masks
`(N, 1, *spatial)` in {0, 1}; `spatial_dims` (2 or 3) is read from the number of dimensions, and 2D
and 3D share one code path. As for genes, a score means little alone: `evaluate_images` reports the synthetic set
next to a trivial baseline (`region_mean_baseline`) and the real-vs-real reference
(`real_reference`), which is the floor (distances) or ceiling (Dice) to read it against.

Radiomic features are IBSI-style families computed with scikit-image and scipy, since pyradiomics
is not a dependency; the other metrics come from MONAI (SSIM, MS-SSIM, Dice, IoU) and scikit-learn.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, MultiScaleSSIMMetric, SSIMMetric, compute_iou
from monai.networks.nets import UNet
from scipy import linalg
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiogenomics.nn.segmentation import unet_bottom
from radiogenomics.radiomap.definitions import RADIOMIC_FEATURES

log = logging.getLogger(__name__)

SYNTHETIC, BASELINE, REFERENCE = "synthetic", "region-mean baseline", "real (reference)"
DATA_RANGE = 2.0  # intensities in [-1, 1]
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, MONAI's default

# --------------------------------------------------------------------------------------------
# inputs


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _images(x, name: str) -> np.ndarray:
    """`(N, C, *spatial)` float32 with spatial_dims 2 or 3; warns when outside [-1, 1]."""
    x = _numpy(x).astype(np.float32, copy=False)
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must be (N, C, *spatial), spatial 2D or 3D; got {x.shape}")
    if x.shape[0] == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name} is empty or holds NaN/inf; shape {x.shape}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        log.warning("%s intensities span [%.3g, %.3g], not [-1, 1]; histograms clip", name, lo, hi)
    return x


def _masks(m, images: np.ndarray, name: str) -> np.ndarray:
    """Boolean `(N, 1, *spatial)` masks matching `images` in N and spatial shape."""
    m = _numpy(m)
    if m.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(
            f"{name} must be (N, 1, *spatial) like images {images.shape}; got {m.shape}"
        )
    return m > 0.5


def _subsample(n_max: int, rng: np.random.Generator, *arrays):
    n = arrays[0].shape[0]
    if n <= n_max:
        return arrays
    idx = np.sort(rng.choice(n, size=n_max, replace=False))
    return tuple(a[idx] for a in arrays)


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


# --------------------------------------------------------------------------------------------
# radiomic features


def radiomic_table(images, masks, progress: bool = True) -> pd.DataFrame:
    """`radiomic_features` of every image, one row each (columns `RADIOMIC_FEATURES`), from
    the batched feature path (`image_feature_batch`: the same values, within 2e-7 relative, at
    2-4x the speed)."""
    from radiogenomics.radiomap.features import image_feature_batch

    images = _images(images, "images")
    masks = _masks(masks, images, "masks")
    table = image_feature_batch(images, masks, progress=progress)[list(RADIOMIC_FEATURES)]
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Fréchet distances


def _singular(S: np.ndarray) -> bool:
    eig = np.linalg.eigvalsh(S)
    return bool(eig[0] <= 1e-10 * max(eig[-1], 1.0))


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of two feature matrices (rows = samples).

    Features are first standardised with the pooled mean and std of both sets: radiomic features
    span many orders of magnitude (energy vs. correlation) and would otherwise be weighed by their
    units. Columns with any NaN/inf (logged by name) and constant columns are dropped. Fewer
    samples than features make the covariances singular; `eps * I` is then added to both.
    """
    names = list(feats_a.columns) if isinstance(feats_a, pd.DataFrame) else None
    A, B = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"features must be (samples, features) alike; got {A.shape}, {B.shape}")
    for name, X in (("feats_a", A), ("feats_b", B)):
        if X.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 samples; got shape {X.shape}")
    names = names or [str(i) for i in range(A.shape[1])]
    bad = ~(np.isfinite(A).all(axis=0) & np.isfinite(B).all(axis=0))
    if bad.any():
        log.warning(
            "frechet_distance: dropping feature(s) with NaN/inf: %s",
            [n for n, b in zip(names, bad, strict=True) if b],
        )
    pooled = np.vstack([A[:, ~bad], B[:, ~bad]])
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    if not keep.any():
        raise ValueError(f"no feature left after dropping NaN and constant columns of {names}")
    A = (A[:, ~bad][:, keep] - mean[keep]) / std[keep]
    B = (B[:, ~bad][:, keep] - mean[keep]) / std[keep]
    Sa, Sb = np.atleast_2d(np.cov(A, rowvar=False)), np.atleast_2d(np.cov(B, rowvar=False))
    if _singular(Sa) or _singular(Sb):
        Sa, Sb = Sa + eps * np.eye(len(Sa)), Sb + eps * np.eye(len(Sb))
    covmean = linalg.sqrtm(Sa @ Sb)
    if not np.isfinite(covmean).all():
        log.warning("frechet_distance: sqrtm failed; adding %g * I to both covariances", eps)
        Sa, Sb = Sa + eps * np.eye(len(Sa)), Sb + eps * np.eye(len(Sb))
        covmean = linalg.sqrtm(Sa @ Sb)
    diff = A.mean(axis=0) - B.mean(axis=0)
    fd = diff @ diff + np.trace(Sa) + np.trace(Sb) - 2 * np.trace(covmean).real
    return max(float(fd), 0.0)  # exact 0 can come out as -1e-13


def _fd_tables(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Fréchet distance of two radiomic tables without the rows (lesions) that hold NaN.

    Dropping rows, not columns: one empty mask would otherwise cost every shape feature.
    """
    clean = []
    for name, t in (("first", a), ("second", b)):
        ok = np.isfinite(t.to_numpy(np.float64)).all(axis=1)
        if not ok.all():
            log.warning("%s set: %d lesion(s) with NaN features left out", name, int((~ok).sum()))
        clean.append(t[ok])
    return frechet_distance(*clean)


def frd(real_images, real_masks, fake_images, fake_masks, progress: bool = False) -> float:
    """Fréchet radiomic distance: `frechet_distance` of the two sets' `radiomic_table`s.

    Lesions with NaN features (empty or tiny masks) are left out, with a warning.
    """
    return _fd_tables(
        radiomic_table(real_images, real_masks, progress),
        radiomic_table(fake_images, fake_masks, progress),
    )


def _find_unet(net) -> UNet | None:
    """`net` itself, its `.unet`, or the first MONAI UNet among its submodules; else None."""
    if isinstance(getattr(net, "unet", None), UNet):
        return net.unet
    modules = net.modules() if isinstance(net, torch.nn.Module) else ()
    return next((m for m in modules if isinstance(m, UNet)), None)


@contextlib.contextmanager
def _inference(net):
    """Eval mode and no_grad; yields the net's device (CPU for a plain callable).

    Every submodule's training flag is restored afterwards, so a net mid-training is unharmed.
    """
    modules = list(net.modules()) if isinstance(net, torch.nn.Module) else []
    modes = [m.training for m in modules]
    param = next(net.parameters(), None) if modules else None
    try:
        if modules:
            net.eval()
        with torch.no_grad():
            yield param.device if param is not None else torch.device("cpu")
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.training = mode


def encoder_features(net, images, batch_size: int = 32) -> np.ndarray:
    """`(N, channels[-1])` global-average-pooled outputs of a MONAI UNet's deepest down path.

    `net` is a `monai.networks.nets.UNet` or a module holding one (as `.unet` or anywhere among
    its submodules). A forward hook on the UNet's bottom layer (`nn.segmentation.unet_bottom`) catches its output
    while `net(images)` runs, so a wrapper's own preprocessing applies.
    """
    images = _images(images, "images")
    unet = _find_unet(net)
    if unet is None:
        raise ValueError(f"need a monai UNet or a module holding one; got {type(net).__name__}")
    bottom = unet_bottom(unet)
    feats: list[torch.Tensor] = []

    def hook(module, inputs, out):
        feats.append(out.float().mean(dim=tuple(range(2, out.ndim))).cpu())  # (B, C, *sp) -> (B, C)

    handle = bottom.register_forward_hook(hook)
    try:
        with _inference(net) as device:
            for i in range(0, len(images), batch_size):
                net(torch.from_numpy(images[i : i + batch_size]).to(device))
    finally:
        handle.remove()
    return torch.cat(feats).numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# SSIM, MS-SSIM, diversity


def _ssim_window(spatial: tuple[int, ...]) -> int:
    return min(11, min(spatial) - (1 - min(spatial) % 2))  # largest odd size that fits, <= 11


def _ms_ssim_setup(spatial: tuple[int, ...]) -> tuple[int, tuple[float, ...]] | None:
    """(kernel_size, weights) for MS-SSIM on images of this spatial shape, or None if too small.

    The most scales (<= 5) whose coarsest scale still holds a window of >= 5 pixels (2D) or 3
    voxels (3D), i.e. ~25 per window; the window is the largest odd size <= 11 that MONAI's size
    check (size // (scales - 1)^2 > kernel - 1) allows. Weights are Wang et al.'s first ones,
    renormalised. 64x64: 4 scales, 7x7; 32x32: 3 scales, 7x7; 32^3: 4 scales, 3^3; 16^3: 3, 3^3.
    """
    size, min_kernel = min(spatial), (5 if len(spatial) == 2 else 3)
    for scales in range(5, 1, -1):
        k = min(11, size // (scales - 1) ** 2, size // 2 ** (scales - 1))
        k -= 1 - k % 2
        if k >= min_kernel:
            w = np.array(MS_SSIM_WEIGHTS[:scales])
            return k, tuple(float(v) for v in w / w.sum())
    return None


def _paired(metric, a: np.ndarray, b: np.ndarray, ia=None, ib=None, batch_size: int = 32):
    """Per-pair scores of `metric` (a MONAI regression metric) over a[ia] vs b[ib], in batches."""
    ia = np.arange(len(a)) if ia is None else ia
    ib = np.arange(len(b)) if ib is None else ib
    out = []
    for i in range(0, len(ia), batch_size):
        j = slice(i, i + batch_size)
        out.append(metric(torch.from_numpy(a[ia[j]]), torch.from_numpy(b[ib[j]])))
    return torch.cat(out).reshape(-1).numpy().astype(np.float64)


def _ssim_metric(spatial: tuple[int, ...], multiscale: bool):
    """MONAI's per-image SSIM or MS-SSIM for this spatial shape (None: too small for MS-SSIM)."""
    kw = {"data_range": DATA_RANGE, "reduction": "none"}
    if not multiscale:
        return SSIMMetric(len(spatial), win_size=_ssim_window(spatial), **kw)
    setup = _ms_ssim_setup(spatial)
    if setup is None:
        return None
    return MultiScaleSSIMMetric(len(spatial), kernel_size=setup[0], weights=setup[1], **kw)


def _pair_of_sets(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _images(a, "a"), _images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired images must have the same shape; got {a.shape} and {b.shape}")
    return a, b


def ssim(a, b) -> float:
    """Mean SSIM of paired images (MONAI, Gaussian window <= 11, data_range 2 for [-1, 1])."""
    a, b = _pair_of_sets(a, b)
    return float(_paired(_ssim_metric(a.shape[2:], False), a, b).mean())


def ms_ssim(a, b) -> float:
    """Mean MS-SSIM of paired images (MONAI), with scales and window fitted to the image size.

    See `_ms_ssim_setup`: 32x32 gets 3 scales and a 7x7 window, 16^3 3 scales and 3^3.
    """
    a, b = _pair_of_sets(a, b)
    metric = _ssim_metric(a.shape[2:], True)
    if metric is None:
        raise ValueError(f"images of shape {a.shape} are too small for MS-SSIM; use ssim")
    return float(_paired(metric, a, b).mean())


def diversity(images, n_pairs: int = 200, seed=0) -> float:
    """Mean MS-SSIM between random distinct pairs of images: lower = more diverse.

    All pairs are used when there are at most `n_pairs`. Images too small for MS-SSIM (under
    ~16 pixels a side in 2D, 8 in 3D) fall back to SSIM.
    """
    images = _images(images, "images")
    n = len(images)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images; got shape {images.shape}")
    if n * (n - 1) // 2 <= n_pairs:
        ia, ib = np.array(list(itertools.combinations(range(n), 2))).T
    else:
        rng = np.random.default_rng(seed)
        ia = rng.integers(n, size=n_pairs)
        ib = (ia + rng.integers(1, n, size=n_pairs)) % n  # never ia itself
    spatial = images.shape[2:]
    metric = _ssim_metric(spatial, True)
    if metric is None:
        log.info("diversity: images %s too small for MS-SSIM; using SSIM", images.shape)
        metric = _ssim_metric(spatial, False)
    return float(_paired(metric, images, images, ia, ib).mean())


# --------------------------------------------------------------------------------------------
# Dice, detection, references, baseline


def mask_dice(pred_masks, masks) -> dict:
    """Dice and IoU of binary masks `(N, 1, *spatial)` (MONAI), mean and per image.

    Empty prediction vs. empty mask counts as 1.0 (a correctly found absence), so every image has
    a score. Returns `dice`, `iou` (floats) and `dice_per_image`, `iou_per_image` (arrays).
    """
    pred, y = _numpy(pred_masks), _numpy(masks)
    if pred.shape != y.shape or pred.ndim not in (4, 5):
        raise ValueError(f"masks must be alike (N, 1, *spatial); got {pred.shape}, {y.shape}")
    pred, y = torch.from_numpy(pred > 0.5).float(), torch.from_numpy(y > 0.5).float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, y)
    iou = compute_iou(pred, y, include_background=True, ignore_empty=False)
    dice, iou = dice.mean(dim=1).numpy(), iou.mean(dim=1).numpy()
    return {"dice": float(dice.mean()), "iou": float(iou.mean())} | {
        "dice_per_image": dice,
        "iou_per_image": iou,
    }


def _detection_features(x: np.ndarray) -> np.ndarray:
    """Cheap generic features: 8-per-axis average-pooled pixels and 16-bin histograms per channel
    of intensity (over [-1, 1]) and of gradient magnitude (over [0, 1], the top bin open)."""
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    pool = getattr(F, f"adaptive_avg_pool{len(spatial)}d")
    pooled = pool(torch.from_numpy(x), 8).flatten(1).numpy()
    grad = np.sqrt(sum(g**2 for g in np.gradient(x, axis=tuple(range(2, x.ndim)))))

    def hist(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        bins = np.clip(np.floor((v - lo) / (hi - lo) * 16), 0, 15).astype(np.int64)
        offset = (np.arange(n * c) * 16).reshape(n, c, *[1] * len(spatial))
        counts = np.bincount((bins + offset).ravel(), minlength=n * c * 16)
        return counts.reshape(n, c * 16) / math.prod(spatial)

    return np.hstack([pooled, hist(x, -1.0, 1.0), hist(grad, 0.0, 1.0)])


def detection_auc(
    real_images, fake_images, seed=0, folds: int = 5, classifier: str = "logistic"
) -> float:
    """Cross-validated ROC AUC of a classifier telling real from synthetic; 0.5 = indistinguishable.

    Features are `_detection_features` (no radiomics, no masks). `classifier` is "logistic"
    (standardised L2 logistic regression) or "boosting" (HistGradientBoostingClassifier). The
    larger set is subsampled (seeded) to the smaller's size; folds are stratified.
    """
    real, fake = _images(real_images, "real_images"), _images(fake_images, "fake_images")
    if real.shape[1] != fake.shape[1] or real.ndim != fake.ndim:
        raise ValueError(f"real and fake differ in C or spatial dims: {real.shape}, {fake.shape}")
    if classifier == "logistic":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    elif classifier == "boosting":
        model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    else:
        raise ValueError(f"classifier must be 'logistic' or 'boosting'; got {classifier!r}")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(f"detection_auc needs >= 2 images per set; got {len(real)}, {len(fake)}")
    (real,), (fake,) = _subsample(n, rng, real), _subsample(n, rng, fake)
    X = np.vstack([_detection_features(real), _detection_features(fake)])
    y = np.r_[np.ones(n), np.zeros(n)]
    cv = StratifiedKFold(n_splits=min(folds, n), shuffle=True, random_state=seed)
    return float(cross_val_score(model, X, y, cv=cv, scoring="roc_auc").mean())


def real_reference(metric_fn: Callable, images, masks=None, seed=0) -> float:
    """The real-vs-real reference: `metric_fn` between two random halves of the real set.

    `metric_fn(images_a, masks_a, images_b, masks_b)` has `frd`'s signature (masks are None when
    not given). This is the floor (distances, detection AUC ~0.5) or ceiling (similarity) a
    synthetic set's score is read against: no generator can look more real than real data, and
    small sets make even real halves differ.
    """
    images = _images(images, "images")
    if len(images) < 4:
        raise ValueError(f"real_reference needs at least 4 images; got shape {images.shape}")
    masks = None if masks is None else _masks(masks, images, "masks")
    ia, ib = _halves(len(images), np.random.default_rng(seed))
    pick = (lambda m, i: None) if masks is None else (lambda m, i: m[i])
    return metric_fn(images[ia], pick(masks, ia), images[ib], pick(masks, ib))


def region_mean_baseline(images, masks, fill_masks=None) -> np.ndarray:
    """The trivial baseline a generator must beat: a constant per region and channel.

    The mean intensity inside lesions and outside them, per channel, over all of `images`
    (the real training set), painted into `fill_masks` (default `masks`), e.g. the masks the
    synthetic images were generated from. Returns `(M, C, *spatial)` float32.
    """
    images = _images(images, "images")
    masks = _masks(masks, images, "masks")
    axes = (0, *range(2, images.ndim))
    n_in, n_out = masks.sum(), (~masks).sum()
    if n_in == 0 or n_out == 0:
        raise ValueError(f"masks must hold lesion and background voxels; got {n_in} lesion voxels")
    inside = (images * masks).sum(axis=axes, keepdims=True) / n_in  # (1, C, 1, ...)
    outside = (images * ~masks).sum(axis=axes, keepdims=True) / n_out
    fill = masks if fill_masks is None else _numpy(fill_masks) > 0.5
    if fill.ndim != images.ndim or fill.shape[1] != 1:
        raise ValueError(f"fill_masks must be (M, 1, *spatial); got {fill.shape}")
    return np.where(fill, inside, outside).astype(np.float32)


# --------------------------------------------------------------------------------------------
# everything at once


def _segment(seg_net, images: np.ndarray, threshold=0.5, batch_size: int = 32) -> np.ndarray:
    """Masks `seg_net` finds: sigmoid(logits) > threshold, i.e. logits > logit(threshold)."""
    if not 0 < threshold < 1:
        raise ValueError(f"segmentation threshold must be in (0, 1); got {threshold}")
    cut = float(np.log(threshold / (1 - threshold)))
    out = []
    with _inference(seg_net) as device:
        for i in range(0, len(images), batch_size):
            logits = seg_net(torch.from_numpy(images[i : i + batch_size]).to(device))
            out.append(_numpy(logits) > cut)
    pred = np.concatenate(out)
    if pred.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"seg_net gave {pred.shape} for {images.shape}; need (N, 1, *spatial)")
    return pred


def evaluate_images(
    real_images,
    real_masks,
    fake_images,
    fake_masks,
    *,
    seg_net=None,
    threshold: float = 0.5,
    seed=0,
    progress: bool = True,
    max_images: int = 500,
    fake_source=None,
) -> pd.DataFrame:
    """Score synthetic images next to the region-mean baseline and the real reference.

    The real set is split into random halves A and B (after seeded subsampling to `max_images`
    per set). Every row compares a set to half A at the size of half B, so distances are read
    at equal sample sizes: `synthetic` (the fake images), `region-mean baseline` (filled into
    the fake masks) and `real (reference)` (half B). Columns: `frd`, `encoder_fd` (seg_net only;
    NaN if it holds no MONAI UNet), `ms_ssim_diversity` (of the row's own set), `dice` (seg_net
    only: its segmentation of the row's images against the masks they come with, a mean over
    images, so read on every synthetic image and every real one rather than the halves, whose
    32-image draws moved it by +-0.03; for the real row, its Dice on real images, a training
    score if it was trained on them), `detection_auc`.
    `seg_net` is a module or a callable `images (N, C, *spatial) -> logits (N, 1, *spatial)`;
    its masks are where the probability exceeds `threshold` (the Segmenter's
    `segment.threshold`).

    `fake_source` (one real index per fake image, or -1) says which real patient's mask (and
    background) a fake image was generated from. Such fakes are scored only when their source
    is in half B, never against their own source in half A, which would flatter them.
    The baseline's region means come from half B too, for the same reason. With
    `fake_source`, `ssim_to_source` is the mean SSIM of every twin with its source image (and
    of the baseline filled into the source's mask); the reference row has none (NaN).
    """
    real, fake = _images(real_images, "real_images"), _images(fake_images, "fake_images")
    real_m, fake_m = _masks(real_masks, real, "real_masks"), _masks(fake_masks, fake, "fake_masks")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake images differ in C or spatial: {real.shape}, {fake.shape}")
    if len(real) < 4:
        raise ValueError(f"evaluate_images needs at least 4 real images; got shape {real.shape}")
    rng = np.random.default_rng(seed)
    if fake_source is None:
        real, real_m = _subsample(max_images, rng, real, real_m)
        ia, ib = _halves(len(real), rng)
    else:
        fake_source = np.asarray(fake_source)
        if len(fake_source) != len(fake):
            raise ValueError(f"fake_source has {len(fake_source)} entries for {len(fake)} fakes")
        ia, ib = _halves(len(real), rng)
        # Paired SSIM: each twin against the real image it was made from (all twins), and the
        # region-mean baseline filled into the same masks (means of half B).
        paired = fake_source >= 0
        src = fake_source[paired]
        if paired.any():
            twin_ssim = ssim(fake[paired], real[src])
            fill = region_mean_baseline(real[ib], real_m[ib], fill_masks=real_m[src])
            base_ssim = ssim(fill, real[src])
        usable = ~np.isin(fake_source, ia)
        fake, fake_m = fake[usable], fake_m[usable]
        if len(fake) < 2:
            raise ValueError("fewer than 2 fake images whose source is outside half A")
    every = {SYNTHETIC: (fake, fake_m), REFERENCE: (real, real_m)}  # for Dice
    fake, fake_m = _subsample(len(ib), rng, fake, fake_m)
    baseline = region_mean_baseline(real[ib], real_m[ib], fill_masks=fake_m)
    ref, ref_m = real[ia], real_m[ia]
    sets = {
        SYNTHETIC: (fake, fake_m),
        BASELINE: (baseline, fake_m),
        REFERENCE: (real[ib], real_m[ib]),
    }
    ref_table = radiomic_table(ref, ref_m, progress)
    unet = None if seg_net is None else _find_unet(seg_net)
    if seg_net is not None and unet is None:
        log.warning("evaluate_images: seg_net holds no MONAI UNet; encoder_fd is NaN")
    ref_enc = None if unet is None else encoder_features(seg_net, ref)
    rows = {}
    for name, (x, m) in sets.items():
        log.info("evaluate_images: scoring '%s' (%d images)", name, len(x))
        row = {"frd": _fd_tables(ref_table, radiomic_table(x, m, progress))}
        if seg_net is not None:
            enc = None if unet is None else encoder_features(seg_net, x)
            row["encoder_fd"] = np.nan if enc is None else frechet_distance(ref_enc, enc)
        row["ms_ssim_diversity"] = diversity(x, seed=seed)
        if seg_net is not None:
            xd, md = every.get(name, (x, m))
            row["dice"] = mask_dice(_segment(seg_net, xd, threshold), md)["dice"]
        row["detection_auc"] = detection_auc(ref, x, seed=seed)
        rows[name] = row
    if fake_source is not None and paired.any():
        rows[SYNTHETIC]["ssim_to_source"] = twin_ssim
        rows[BASELINE]["ssim_to_source"] = base_ssim
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "set"
    return df
