"""Checkpoints: weights as safetensors, optimiser and loop state as a torch pickle, in one folder
that replaces the previous one by rename, so a kill at any moment leaves a complete checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from radiogenomics._atomic import atomic_write

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
STATE = "state.pt"


def flatten_state(modules: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"generator": state_dict, ...} -> {"generator.layer.weight": tensor, ...} for safetensors."""
    flat = {}
    for name, state in modules.items():
        for key, tensor in state.items():
            # safetensors wants contiguous tensors that share no memory
            flat[f"{name}.{key}"] = tensor.detach().cpu().contiguous().clone()
    return flat


def unflatten_state(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        name, rest = key.split(".", 1)
        out.setdefault(name, {})[rest] = tensor
    return out


def save_weights(path: Path, modules: dict[str, dict[str, torch.Tensor]]) -> Path:
    flat = flatten_state(modules)
    return atomic_write(Path(path), lambda tmp: save_file(flat, str(tmp)))


def load_weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return unflatten_state(_read_safetensors(path))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a cut file
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}); is it truncated?"
        ) from None


def save_checkpoint(folder: Path, modules: dict, state: dict) -> Path:
    """Write `folder` (weights + state) as a whole: build it beside, then swap by rename."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(flatten_state(modules), str(tmp / WEIGHTS))
    torch.save(state, tmp / STATE)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path) -> tuple[dict, dict] | None:
    """(modules, state) of the newest complete checkpoint in `folder`, or None when there is none.

    A kill between the two renames of `save_checkpoint` leaves only `folder.old`; it is complete.
    """
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / WEIGHTS).is_file() and (candidate / STATE).is_file():
            modules = unflatten_state(_read_safetensors(candidate / WEIGHTS))
            try:
                state = torch.load(candidate / STATE, map_location="cpu", weights_only=True)
            except Exception as err:  # a cut or foreign file: name it, without torch's advice
                raise ValueError(
                    f"{candidate / STATE} is not a readable checkpoint state "
                    f"({type(err).__name__}); delete {candidate} to train from the start"
                ) from None
            log.info("resuming from checkpoint %s (step %s)", candidate, state.get("step"))
            return modules, state
    return None
