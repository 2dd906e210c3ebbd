"""Options and shared fixtures of the benchmark suite (`pytest benchmarks --benchmark-only`).

`--bench-size smoke|full` (or RADIOGENOMICS_BENCH_SIZE): smoke, the default without a GPU,
runs every case at tiny shapes in about two minutes on one CPU thread (CI runs it); full, the
default with one, at the shapes of issue 28 (gene GAN at 1000 and 5000 genes, image GAN 2D
128^2 and 256^2 at the xu_nodule widths and 3D 64^3, the joint step at the demo's size and at
128^2). `--bench-device cpu|cuda|all` (or RADIOGENOMICS_BENCH_DEVICE): where the model cases
run; cuda alone by default on a GPU machine. The harness: `_bench.py`.
"""

from __future__ import annotations

import os

import _bench
import pytest
import torch

from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom

# One intra-op thread unless the caller set OMP_NUM_THREADS: steady numbers on a shared CPU
# (the README's measurements say which). A GPU run is unaffected.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--bench-size",
        choices=["smoke", "full"],
        default=None,
        help="benchmark shapes: smoke (tiny; the default without a GPU) or full (issue 28's; "
        "the default with one); also RADIOGENOMICS_BENCH_SIZE",
    )
    parser.addoption(
        "--bench-device",
        choices=["cpu", "cuda", "all"],
        default=None,
        help="devices of the model cases: cuda (the default with a GPU), cpu (without) or all; "
        "also RADIOGENOMICS_BENCH_DEVICE",
    )


def pytest_configure(config):
    _bench.selected = _bench.bench_devices(config)


@pytest.fixture(scope="session")
def size(request) -> str:
    """ "smoke" or "full" (`_bench.bench_size`)."""
    return _bench.bench_size(request.config)


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """`get(n, spatial_dims, size, n_genes=128)`: a phantom cohort written once per session
    and read back as the models read a cohort (image paths in obs)."""
    cache: dict = {}

    def get(n: int, spatial_dims: int, size: int, n_genes: int = 128):
        key = (n, spatial_dims, size, n_genes)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"phantom{spatial_dims}d_{size}_{n}")
            phantom = make_phantom(n, spatial_dims, size=size, n_genes=n_genes, seed=0,
                                   frac_image_only=0.05, frac_expression_only=0.05,
                                   progress=False)  # fmt: skip
            cache[key] = read_cohort(write_phantom(phantom, out, progress=False))
        return cache[key]

    return get
