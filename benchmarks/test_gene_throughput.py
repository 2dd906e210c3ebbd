"""Throughput of the gene WGAN-GP (pytest-benchmark): the training step (n_critic critic
updates with the gradient penalty, one generator update), its critic and generator updates
apart, and sampling. Harness and recorded numbers: `_bench.py`.

A step's samples are its generator batch (the critic's n_critic batches are not counted).
Full size adds batch 4096, the batch a GPU needs to be busy (issue 28's target: >= 1 million
samples/s at 1000 genes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _bench import DEVICES, VARIANTS, config, dtype_of, engine_of, measure, use_device

from radiogenomics.data.cohort import make_cohort
from radiogenomics.models.gene_gan import GeneGAN

PRESET = "configs/gene_wgan.yaml"  # its networks and loop (the gGAN-style preset)


def _cohort(n_genes: int, n: int = 512):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(n)]
    expr = pd.DataFrame(
        rng.normal(size=(n, n_genes)), index=ids, columns=[f"G{j}" for j in range(n_genes)]
    )
    obs = pd.DataFrame(
        {
            "subtype": rng.choice(list("ABCD"), n),
            "sex": rng.choice(["f", "m"], n),
            "age": rng.uniform(30, 80, n),
        },
        index=ids,
    )
    return make_cohort(expr, obs, categorical=["subtype", "sex"], numeric=["age"])


def _model(n_genes, batch, variant, device):
    cfg = config([f"train.batch_size={batch}", "train.val_fraction=0"], path=PRESET,
                 variant=variant, device=device)  # fmt: skip
    return GeneGAN(_cohort(n_genes), cfg), cfg


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_genes", [1000, 5000], ids=["1k-genes", "5k-genes"])
@pytest.mark.parametrize("part", ["step", "critic", "generator"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gene_gan(benchmark, size, device, n_genes, part, variant):
    """The library's training step (`part="step"`), or one critic or generator update; batch
    4096 at full size, the preset's 32 at smoke size."""
    use_device(device)
    batch = 4096 if size == "full" else 32
    model, cfg = _model(n_genes, batch, variant, device)
    engine = engine_of(model)
    fn = engine if part == "step" else engine.update(part)
    measure(
        benchmark, fn, device=device, dtype=dtype_of(cfg), batch=batch, shape=[n_genes],
        size=size, group=f"gene-{part}-{n_genes}-b{batch}-{device}", variant=variant,
        n_critic=cfg.train.n_critic if part == "step" else None,
    )  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gene_gan_preset_batch(benchmark, size, device, variant):
    """Full size only: the step at the preset's batch (32), 1000 genes, launch-bound on a GPU."""
    use_device(device)
    if size != "full":
        pytest.skip("full size only (smoke runs batch 32 in test_gene_gan)")
    model, cfg = _model(1000, 32, variant, device)
    measure(benchmark, engine_of(model), device=device, dtype=dtype_of(cfg), batch=32,
            shape=[1000], size=size, group=f"gene-step-1000-b32-{device}", variant=variant,
            n_critic=cfg.train.n_critic)  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_gene_gan_sampling(benchmark, size, device):
    """Synthetic patients of 1000 genes as an AnnData on the cohort's scale (`sample`)."""
    use_device(device)
    n = 10_000 if size == "full" else 2_000
    model, cfg = _model(1000, 32, "library", device)
    engine_of(model)  # what training sets up (the sampler on the device), without training
    measure(benchmark, lambda: model.sample(n, seed=0), device=device, dtype=dtype_of(cfg),
            batch=n, shape=[1000], size=size, flops=False)  # fmt: skip
