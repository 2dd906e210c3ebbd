"""Throughput of the image GAN (pytest-benchmark): one update (a critic update and a
generator update, the library's step with train.n_critic=1) at the xu_nodule preset's widths,
2D 128^2 and 256^2 and 3D 64^3 (smoke size: 32^2, 64^2, 16^3), and sampling at batch 64.
Harness and recorded numbers: `_bench.py`.
"""

from __future__ import annotations

import pytest
from _bench import DEVICES, VARIANTS, config, dtype_of, engine_of, measure, use_device

from radiogenomics.models import ImageGAN

PRESET = "configs/xu_nodule.yaml"  # widths, conditioning (mask, genes, background), objective
# case -> (spatial_dims, full: (image size, batch, patients), smoke: the same)
CASES = {
    "2d-128": (2, (128, 16, 64), (32, 4, 16)),
    "2d-256": (2, (256, 16, 32), (64, 4, 16)),
    "3d-64": (3, (64, 4, 16), (16, 2, 16)),
}
# in 3D at smoke size the preset's 128 channels would dominate the suite's minute
SMOKE_3D = ["image.channels=[32,16,8,4]", "image.critic_channels=[8,16,32]"]


def _model(phantom_cohort, case, size, variant, device, batch=None):
    dims, full, smoke = CASES[case]
    side, b, _ = full if size == "full" else smoke
    overrides = [
        f"data.spatial_dims={dims}", f"data.image_size={[side] * dims}",
        f"train.batch_size={batch or b}", "train.n_critic=1", "train.val_fraction=0",
    ]  # fmt: skip
    if dims == 3 and size == "smoke":
        overrides += SMOKE_3D
    cfg = config(overrides, path=PRESET, variant=variant, device=device)
    cohort = phantom_cohort(*_cohort_key(case, size))
    return ImageGAN(cohort, cfg, progress=False), cfg, [side] * dims


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_image_gan_update(benchmark, phantom_cohort, size, device, case, variant):
    use_device(device)
    model, cfg, shape = _model(phantom_cohort, case, size, variant, device)
    measure(benchmark, engine_of(model), device=device, dtype=dtype_of(cfg),
            batch=cfg.train.batch_size, shape=shape, size=size,
            group=f"image-update-{case}-{device}", variant=variant, n_critic=1)  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["2d-128"])
def test_image_gan_sampling(benchmark, phantom_cohort, size, device, case):
    """Images for 64 given patients (their masks, genes and backgrounds: the preset fuses the
    patient's own background, so it samples with `generate_for`), in one batch."""
    use_device(device)
    model, cfg, shape = _model(phantom_cohort, case, size, "library", device)
    model_cohort = phantom_cohort(*_cohort_key(case, size))
    n = min(64 if size == "full" else 16, model_cohort.n_obs)
    adata = model_cohort[:n].copy()
    engine_of(model)  # the sampler on the device, as after training
    measure(benchmark, lambda: model.generate_for(adata, seed=0), device=device,
            dtype=dtype_of(cfg), batch=n, shape=shape, size=size)  # fmt: skip


def _cohort_key(case, size):
    dims, full, smoke = CASES[case]
    side, _, n = full if size == "full" else smoke
    return n, dims, side
