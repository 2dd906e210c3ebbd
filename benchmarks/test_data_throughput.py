"""Throughput of the data side: phantom rendering and cohort loading (pytest-benchmark).

Run with `pytest benchmarks --benchmark-only`; numbers are per call, on whatever machine runs it.
"""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from radiogenomics.config import DataConfig
from radiogenomics.data.dataset import CohortDataset
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom


@pytest.mark.parametrize("spatial_dims,n", [(2, 512), (3, 128)], ids=["2d-512", "3d-128"])
def test_phantom_render(benchmark, spatial_dims, n):
    phantom = benchmark(make_phantom, n, spatial_dims, progress=False)
    assert phantom.images.shape[0] == n


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_dataset_epoch(benchmark, tmp_path, spatial_dims):
    """One epoch over a 128-patient cohort from cache: the per-step cost the training loop sees."""
    cohort = read_cohort(
        write_phantom(make_phantom(128, spatial_dims, progress=False), tmp_path, progress=False)
    )
    ds = CohortDataset(cohort, DataConfig(spatial_dims=spatial_dims))
    loader = DataLoader(ds, batch_size=32)

    def epoch():
        return sum(batch["image"].shape[0] for batch in loader)

    assert benchmark(epoch) == 128
