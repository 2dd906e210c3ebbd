"""The benchmark suite's harness (benchmarks/_bench.py): the training step it times is the
model's own and nothing trains while it is captured; the eager fp32 reference turns the
speed switches off; FLOPs and the MFU peaks. The suite itself runs with `pytest benchmarks
--benchmark-only` (docs/benchmarks.md), outside the default test run."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _bench  # noqa: E402

from radiogenomics.data.cohort import make_cohort  # noqa: E402
from radiogenomics.models.gene_gan import GeneGAN  # noqa: E402


@pytest.fixture
def gene_gan():
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(32)]
    expr = pd.DataFrame(rng.normal(size=(32, 20)), index=ids, columns=[f"G{j}" for j in range(20)])
    obs = pd.DataFrame({"subtype": rng.choice(list("AB"), 32)}, index=ids)
    cohort = make_cohort(expr, obs, categorical=["subtype"], numeric=[])
    cfg = _bench.config(["gene.n_hidden=16", "gene.n_noise=8", "train.batch_size=8",
                         "train.n_critic=2", "train.val_fraction=0"])  # fmt: skip
    return GeneGAN(cohort, cfg)


def _weights(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_engine_is_the_models_step_and_trains_nothing_until_called(gene_gan):
    g, c = _weights(gene_gan.generator), _weights(gene_gan.critic)
    engine = _bench.engine_of(gene_gan)
    assert engine.trainer.step == 0 and engine.parts["n_critic"] == 2
    assert _same(g, _weights(gene_gan.generator)) and _same(c, _weights(gene_gan.critic))
    logs = engine()  # one library step: critic updates, then the generator's
    assert {"critic", "generator", "gp"} <= set(logs)  # the losses of both updates
    assert not _same(g, _weights(gene_gan.generator))
    assert not _same(c, _weights(gene_gan.critic))


def test_critic_update_moves_only_the_critic(gene_gan):
    engine = _bench.engine_of(gene_gan)
    g, c = _weights(gene_gan.generator), _weights(gene_gan.critic)
    engine.update("critic")()
    assert _same(g, _weights(gene_gan.generator)) and not _same(c, _weights(gene_gan.critic))
    g, c = _weights(gene_gan.generator), _weights(gene_gan.critic)
    engine.update("generator")()
    assert not _same(g, _weights(gene_gan.generator)) and _same(c, _weights(gene_gan.critic))
    assert all(p.requires_grad for p in gene_gan.critic.parameters())  # set back
    with pytest.raises(ValueError, match="'critic' or 'generator'"):
        engine.update("both")


def test_eager_fp32_turns_the_speed_switches_off():
    eager = _bench.config([], variant="eager-fp32")
    assert not eager.train.amp and not eager.train.channels_last
    library = _bench.config([])
    assert library.train.amp and library.train.channels_last  # the defaults
    assert _bench.dtype_of(library) == ("bf16-autocast" if _bench.CUDA else "fp32")
    with pytest.raises(ValueError, match="variant"):
        _bench.config([], variant="fast")


def test_flops_of_a_linear_layer():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    assert _bench.count_flops(lambda: layer(x)) == 2 * 2 * 8 * 4  # multiply-adds x 2


def test_flops_of_a_gradient_penalty_step(gene_gan):
    # torch's FlopCounterMode tracks modules with hooks that raise inside autograd.grad:
    # a critic step (with its penalty) must still be counted
    layer = torch.nn.Linear(8, 1)
    x = torch.randn(2, 8, requires_grad=True)

    def penalty():
        (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
        g.square().sum().backward()

    assert _bench.count_flops(penalty) > 2 * 2 * 8  # the forward's and more
    assert _bench.count_flops(_bench.engine_of(gene_gan).update("critic")) > 0


@pytest.mark.parametrize(
    "name,peak",
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla T4", None)],
)  # fmt: skip
def test_bf16_peaks_by_device_name(name, peak):
    with mock.patch.object(torch.cuda, "get_device_name", return_value=name):
        found, why = _bench.peak_bf16("cuda")
    assert found == peak
    assert (why is None) == (peak is not None)
    if why:
        assert name in why
    assert _bench.peak_bf16("cpu") == (None, "MFU is reported on CUDA only")


def test_bench_size_from_option_or_environment(monkeypatch):
    config = mock.Mock()
    config.getoption.return_value = None
    monkeypatch.setenv(_bench.SIZE_ENV, "full")
    assert _bench.bench_size(config) == "full"
    monkeypatch.delenv(_bench.SIZE_ENV)
    assert _bench.bench_size(config) == ("full" if _bench.CUDA else "smoke")
    config.getoption.return_value = "huge"
    with pytest.raises(ValueError, match="huge"):
        _bench.bench_size(config)


def test_bench_devices_default_to_the_gpu_where_there_is_one(monkeypatch):
    config = mock.Mock()
    config.getoption.return_value = None
    monkeypatch.delenv(_bench.DEVICE_ENV, raising=False)
    assert _bench.bench_devices(config) == ({"cuda"} if _bench.CUDA else {"cpu"})
    monkeypatch.setenv(_bench.DEVICE_ENV, "all")
    assert _bench.bench_devices(config) == {"cpu", "cuda"}
    config.getoption.return_value = "tpu"
    with pytest.raises(ValueError, match="tpu"):
        _bench.bench_devices(config)
