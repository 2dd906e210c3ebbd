"""CohortDataset: tensors per patient through MONAI transforms, unpaired patients, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from radiogenomics import _keys as K
from radiogenomics.config import DataConfig
from radiogenomics.data.cohort import validate_cohort
from radiogenomics.data.dataset import CohortDataset, load_images
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom


def _cfg(spatial_dims, **kw):
    return DataConfig(spatial_dims=spatial_dims, **kw)


def test_item_layout_and_ranges(phantom_cohort, phantom, spatial_dims):
    ds = CohortDataset(phantom_cohort, _cfg(spatial_dims))
    size = [64] * 2 if spatial_dims == 2 else [32] * 3
    assert len(ds) == 48
    obs = phantom_cohort.obs
    i = int(np.flatnonzero(obs[K.HAS_IMAGE] & obs[K.HAS_EXPRESSION])[0])
    item = ds[i]
    assert item["image"].shape == (1, *size) and item["mask"].shape == (1, *size)
    assert item["image"].min() == pytest.approx(-1.0) and item["image"].max() == pytest.approx(1.0)
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(item["mask"].numpy(), phantom.masks[i])
    np.testing.assert_allclose(item["expression"].numpy(), phantom_cohort.X[i])
    assert item["categorical"].dtype == torch.long and item["categorical"].shape == (2,)
    # Numeric covariates are standardised with the cohort's statistics.
    stats = phantom_cohort.uns["rg"]["covariates"]["numeric"]["age"]
    assert item["numeric"].item() == pytest.approx(
        (obs["age"].iat[i] - stats["mean"]) / stats["std"], rel=1e-5
    )
    assert bool(item["has_image"]) and bool(item["has_expression"])


def test_unpaired_patients_get_zeros_and_flags(phantom_cohort, spatial_dims):
    ds = CohortDataset(phantom_cohort, _cfg(spatial_dims))
    obs = phantom_cohort.obs
    no_img = int(np.flatnonzero(~obs[K.HAS_IMAGE])[0])
    no_expr = int(np.flatnonzero(~obs[K.HAS_EXPRESSION])[0])
    assert not bool(ds[no_img]["has_image"]) and float(ds[no_img]["image"].abs().sum()) == 0.0
    assert ds[no_img]["image"].shape == ds[no_expr]["image"].shape
    assert (
        not bool(ds[no_expr]["has_expression"])
        and float(ds[no_expr]["expression"].abs().sum()) == 0.0
    )
    batch = next(iter(DataLoader(ds, batch_size=48)))  # one layout: mixed patients collate
    assert batch["image"].shape[0] == 48
    assert batch["has_image"].sum().item() == int(obs[K.HAS_IMAGE].sum())


def test_resize_percentile_and_augment(phantom_cohort, spatial_dims):
    size = [24] * spatial_dims
    cfg = _cfg(spatial_dims, image_size=size, intensity="percentile", augment=True, cache_rate=0.5)
    ds = CohortDataset(phantom_cohort, cfg)
    i = int(np.flatnonzero(phantom_cohort.obs[K.HAS_IMAGE])[0])
    ds.transform.set_random_state(seed=0)  # MONAI's random transforms draw from their own state
    draws = [ds[i] for _ in range(6)]
    a = draws[0]
    assert a["image"].shape == (1, *size) and a["mask"].shape == (1, *size)
    assert a["image"].min() >= -1.0 and a["image"].max() <= 1.0
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0}
    # Augmentation draws anew per access (random transforms are not cached).
    distinct = {tuple(d["mask"].flatten().tolist()) for d in draws}
    assert len(distinct) > 1


def test_distributed_sampler_partitions_patients(phantom_cohort, spatial_dims):
    ds = CohortDataset(phantom_cohort, _cfg(spatial_dims))
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        for batch in DataLoader(ds, batch_size=8, sampler=sampler):
            seen += batch["index"].tolist()
    assert sorted(seen) == list(range(48))


def test_spatial_dims_mismatch_names_both(phantom_cohort, spatial_dims):
    other = 3 if spatial_dims == 2 else 2
    with pytest.raises(ValueError, match=rf"spatial_dims={other}.*spatial_dims={spatial_dims}"):
        CohortDataset(phantom_cohort, _cfg(other))


def test_subset_keeps_vocabulary_codes(phantom_cohort, spatial_dims):
    """A subset AnnData drops unused categories; codes must still follow uns' vocabulary."""
    sub = phantom_cohort[phantom_cohort.obs["subtype"] != "A"].copy()
    assert list(sub.obs["subtype"].cat.categories) == ["B", "C"]
    ds = CohortDataset(sub, _cfg(spatial_dims))
    codes = ds.categorical[:, 1].numpy()
    expected = sub.obs["subtype"].map({"A": 0, "B": 1, "C": 2}).astype(int).to_numpy()
    np.testing.assert_array_equal(codes, expected)


def test_missing_covariate_and_channel_mismatch_are_errors(phantom_cohort, spatial_dims):
    bad = phantom_cohort.copy()
    bad.obs["age"] = bad.obs["age"].astype(float)
    bad.obs.iloc[3, bad.obs.columns.get_loc("age")] = np.nan
    with pytest.raises(
        ValueError, match=rf"'age' is missing for patient\(s\) \['{bad.obs_names[3]}'\]"
    ):
        CohortDataset(bad, _cfg(spatial_dims))
    with pytest.raises(ValueError, match=r"data.in_channels=3 .* 1 channel"):
        CohortDataset(phantom_cohort, _cfg(spatial_dims, in_channels=3))


@pytest.mark.parametrize("cache_rate", [0.0, 1.0])
def test_missing_or_corrupt_file_names_patient_and_file(tmp_path, cache_rate):
    # MONAI wraps transform errors in "RuntimeError: applying transform ..."; the user gets
    # the file back: a FileNotFoundError or ValueError naming the patient and the path
    cohort = read_cohort(write_phantom(make_phantom(4, 2, size=16, progress=False), tmp_path))
    validate_cohort(cohort, progress=False)  # records image_size and channels
    cfg = DataConfig(spatial_dims=2, cache_rate=cache_rate)
    (tmp_path / cohort.obs["image"].iat[1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"patient 'PH00001', image .*PH00001\.nii\.gz"):
        load_images(cohort, cfg)
    (tmp_path / cohort.obs["image"].iat[1]).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"patient 'PH00001', image .*cannot read image file"):
        load_images(cohort, cfg)
    with pytest.raises(ValueError, match="cannot read image file"):
        CohortDataset(cohort, cfg)[1]
