"""The benchmark suite's harness (imported by the test files of `benchmarks/` and by
`tests/test_benchmarks.py`): sizes, the engine's own step, timing with warm-up, and the
numbers each case records in `benchmark.extra_info`.

One measured function per case: the model, its data and its step are built outside it, the
warm-up calls run before the timer (`benchmark.pedantic(warmup_rounds=...)`), and on CUDA the
function ends with `torch.cuda.synchronize()` (kernels run asynchronously: a timer would
otherwise stop before they do). Every case records

- device, dtype ("bf16-autocast" where the library trains under autocast, else "fp32"),
  batch, shape, and samples_per_s (batch / mean seconds a call);
- on CUDA: flops (a call's FLOPs, counted once outside timing by
  `torch.utils.flop_counter.FlopCounterMode`), achieved_flops_per_s and mfu (over the
  device's dense bf16 peak, `PEAK_BF16`; None with `mfu_note` saying why on another device).

A training step case runs twice in one session: `variant="eager-fp32"` (the library's step
with every speed switch off: `EAGER_FP32`) and `variant="library"` (the preset's settings).
Both share a pytest-benchmark group, so `--benchmark-group-by=group` (the default) prints
them side by side; the library case also records `speedup_vs_eager_fp32` when the reference
ran first in the session (it is parametrised first).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from unittest import mock

import torch

from radiogenomics.config import load_config
from radiogenomics.train import loop

SIZES = ("smoke", "full")
SIZE_ENV = "RADIOGENOMICS_BENCH_SIZE"
VARIANTS = ("eager-fp32", "library")
CUDA = torch.cuda.is_available()
DEVICES = ["cpu", "cuda"]  # every model case's devices; `use_device` skips the unselected
DEVICE_ENV = "RADIOGENOMICS_BENCH_DEVICE"
selected = {"cpu"}  # the devices this session runs (`bench_devices`, set by conftest)

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in FLOP/s from the vendors' data sheets, by
# a substring of torch.cuda.get_device_name(); the first match wins, so the specific names
# (PCIe, NVL) come before the family.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),  # the H100 SXM's compute with more memory
    ("A100", 312e12),  # SXM and PCIe alike
]

# The train.* switches the eager fp32 reference turns off, where the config has them: bf16
# autocast, channels-last memory, and any compile / CUDA-graph switch the engine grows.
EAGER_FP32 = ("amp", "channels_last", "compile", "cuda_graphs")

_reference_s: dict[str, float] = {}  # group -> the eager fp32 reference's mean seconds


def bench_size(config) -> str:
    """`--bench-size`, else the environment variable `SIZE_ENV`, else "full" on a CUDA
    machine and "smoke" elsewhere."""
    size = config.getoption("--bench-size") or os.environ.get(SIZE_ENV, "").strip()
    size = size or ("full" if CUDA else "smoke")
    if size not in SIZES:
        raise ValueError(f"--bench-size (or {SIZE_ENV}) must be one of {SIZES}; got {size!r}")
    return size


def bench_devices(config) -> set[str]:
    """`--bench-device cpu|cuda|all`, else the environment variable `DEVICE_ENV`, else
    "cuda" on a CUDA machine (its CPU at full size would take long and tell little) and
    "cpu" elsewhere."""
    choice = config.getoption("--bench-device") or os.environ.get(DEVICE_ENV, "").strip()
    choice = choice or ("cuda" if CUDA else "cpu")
    if choice not in ("cpu", "cuda", "all"):
        raise ValueError(
            f"--bench-device (or {DEVICE_ENV}) must be cpu, cuda or all; got {choice!r}"
        )
    return {"cpu", "cuda"} if choice == "all" else {choice}


def use_device(device: str) -> None:
    """Skip a case on a device this machine lacks or this session did not select."""
    import pytest

    if device == "cuda" and not CUDA:
        pytest.skip("needs a CUDA GPU")
    if device not in selected:
        pytest.skip(f"{device} not selected (--bench-device)")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def config(overrides: list[str], *, path=None, variant: str = "library", device: str = "cpu"):
    """A `Config` from a preset (`path`) and `overrides`, on `device`, short of no step (the
    benchmarks run steps themselves), for `variant` (`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    overrides = [f"device={device}", *overrides]
    if variant == "eager-fp32":
        names = {f.name for f in dataclasses.fields(load_config(None).train)}
        overrides += [f"train.{k}=false" for k in EAGER_FP32 if k in names]
    return load_config(path, overrides)


def dtype_of(cfg) -> str:
    """The compute dtype of a step under `cfg`: bf16 autocast runs only on CUDA."""
    on = cfg.device.startswith("cuda") or (cfg.device == "auto" and CUDA)
    return "bf16-autocast" if on and cfg.train.amp else "fp32"


@dataclasses.dataclass
class Engine:
    """What `engine_of` captured from a model's `train()`: the `Trainer` and the step
    function its `fit` was given (the library's own training step: n_critic critic updates,
    the generator update, the EMA, under the engine's autocast), and, for GANs, the
    arguments of `loop.adversarial_step` (the critic's and generator's loss functions,
    networks and optimisers)."""

    trainer: loop.Trainer
    step: loop.StepFn
    parts: dict | None

    def __call__(self):
        return self.step(self.trainer.rng)

    def update(self, which: str):
        """One `which` ("critic" or "generator") update of the GAN alone: the inner part of
        `loop.adversarial_step` (zero the gradients, the loss under the engine's autocast,
        backward, optimiser step), for timing a step's two halves apart."""
        p, rng = self.parts, self.trainer.rng
        if p is None:
            raise ValueError("this engine ran no adversarial step")
        if which == "critic":
            fn, opt, frozen = p["critic_step"], p["opt_c"], None
        elif which == "generator":  # the critic's weights need no gradients here
            fn, opt, frozen = p["generator_step"], p["opt_g"], p["critic"]
        else:
            raise ValueError(f"which must be 'critic' or 'generator'; got {which!r}")

        def run():
            opt.zero_grad(set_to_none=True)
            if frozen is not None:
                frozen.requires_grad_(False)
            try:
                with self.trainer.autocast():
                    loss, _ = fn(rng)
                loss.backward()
            finally:
                if frozen is not None:
                    frozen.requires_grad_(True)
            opt.step()

        return run


def engine_of(model) -> Engine:
    """The training step of `model` (any model whose `train()` runs a `loop.Trainer`),
    captured instead of run: `Trainer.fit` records its step and returns at once, so the
    networks, optimisers, batches and step are exactly what training builds, and nothing
    trains."""
    seen: dict = {}
    adversarial = loop.adversarial_step

    def fit(trainer, step, evaluate=None):
        seen["trainer"], seen["step"] = trainer, step
        return trainer.summary()

    def adversarial_step(*args, **kwargs):
        bound = inspect.signature(adversarial).bind(*args, **kwargs)
        bound.apply_defaults()
        seen["parts"] = dict(bound.arguments)
        return adversarial(*args, **kwargs)

    with (
        mock.patch.object(loop.Trainer, "fit", fit),
        mock.patch.object(loop, "adversarial_step", adversarial_step),
    ):
        model.train(progress=False)
    if "step" not in seen:
        raise RuntimeError(f"{type(model).__name__}.train() ran no Trainer.fit")
    return Engine(seen["trainer"], seen["step"], seen.get("parts"))


def peak_bf16(device) -> tuple[float | None, str | None]:
    """(the device's dense bf16 peak in FLOP/s, None) or (None, why there is none)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, "MFU is reported on CUDA only"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16:
        if key.lower() in name.lower():
            return peak, None
    return None, f"no dense bf16 peak known for {name!r} (benchmarks/_bench.py PEAK_BF16)"


class _NoModules:
    """Stands in for `FlopCounterMode`'s module tracker, whose backward hooks raise inside
    `torch.autograd.grad` (every gradient penalty): the totals need no per-module split."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def flop_counter():
    """A `torch.utils.flop_counter.FlopCounterMode` that counts totals only (`_NoModules`),
    so steps with a gradient penalty can be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModules()
    return counter


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matrix products and convolutions, forward and backward, as
    `torch.utils.flop_counter.FlopCounterMode` counts them; `flop_counter`)."""
    counter = flop_counter()
    with counter:
        fn()
    return int(counter.get_total_flops())


def measure(benchmark, fn, *, device, dtype: str, batch: int, shape, size: str,
            group: str | None = None, variant: str | None = None, samples: int | None = None,
            flops: bool = True, rounds: tuple[int, int] = (2, 10), warmup: tuple[int, int] = (1, 3),
            **extra):  # fmt: skip
    """Time `fn` (a call does one unit of work: a step, a sampling pass) with pytest-benchmark
    and record the case in `benchmark.extra_info`; returns the last call's result.

    `samples`: what one call produces or trains on (default `batch`); `rounds` and `warmup`:
    (smoke, full) numbers of timed and untimed calls; `flops`: count FLOPs for MFU (CUDA);
    `extra`: more extra_info entries."""
    full = size == "full"
    device = torch.device(device)

    def timed():
        out = fn()
        sync(device)
        return out

    info = benchmark.extra_info
    info.update(device=_device_name(device), dtype=dtype, batch=int(batch),
                shape=list(shape), size=size, **extra)  # fmt: skip
    if variant is not None:
        info["variant"] = variant
    if group is not None:
        benchmark.group = group
    counted = None
    if flops and device.type == "cuda":
        timed()  # a first call outside the counter: lazy set-up (cuDNN plans, caches)
        counted = count_flops(timed)
    result = benchmark.pedantic(
        timed, rounds=rounds[full], iterations=1, warmup_rounds=warmup[full]
    )
    mean = benchmark.stats.stats.mean
    info["samples_per_s"] = (samples or batch) / mean
    if device.type == "cuda":
        peak, why = peak_bf16(device)
        info["flops"] = counted
        info["achieved_flops_per_s"] = None if counted is None else counted / mean
        info["mfu"] = None if counted is None or peak is None else counted / mean / peak
        if why:
            info["mfu_note"] = why
    if group is not None and variant == "eager-fp32":
        _reference_s[group] = mean
    elif group is not None and variant == "library" and group in _reference_s:
        info["speedup_vs_eager_fp32"] = _reference_s[group] / mean
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"
