"""Throughput of the segmentation net (a MONAI U-Net, the segment defaults; pytest-benchmark):
the library's training step (forward, DiceCE loss, backward, Adam) and the forward pass alone
(inference, as it judges synthetic images), 2D 128^2 at batch 16 (smoke size: 32^2, batch 4).
Harness and recorded numbers: `_bench.py`.
"""

from __future__ import annotations

import pytest
import torch
from _bench import DEVICES, VARIANTS, config, dtype_of, engine_of, measure, use_device

from radiogenomics.models import Segmenter
from radiogenomics.train.loop import autocast

SHAPES = {"full": (128, 16, 32), "smoke": (32, 4, 16)}  # image size, batch, patients


def _model(phantom_cohort, size, variant, device):
    side, batch, n = SHAPES[size]
    cfg = config([f"data.image_size=[{side},{side}]", f"segment.batch_size={batch}",
                  "train.val_fraction=0"], variant=variant, device=device)  # fmt: skip
    return Segmenter(phantom_cohort(n, 2, side), cfg, progress=False), cfg, [side, side]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_segmenter_step(benchmark, phantom_cohort, size, device, variant):
    use_device(device)
    model, cfg, shape = _model(phantom_cohort, size, variant, device)
    measure(benchmark, engine_of(model), device=device, dtype=dtype_of(cfg),
            batch=cfg.segment.batch_size, shape=shape, size=size,
            group=f"segment-step-{device}", variant=variant)  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_segmenter_forward(benchmark, phantom_cohort, size, device, variant):
    use_device(device)
    model, cfg, shape = _model(phantom_cohort, size, variant, device)
    net, B = model.net.eval(), cfg.segment.batch_size
    x = torch.randn(B, model.channels, *shape, device=device)
    if device == "cuda" and cfg.train.channels_last:  # as the Segmenter feeds its net
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward():
        with autocast(torch.device(device), cfg.train.amp):
            return net(x)

    measure(benchmark, forward, device=device, dtype=dtype_of(cfg), batch=B, shape=shape,
            size=size, group=f"segment-forward-{device}", variant=variant)  # fmt: skip
