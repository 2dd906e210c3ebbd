"""Throughput of the data side (pytest-benchmark): phantom rendering and one epoch over a
cohort from cache (the per-step cost the training loop sees). Full size: 512 2D / 128 3D
phantoms and a 128-patient epoch; smoke size: 64 / 16 and 32. Harness: `_bench.py`.
"""

from __future__ import annotations

import pytest
from _bench import measure
from torch.utils.data import DataLoader

from radiogenomics.config import DataConfig
from radiogenomics.data.dataset import CohortDataset
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom

RENDERED = {2: {"full": 512, "smoke": 64}, 3: {"full": 128, "smoke": 16}}
EPOCH = {"full": 128, "smoke": 32}


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_phantom_render(benchmark, size, spatial_dims):
    n = RENDERED[spatial_dims][size]  # seconds a call at full size: few rounds
    phantom = measure(benchmark, lambda: make_phantom(n, spatial_dims, progress=False),
                      device="cpu", dtype="fp32", batch=n,
                      shape=[64] * 2 if spatial_dims == 2 else [32] * 3, size=size,
                      rounds=(2, 3), warmup=(1, 1))  # fmt: skip
    assert phantom.images.shape[0] == n


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_dataset_epoch(benchmark, tmp_path, size, spatial_dims):
    n = EPOCH[size]
    cohort = read_cohort(
        write_phantom(make_phantom(n, spatial_dims, progress=False), tmp_path, progress=False)
    )
    ds = CohortDataset(cohort, DataConfig(spatial_dims=spatial_dims))
    loader = DataLoader(ds, batch_size=32)

    def epoch():
        return sum(batch["image"].shape[0] for batch in loader)

    seen = measure(benchmark, epoch, device="cpu", dtype="fp32", batch=n,
                   shape=list(ds[0]["image"].shape[1:]), size=size)  # fmt: skip
    assert seen == n
