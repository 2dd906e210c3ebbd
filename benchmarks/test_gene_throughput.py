"""Throughput of the gene WGAN-GP: training steps and sampling (pytest-benchmark).

One benchmark call is a block of generator steps (each after n_critic critic steps with the
gradient penalty), so the number is the cost of training. On CUDA the block ends with a
synchronisation: kernels run asynchronously and a timer would otherwise stop early.
Run with `pytest benchmarks --benchmark-only`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.config import Config
from radiogenomics.data.cohort import make_cohort
from radiogenomics.models.gene_gan import GeneGAN

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_genes", [1000, 5000], ids=["1k-genes", "5k-genes"])
def test_gene_gan_training_steps(benchmark, tmp_path, device, n_genes):
    """20 generator steps (100 critic steps) at batch 32, as the gene_wgan preset trains."""
    cfg = Config(device=device)
    cfg.train.steps, cfg.train.val_fraction = 20, 0.0
    cohort = _cohort(n_genes)

    def fresh():  # built outside the timed block: only the training steps are timed
        return (GeneGAN(cohort, cfg),), {}

    def block(model):
        model.train(progress=False)
        _sync(device)
        return model

    model = benchmark.pedantic(block, setup=fresh, rounds=3, warmup_rounds=1)
    assert model.trained


@pytest.mark.parametrize("device", DEVICES)
def test_gene_gan_sampling(benchmark, device):
    """10,000 synthetic patients of 1000 genes, on the cohort's scale, as an AnnData."""
    cfg = Config(device=device)
    cfg.train.steps, cfg.train.val_fraction = 1, 0.0
    model = GeneGAN(_cohort(1000), cfg)
    model.train(progress=False)

    def sample():
        adata = model.sample(10_000, seed=0)
        _sync(device)
        return adata

    assert benchmark(sample).shape == (10_000, 1000)
