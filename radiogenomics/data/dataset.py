"""A torch Dataset over a cohort: expression, covariates, image and mask per patient.

Images go through MONAI dictionary transforms built from `DataConfig`: load, channel-first,
intensity to [-1, 1], resize to the configured size (masks with nearest neighbour), optional
augmentation. Deterministic transforms are cached (MONAI CacheDataset) for the configured
fraction of the cohort. Patients without an image get zeros and `has_image=False`; patients
without expression get zeros and `has_expression=False`, so a batch always has one layout.
"""

from __future__ import annotations

import contextlib
import dataclasses

import anndata as ad
import numpy as np
import pandas as pd
import torch
from monai import transforms as mt
from monai.data import CacheDataset
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics.config import DataConfig
from radiogenomics.data.cohort import covariate_keys, modality_flags, resolve

PATIENT = "patient"  # the record's patient id, for error messages


class LoadCohortImaged(mt.MapTransform):
    """Load image/mask files channel-first with the cohort's spatial_dims (MONAI readers).

    A missing or unreadable file is a FileNotFoundError/ValueError naming the patient (the
    record's `patient`) and the file; `user_error` takes it back out of MONAI's wrapping."""

    def __init__(self, keys, spatial_dims: int):
        super().__init__(keys, allow_missing_keys=True)
        self.spatial_dims = spatial_dims

    def __call__(self, data):
        from radiogenomics.data.io import load_image

        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = load_image(d[key], self.spatial_dims)
            except (OSError, ValueError) as err:
                who = f"patient '{d[PATIENT]}', " if PATIENT in d else ""
                cls = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
                raise cls(f"{who}{key} {d[key]}: {err}") from err
        return d


def user_error(err: BaseException) -> BaseException | None:
    """The FileNotFoundError/ValueError inside MONAI's `RuntimeError: applying transform ...`
    (one per nested Compose), or None if the failure was not one of ours."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (FileNotFoundError, ValueError)):
            return err
        err = err.__cause__
    return None


@contextlib.contextmanager
def _user_errors():
    # MONAI wraps every transform error in a RuntimeError whose traceback buries the file; give
    # the user's mistake (a missing or corrupt file) back as itself, so the CLI prints one line.
    try:
        yield
    except RuntimeError as err:
        inner = user_error(err)
        if inner is None:
            raise
        raise inner from None


def image_transforms(cfg: DataConfig, spatial_size: list[int]) -> mt.Compose:
    """The MONAI dictionary pipeline for `image` and `mask` (keys may be absent)."""
    keys = [K.IMAGE, K.MASK]
    steps: list = [LoadCohortImaged(keys, cfg.spatial_dims)]
    if cfg.intensity == "minmax":
        steps.append(mt.ScaleIntensityd(K.IMAGE, minv=-1.0, maxv=1.0, allow_missing_keys=True))
    elif cfg.intensity == "percentile":
        lower, upper = cfg.percentiles
        steps.append(
            mt.ScaleIntensityRangePercentilesd(
                K.IMAGE,
                lower=lower,
                upper=upper,
                b_min=-1.0,
                b_max=1.0,
                clip=True,
                allow_missing_keys=True,
            )
        )
    else:
        steps.append(
            mt.ScaleIntensityRanged(
                K.IMAGE,
                a_min=cfg.a_min,
                a_max=cfg.a_max,
                b_min=-1.0,
                b_max=1.0,
                clip=True,
                allow_missing_keys=True,
            )
        )
    linear = "bilinear" if cfg.spatial_dims == 2 else "trilinear"
    steps.append(
        mt.Resized(
            keys,
            spatial_size=spatial_size,
            mode=(linear, "nearest"),
            anti_aliasing=(True, False),
            allow_missing_keys=True,
        )
    )
    if cfg.augment:
        steps += [
            mt.RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            mt.RandAffined(
                keys,
                prob=0.5,
                rotate_range=[0.2] * (1 if cfg.spatial_dims == 2 else 3),
                scale_range=[0.1] * cfg.spatial_dims,
                mode=("bilinear", "nearest"),
                padding_mode="border",
                allow_missing_keys=True,
            ),
        ]
    steps.append(
        mt.EnsureTyped(
            keys, data_type="tensor", dtype=torch.float32, track_meta=False, allow_missing_keys=True
        )
    )
    return mt.Compose(steps)


def _codes(obs, key: str, vocab, need) -> np.ndarray:
    """Codes against the cohort's vocabulary: a subset AnnData drops unused categories, so the
    column's own codes would shift. Patients outside `need` (those without expression, which
    may lack covariates) get code 0 where theirs is missing."""
    codes = pd.Categorical(obs[key].astype(str), categories=[str(v) for v in vocab]).codes
    absent = obs[key].isna().to_numpy() & ~need
    codes = np.where(absent, 0, codes)
    bad = obs.index[codes < 0].tolist()
    if bad:
        raise ValueError(
            f"covariate '{key}' of patient(s) {bad[:10]} is missing or outside the vocabulary {list(vocab)}"
        )
    return codes


class CohortDataset(Dataset):
    """Patients of a cohort as dicts of tensors.

    Each item: `expression` (n_genes,), `categorical` (n_cat,) long codes, `numeric` (n_num,)
    standardised, `image` (C, *spatial) in [-1, 1], `mask` (1, *spatial) in {0, 1},
    `has_expression`, `has_image`, `has_mask` booleans, and `index` (row in the cohort).
    Works with `torch.utils.data.DistributedSampler` like any map-style dataset.
    """

    def __init__(
        self,
        adata: ad.AnnData,
        cfg: DataConfig | None = None,
        *,
        root=None,
        indices=None,
        progress: bool = False,
    ):
        cfg = cfg or DataConfig()
        rg = adata.uns.get(K.UNS, {})
        cohort_dims = int(rg.get(K.SPATIAL_DIMS, 2))
        if cohort_dims != cfg.spatial_dims:
            raise ValueError(
                f"config data.spatial_dims={cfg.spatial_dims} but the cohort has spatial_dims={cohort_dims} "
                f"(image_size {list(rg.get(K.IMAGE_SIZE, []))})"
            )
        self.spatial_size = list(cfg.image_size or rg.get(K.IMAGE_SIZE, []))
        has_image = adata.obs[K.HAS_IMAGE].to_numpy(bool)
        if has_image.any() and len(self.spatial_size) != cfg.spatial_dims:
            raise ValueError(
                "the cohort has no uns['rg']['image_size']; validate it or set data.image_size"
            )
        if has_image.any() and K.CHANNELS not in rg:
            raise ValueError(
                "the cohort has no uns['rg']['channels']; validate it with validate_cohort first"
            )
        self.channels = int(rg.get(K.CHANNELS, cfg.in_channels or 1))
        if cfg.in_channels is not None and has_image.any() and cfg.in_channels != self.channels:
            raise ValueError(
                f"config data.in_channels={cfg.in_channels} but the cohort's images have {self.channels} channel(s)"
            )
        self.indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        cat_keys, num_keys = covariate_keys(adata)
        num_stats = rg.get(K.COVARIATES, {}).get(K.NUMERIC, {})
        vocab = rg.get(K.COVARIATES, {}).get(K.CATEGORICAL, {})
        obs = adata.obs
        need = modality_flags(adata)[K.HAS_EXPRESSION]  # who must have every covariate
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        self.expression = torch.as_tensor(np.nan_to_num(X, nan=0.0), dtype=torch.float32)
        self.categorical = torch.as_tensor(
            np.stack([_codes(obs, k, vocab[k], need) for k in cat_keys], 1)
            if cat_keys
            else np.zeros((adata.n_obs, 0)),
            dtype=torch.long,
        )
        num = [
            ((obs[k].to_numpy(float) - num_stats[k]["mean"]) / num_stats[k]["std"])
            for k in num_keys
        ]
        for k, values in zip(num_keys, num, strict=True):
            if not np.isfinite(values[need]).all():
                missing = obs.index[~np.isfinite(values) & need].tolist()[:10]
                raise ValueError(f"numeric covariate '{k}' is missing for patient(s) {missing}")
            values[~np.isfinite(values) & ~need] = 0.0  # no expression: no covariates needed
        self.numeric = torch.as_tensor(
            np.stack(num, 1) if num else np.zeros((adata.n_obs, 0)), dtype=torch.float32
        )
        self.flags = {
            k: torch.as_tensor(obs[k].to_numpy(bool))
            for k in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK)
        }
        records = []
        for i in self.indices:
            rec = {PATIENT: str(obs.index[i])}
            for col, flag in ((K.IMAGE, K.HAS_IMAGE), (K.MASK, K.HAS_MASK)):
                if obs[flag].iat[i]:
                    rec[col] = str(resolve(adata, obs[col].iat[i], root))
            records.append(rec)
        self.transform = image_transforms(cfg, self.spatial_size)
        with _user_errors():  # caching runs the deterministic transforms now
            self.images = CacheDataset(
                records, self.transform, cache_rate=cfg.cache_rate, num_workers=0, progress=progress
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        row = int(self.indices[i])
        with _user_errors():
            files = self.images[i]
        zeros = (
            torch.zeros([self.channels, *self.spatial_size])
            if self.spatial_size
            else torch.zeros(0)
        )
        image = files.get(K.IMAGE, zeros)
        mask = files.get(
            K.MASK, torch.zeros([1, *self.spatial_size]) if self.spatial_size else torch.zeros(0)
        )
        return {
            "index": row,
            "expression": self.expression[row],
            "categorical": self.categorical[row],
            "numeric": self.numeric[row],
            K.IMAGE: image,
            K.MASK: (mask > 0.5).float() if mask.numel() else mask,
            **{k: v[row] for k, v in self.flags.items()},
        }


def image_rows(adata: ad.AnnData, *, need_mask: bool = False) -> np.ndarray:
    """Row numbers of the patients with an image (and a mask, if `need_mask`)."""
    rows = adata.obs[K.HAS_IMAGE].to_numpy(bool) if K.HAS_IMAGE in adata.obs else None
    if rows is None or not rows.any():
        raise ValueError("no patient of the cohort has an image (has_image is all False)")
    if need_mask:
        rows = rows & adata.obs[K.HAS_MASK].to_numpy(bool)
        if not rows.any():
            raise ValueError("no patient of the cohort has both an image and a mask")
    return np.flatnonzero(rows)


def load_images(
    adata: ad.AnnData,
    cfg: DataConfig | None = None,
    rows=None,
    *,
    root=None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images `(N, C, *spatial)` in [-1, 1] and masks `(N, 1, *spatial)` in {0, 1} of the
    cohort rows `rows` (default: every patient with an image), in memory.

    Small cohorts (the use case: tens to a few thousand lesions) fit in memory, and a GAN
    step then indexes a tensor instead of running the transform pipeline. Augmentation is
    off here: the models apply their own, on the tensors.
    """
    cfg = dataclasses.replace(cfg or DataConfig(), augment=False, cache_rate=0.0)
    rows = image_rows(adata) if rows is None else np.asarray(rows)
    ds = CohortDataset(adata, cfg, root=root, indices=rows, progress=False)
    items = [ds[i] for i in tqdm(range(len(ds)), desc="loading images", disable=not progress)]
    if not items:
        raise ValueError("no rows to load")
    images = torch.stack([it[K.IMAGE] for it in items])
    masks = torch.stack([it[K.MASK] for it in items])
    return images, masks
