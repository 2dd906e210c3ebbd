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
import hashlib

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
from radiogenomics.data.cohort import covariate_keys, modality_flags, resolve, slice_axis_of

PATIENT = "patient"  # the record's patient id, for error messages


class LoadCohortImaged(mt.MapTransform):
    """Load image/mask files channel-first with the cohort's spatial_dims (MONAI readers); in a
    cohort of slice stacks (`slice_axis`), each file as its slices `(S, C, H, W)`.

    A missing or unreadable file is a FileNotFoundError/ValueError naming the patient (the
    record's `patient`) and the file; `user_error` takes it back out of MONAI's wrapping."""

    def __init__(self, keys, spatial_dims: int, slice_axis: int | None = None):
        super().__init__(keys, allow_missing_keys=True)
        self.spatial_dims = spatial_dims
        self.slice_axis = slice_axis

    def __call__(self, data):
        from radiogenomics.data.io import load_image, read_slices

        d = dict(data)
        for key in self.key_iterator(d):
            try:
                if self.slice_axis is None:
                    d[key] = load_image(d[key], self.spatial_dims)
                else:
                    d[key] = read_slices(d[key], self.slice_axis)[0]
            except (OSError, ValueError) as err:
                who = f"patient '{d[PATIENT]}', " if PATIENT in d else ""
                cls = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
                raise cls(f"{who}{key} {d[key]}: {err}") from err
        return d


class EachSlice(mt.MapTransform):
    """Run a dictionary transform on every slice of `(S, C, *spatial)` stacks (the image and
    its mask slice by slice, together) and stack the results: each slice of a stack goes
    through the pipeline a file of that one slice would (its own intensity scaling, resizing,
    augmentation). An image and mask with different slice counts are a ValueError naming the
    patient."""

    def __init__(self, keys, transform: mt.Compose):
        super().__init__(keys, allow_missing_keys=True)
        self.transform = transform

    def __call__(self, data):
        d = dict(data)
        keys = list(self.key_iterator(d))
        counts = {key: len(d[key]) for key in keys}
        if len(set(counts.values())) > 1:
            who = f"patient '{d[PATIENT]}': " if PATIENT in d else ""
            raise ValueError(f"{who}the image and mask stack different numbers of slices {counts}")
        n = next(iter(counts.values()), 0)
        out = [self.transform({key: d[key][s] for key in keys}) for s in range(n)]
        for key in keys:
            d[key] = torch.stack([o[key] for o in out])
        return d


class EvaluationSliced(mt.MapTransform):
    """Keep only the patient's evaluation slice (`evaluation_slice`) of `(S, C, *spatial)`
    stacks, before the rest of the pipeline spends time on the others."""

    def __call__(self, data):
        d = dict(data)
        keys = list(self.key_iterator(d))
        if keys:
            k = evaluation_slice(d[PATIENT], len(d[keys[0]]))
            for key in keys:
                d[key] = d[key][k]
        return d


class RandEachSlice(EachSlice, mt.Randomizable):
    """`EachSlice` of a random transform (a new draw per slice); MONAI's caching stops here."""

    def set_random_state(self, seed=None, state=None):
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:  # the inner transforms draw their own
        pass


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


def image_transforms(
    cfg: DataConfig,
    spatial_size: list[int],
    slice_axis: int | None = None,
    *,
    one_slice: bool = False,
) -> mt.Compose:
    """The MONAI dictionary pipeline for `image` and `mask` (keys may be absent); with
    `slice_axis` (a cohort of slice stacks), every slice goes through it on its own and the
    outputs are stacks `(S, C, *spatial)`, or with `one_slice` the patient's evaluation slice
    alone, `(C, *spatial)`."""
    keys = [K.IMAGE, K.MASK]
    load = LoadCohortImaged(keys, cfg.spatial_dims, slice_axis)
    steps = _intensity_and_size(cfg, spatial_size)
    random = _augmentation(cfg) if cfg.augment else []
    typed = mt.EnsureTyped(
        keys, data_type="tensor", dtype=torch.float32, track_meta=False, allow_missing_keys=True
    )
    if slice_axis is None:
        return mt.Compose([load, *steps, *random, typed])
    if one_slice:
        pick = EvaluationSliced(keys, allow_missing_keys=True)
        return mt.Compose([load, pick, *steps, *random, typed])
    stacked = [load, EachSlice(keys, mt.Compose([*steps, typed]))]
    if random:
        stacked.append(RandEachSlice(keys, mt.Compose([*random, typed])))
    return mt.Compose(stacked)


def _intensity_and_size(cfg: DataConfig, spatial_size: list[int]) -> list:
    """The deterministic steps: intensity to [-1, 1], then resizing (masks nearest)."""
    keys = [K.IMAGE, K.MASK]
    steps: list = []
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
    return steps


def _augmentation(cfg: DataConfig) -> list:
    keys = [K.IMAGE, K.MASK]
    return [
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
    Works with `torch.utils.data.DistributedSampler` like any map-style dataset. In a cohort
    of slice stacks (`uns["rg"]["slice_axis"]`) an item is still one patient, its `image` and
    `mask` the stacks `(S, C, *spatial)` and `(S, 1, *spatial)` (S differs between patients,
    0 without an image); `load_slices` gives them as one tensor of slices. `one_slice`: each
    patient's evaluation slice alone (`evaluation_slice`), so items are as without stacks.
    """

    def __init__(
        self,
        adata: ad.AnnData,
        cfg: DataConfig | None = None,
        *,
        root=None,
        indices=None,
        progress: bool = False,
        one_slice: bool = False,
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
        self.slice_axis = slice_axis_of(rg)
        self.stacked = self.slice_axis is not None and not one_slice
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
        self.transform = image_transforms(
            cfg, self.spatial_size, self.slice_axis, one_slice=one_slice
        )
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
        # a stack: no image is 0 slices, no mask an empty one per slice of the image
        stacked = self.stacked
        no_image = [0] if stacked else []
        per_slice = [len(files[K.IMAGE]) if K.IMAGE in files else 0] if stacked else []
        zeros = (
            torch.zeros([*no_image, self.channels, *self.spatial_size])
            if self.spatial_size
            else torch.zeros(0)
        )
        image = files.get(K.IMAGE, zeros)
        mask = files.get(
            K.MASK,
            torch.zeros([*per_slice, 1, *self.spatial_size])
            if self.spatial_size
            else torch.zeros(0),
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
    cohort rows `rows` (default: every patient with an image), in memory: one per patient, so
    what evaluation and sampling count are patients. In a cohort of slice stacks that is each
    patient's evaluation slice (`evaluation_slice`); `load_slices` gives every slice.

    Small cohorts (the use case: tens to a few thousand lesions) fit in memory, and a GAN
    step then indexes a tensor instead of running the transform pipeline. Augmentation is
    off here: the models apply their own, on the tensors.
    """
    cfg = dataclasses.replace(cfg or DataConfig(), augment=False, cache_rate=0.0)
    rows = image_rows(adata) if rows is None else np.asarray(rows)
    ds = CohortDataset(adata, cfg, root=root, indices=rows, progress=False, one_slice=True)
    items = [ds[i] for i in tqdm(range(len(ds)), desc="loading images", disable=not progress)]
    if not items:
        raise ValueError("no rows to load")
    images = torch.stack([it[K.IMAGE] for it in items])
    masks = torch.stack([it[K.MASK] for it in items])
    return images, masks


def load_slices(
    adata: ad.AnnData,
    cfg: DataConfig | None = None,
    rows=None,
    *,
    root=None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Every slice of the cohort rows `rows` (default: every patient with an image): images
    `(M, C, *spatial)` in [-1, 1], masks `(M, 1, *spatial)` in {0, 1}, and `owner` (M,) int64,
    each slice's position in `rows` (the slices of a patient together, in file order). A
    cohort of one image per file gives `load_images`'s tensors and `owner = arange(N)`."""
    if slice_axis_of(adata) is None:
        images, masks = load_images(adata, cfg, rows, root=root, progress=progress)
        return images, masks, np.arange(len(images))
    cfg = dataclasses.replace(cfg or DataConfig(), augment=False, cache_rate=0.0)
    rows = image_rows(adata) if rows is None else np.asarray(rows)
    ds = CohortDataset(adata, cfg, root=root, indices=rows, progress=False)
    images, masks, owner = [], [], []
    for i in tqdm(range(len(ds)), desc="loading slices", disable=not progress):
        it = ds[i]  # (S, C, *spatial) stacks
        if not len(it[K.IMAGE]):
            raise ValueError(f"patient '{adata.obs_names[rows[i]]}' has no image to load")
        images.append(it[K.IMAGE])
        masks.append(it[K.MASK])
        owner.append(np.full(len(it[K.IMAGE]), i, np.int64))
    if not images:
        raise ValueError("no rows to load")
    return torch.cat(images), torch.cat(masks), np.concatenate(owner)


def evaluation_slice(patient: str, n_slices: int) -> int:
    """The slice of a patient's stack that stands for the patient where one image per patient
    is counted (evaluation, sampling in a real mask, plots): one of its `n_slices` picked by a
    hash of its id, so every split, model and evaluation of the cohort picks the same one.
    Picked at random rather than the largest lesion because a model trains on every slice, so
    a synthetic patient's image is a random slice of a random patient: the real images it is
    compared with must be drawn the same way."""
    if n_slices < 1:
        raise ValueError(f"patient '{patient}' has no slices")
    digest = hashlib.sha256(str(patient).encode()).digest()
    return int.from_bytes(digest[:8], "little") % int(n_slices)
