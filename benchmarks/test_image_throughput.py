"""Throughput of the image GAN and the segmentation net on the engine (pytest-benchmark).

One call is a block of training steps on a 2D phantom (64 x 64); the model is built outside the
timed block. On CUDA the block ends with a synchronisation (bf16 autocast and channels-last
are on there), so the timer does not stop before the kernels do.
Run with `pytest benchmarks --benchmark-only`.
"""

from __future__ import annotations

import pytest
import torch

from radiogenomics.config import load_config
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models import ImageGAN, Segmenter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_phantom")
    return read_cohort(
        write_phantom(make_phantom(64, 2, size=64, progress=False), out, progress=False)
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
def test_image_gan_training_steps(benchmark, cohort, device):
    """10 generator steps (30 critic steps) at batch 16, the CPU widths of the phantom runs."""
    cfg = load_config(
        None,
        [f"device={device}", "train.steps=10", "train.val_fraction=0", "train.batch_size=16",
         "train.n_critic=3", "image.channels=[64,32,16,8]", "image.critic_channels=[16,32,64]",
         "image.n_noise=32", "image.n_code=32", "image.n_hidden=128"],
    )  # fmt: skip

    def fresh():
        return (ImageGAN(cohort, cfg),), {}

    def block(model):
        model.train(progress=False)
        _sync(device)
        return model

    assert benchmark.pedantic(block, setup=fresh, rounds=3, warmup_rounds=1).trained


@pytest.mark.parametrize("device", DEVICES)
def test_segmenter_training_steps(benchmark, cohort, device):
    """20 U-Net steps at batch 16 (segment defaults)."""
    cfg = load_config(None, [f"device={device}", "segment.steps=20", "train.val_fraction=0"])

    def fresh():
        return (Segmenter(cohort, cfg, progress=False),), {}

    def block(model):
        model.train(progress=False)
        _sync(device)
        return model

    assert benchmark.pedantic(block, setup=fresh, rounds=3, warmup_rounds=1).trained
