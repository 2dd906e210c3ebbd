"""Several processes under `torchrun --nproc_per_node N -m radiogenomics train ...`.

Each rank draws its own batches (seed + rank) and the ranks average their gradients before
every optimiser step, so the weights stay identical; rank 0 alone writes checkpoints, logs and
progress bars, and it alone scores held-out patients, whose score it broadcasts so every rank
takes the same selection and early-stopping decisions.

Gradients are averaged by one all-reduce per step over a flat buffer (what
DistributedDataParallel does): DDP's reducer does not support the gradient penalty's double
backward through `torch.autograd.grad`, nor a critic called several times per step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_from_env() -> bool:
    """Join the process group that `torchrun` describes in the environment (NCCL on CUDA,
    gloo on CPU); False when not launched by torchrun. Each CUDA rank takes its local GPU."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    log.info("rank %d of %d (%s)", rank(), world_size(), dist.get_backend())
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, this rank's GPU."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average `.grad` over the ranks in place (a no-op in one process)."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_modules(modules: Iterable[torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers to every rank (after a resume, say)."""
    if not active():
        return
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def broadcast_object(value):
    """Rank 0's `value` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order (a list of one in one process)."""
    if not active():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
