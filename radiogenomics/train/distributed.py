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

from radiogenomics._device import to_device

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


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average `.grad` over the ranks in place (a no-op in one process).

    One flat all-reduce of every trainable parameter, whether this rank's step reached it or
    not (a batch without expression leaves the gene read-back head without a gradient): the
    ranks must reduce buffers of one size. A flag per parameter says which ranks had a
    gradient; a parameter none had keeps `grad=None`, as in one process (Adam skips it).
    """
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flags = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype)
    flags = to_device(flags, grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [flags])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    # a gradient here means one somewhere: the flags are read off the device (a sync) only
    # when this rank lacks one
    had = [True] * len(params)
    if not all(p.grad is not None for p in params):
        had = (flat[-len(params) :].cpu() > 0).tolist()
    for p, g, any_rank in zip(params, grads, had, strict=True):
        chunk = flat[offset : offset + g.numel()].view_as(g)
        offset += g.numel()
        if any_rank:
            p.grad = chunk.clone() if p.grad is None else p.grad.copy_(chunk)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any (one process: `flag`)."""
    if not active():
        return flag
    t = torch.tensor([float(flag)])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return bool(t.item() > 0)


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


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after `train` under torchrun). With `wait` every rank waits for
    the others first, so none exits while rank 0 still writes the run; after a failure no rank
    waits (torchrun stops the others)."""
    if active():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
