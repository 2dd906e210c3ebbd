"""Host-to-device copies that do not wait for the device. A leaf module: nn, train and models
all use it.

The batch RNG lives on the CPU (one seeded torch.Generator per rank, saved with the run, so
runs resume bit-identically on any device); its draws go to the GPU every step. A copy from
pageable memory blocks until the stream is idle, which would stall every step on the GPU's
work; from pinned memory it is queued like a kernel.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """`t` on `device` (None: where it is); a CPU tensor goes to CUDA through pinned memory,
    asynchronously."""
    if device is None:
        return t
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
