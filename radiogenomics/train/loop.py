"""The training engine every model stands on.

`Trainer` runs a step function for a number of steps and owns everything around it: the batch
RNG (a torch.Generator, seed + rank) and the global RNG (dropout), seeded and saved so that a
killed run resumes bit-identically; held-out scoring and model selection with early stopping;
bf16 autocast on CUDA; the CSV log, TensorBoard scalars and progress bar; resumable
checkpoints; several processes under torchrun (`train.distributed`).

A step function takes the batch RNG, does its own forward, backward and optimiser steps, and
returns its losses as tensors: they are read off the device only every `log_every` steps, so
the steps in between run without a host-device sync. Two kinds are built here:
`adversarial_step` (n_critic critic steps, one generator step, the EMA) and `supervised_step`.

Test-only: with the environment variable `RADIOGENOMICS_KILL_AFTER_CHECKPOINT=N` (a positive
integer) the training process kills itself with SIGKILL right after the checkpoint of step N is
completely written (after its folder's rename, before log.csv is rewritten): no handler, no
cleanup runs, as with an external `kill -9` at that point, so the resume tests kill at a step
they choose rather than one a polling loop happens to catch. Only the process that writes
checkpoints (rank 0) does it; under torchrun the others then go down with it. Read once per
`Trainer`; unset or empty, it costs nothing. Never set it outside tests.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from radiogenomics._atomic import atomic_write
from radiogenomics.train import distributed as D
from radiogenomics.train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Generator], dict]
ENGINE = 2  # checkpoint layout; older ones are refused with a message
KILL_AFTER_CHECKPOINT = "RADIOGENOMICS_KILL_AFTER_CHECKPOINT"  # test-only: see the docstring
# the key of `evaluate()`'s extra numbers under which a score reports its own spread (an sd),
# which train.select_margin multiplies
SCORE_SD = "score_sd"


def kill_after_checkpoint() -> int | None:
    """The step after whose checkpoint the process kills itself, from the test-only variable
    `KILL_AFTER_CHECKPOINT` names (see the module docstring); None when unset or empty."""
    value = os.environ.get(KILL_AFTER_CHECKPOINT, "").strip()
    if not value:
        return None
    try:
        step = int(value)
    except ValueError:
        step = 0
    if step < 1:
        raise ValueError(
            f"{KILL_AFTER_CHECKPOINT} is {value!r}: it takes a positive integer, the checkpoint "
            "step after which the process kills itself (test-only; unset it to train normally)"
        )
    if not hasattr(signal, "SIGKILL"):
        raise ValueError(f"{KILL_AFTER_CHECKPOINT} needs SIGKILL, which this platform lacks")
    return step


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"key 'device': {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"key 'device' is {name!r} but this machine has no CUDA GPU")
    return device


def autocast(device: torch.device, amp: bool = True):
    """bf16 autocast on CUDA when `amp` (train.amp); a no-op context elsewhere."""
    on = device.type == "cuda" and amp
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


@dataclass
class LoopSettings:
    """How long to train and when to score, record and checkpoint."""

    steps: int
    eval_every: int
    checkpoint_every: int
    log_every: int = 10
    select_after: int = 0
    select_start: bool = False
    select_margin: float = 0.0
    patience: int = 0
    amp: bool = True

    @classmethod
    def of(cls, train) -> LoopSettings:
        """From a `TrainConfig`."""
        return cls(
            steps=train.steps,
            eval_every=train.eval_every,
            checkpoint_every=train.checkpoint_every,
            log_every=train.log_every,
            select_after=train.select_after,
            select_start=train.select_start,
            select_margin=train.select_margin,
            patience=train.patience,
            amp=train.amp,
        )


class EMA(AveragedModel):
    """An exponential moving average of a module's weights, with a decay that ramps up as
    (1 + n) / (10 + n) after n updates: a plain 0.999 would keep 74% of the initial weights
    after 300 steps, too slow for short runs.

    `AveragedModel`'s own update reads its update count (`n_averaged`, a buffer on the
    module's device) into Python three times a step, each a wait for the device on CUDA; this
    one keeps a host copy of the count, read once at the first update (after a checkpoint's
    load), and updates the weights exactly as `AveragedModel.update_parameters` with the ramp
    above as its `multi_avg_fn` would."""

    def __init__(self, module: nn.Module, decay: float):
        super().__init__(module)
        self.decay = decay
        self._count: int | None = None  # host copy of n_averaged; None: read it
        self.register_load_state_dict_post_hook(self._forget_count)

    def _forget_count(self, module, incompatible_keys) -> None:
        self._count = None  # a loaded n_averaged: read it again at the next update

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)
        mine = [p.detach() for p in self.module.parameters()]
        theirs = [p.detach().to(q.device) for p, q in zip(model.parameters(), mine, strict=True)]
        if self._count == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            n = float(self._count)
            d = min(self.decay, (1.0 + n) / (10.0 + n))
            torch._foreach_lerp_(mine, theirs, 1.0 - d)
        for b_ema, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.detach().copy_(b_model.detach().to(b_ema.device))
        self.n_averaged += 1
        self._count += 1


def ema_of(module: nn.Module, decay: float) -> EMA | None:
    """An `EMA` of `module` with `decay`; None when `decay` is 0."""
    if decay <= 0:
        return None
    return EMA(module, decay)


class Trainer:
    """Runs a step function with `settings` (see the module docstring).

    `modules` and `optimizers` (by name) are what a checkpoint holds; `selected` is the module
    whose weights model selection keeps (the EMA generator, the segmentation net).
    `fingerprint` (JSON-like) says what is trained on what: a checkpoint with another is
    refused, so a run folder never resumes on other data or another model.
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        settings: LoopSettings,
        *,
        device: torch.device,
        seed: int = 0,
        run_dir: str | Path | None = None,
        progress: bool = True,
        fingerprint: dict | None = None,
        selected: nn.Module | None = None,
        desc: str = "training",
        score_name: str = "val_score",
    ):
        self.settings, self.device, self.seed, self.desc = settings, device, seed, desc
        self.score_name = score_name  # the held-out score's column in log.csv
        self.modules, self.optimizers = modules, optimizers
        self.selected = selected
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.main = D.is_main()
        self.progress = progress and self.main
        self.fingerprint = dict(fingerprint or {})
        self.rng = torch.Generator().manual_seed(seed + D.rank())
        self.step = 0
        self.resumed_from: int | None = None
        self.history: list[dict] = []
        self.best = {"score": -math.inf, "step": 0}
        self.best_state: dict | None = None
        self.start: dict | None = None  # the untrained weights' score and spread (select_start)
        self.bad_evals = 0
        self.stopped = False
        self.kill_after = kill_after_checkpoint()  # test-only, None unless set

    def autocast(self):
        return autocast(self.device, self.settings.amp)

    def _cuda_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    # ---------------------------------------------------------------------------------------
    def fit(self, step: StepFn, evaluate: Callable[[], float] | None = None) -> dict:
        """Run `step` until `settings.steps` (or an early stop); `evaluate()` scores the held-out
        patients (higher is better) every `eval_every` steps. Returns the summary."""
        cuda = self._cuda_devices()
        # the global RNG (dropout) seeded per rank and saved with the run; the user's is restored
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed + D.rank())
            self._resume()
            D.broadcast_modules(self.modules.values())
            if self.stopped or self.step >= self.settings.steps:
                log.info("training already finished at step %d", self.step)
                return self.summary()
            bar = tqdm(
                total=self.settings.steps,
                initial=self.step,
                desc=self.desc,
                disable=not self.progress,
            )
            board = self._board()
            started, first = time.perf_counter(), self.step
            try:
                self._loop(step, evaluate, bar, board)
            finally:  # a failed or killed run still flushes what it logged
                bar.close()
                if board is not None:
                    board.close()
        log.info("trained steps %d-%d in %.1f s", first, self.step, time.perf_counter() - started)
        return self.summary()

    def _loop(self, step: StepFn, evaluate, bar, board) -> None:
        s = self.settings
        if s.select_start and evaluate is not None and self.step == 0:
            # the untrained weights are a candidate: selection keeps them if nothing beats them
            score, extra = self._evaluate(evaluate)
            self.history.append({"step": 0.0, self.score_name: score, **extra})
        while self.step < s.steps:
            logs = step(self.rng)
            self.step += 1
            bar.update(1)
            row = None
            if self.step % s.log_every == 0 or self.step == s.steps:
                row = self._record(logs)
            if evaluate is not None and (self.step % s.eval_every == 0 or self.step == s.steps):
                row = row or self._record(logs)
                score, extra = self._evaluate(evaluate)
                row.update({self.score_name: score, **extra})
                bar.set_postfix(val=f"{row[self.score_name]:.3f}", best=f"{self.best['score']:.3f}")
            if row is not None:
                self.history.append(row)
                if board is not None:
                    for key, value in row.items():
                        if key != "step":
                            board.add_scalar(key, value, self.step)
            if self.stopped:
                log.info(
                    "early stop at step %d: no better held-out score for %d evaluations "
                    "(best %.4f at step %d)",
                    self.step,
                    s.patience,
                    self.best["score"],
                    self.best["step"],
                )
            if self.step % s.checkpoint_every == 0 or self.step == s.steps or self.stopped:
                self._checkpoint()
            if self.stopped:
                break

    def _record(self, logs: dict) -> dict:
        """The step's losses as floats (this reads them off the device); a non-finite one is a
        divergence."""
        row = {"step": float(self.step), **{k: float(v) for k, v in logs.items()}}
        # every rank stops together (one that raised alone would leave the others waiting)
        if D.any_rank(not all(math.isfinite(v) for v in row.values())):
            raise FloatingPointError(
                f"training diverged at step {self.step}: {row}; lower the learning rate "
                "(train.lr) or raise train.gp_weight"
            )
        return row

    def _board(self):
        """A TensorBoard writer in `run_dir/tensorboard` when tensorboard is installed (the
        `tensorboard` extra), else None. A resumed run drops the events logged after its
        checkpoint, so a curve has one value per step."""
        if self.run_dir is None or not self.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        folder = self.run_dir / "tensorboard"
        # TensorBoard reads a folder's event files in name order, and a name starts with the
        # second its writer opened: a resumed writer must not share its predecessor's second,
        # or its file may be read first and the purge of the replayed steps undone
        stamps = [int(f.name.split(".")[3]) for f in folder.glob("events.out.tfevents.*")]
        while stamps and int(time.time()) <= max(stamps):
            time.sleep(0.05)
        return SummaryWriter(str(folder), purge_step=self.step + 1)

    def _evaluate(self, evaluate) -> tuple[float, dict]:
        """(held-out score, other held-out numbers to log). `evaluate()` returns the score, or
        (score, {name: value}) for numbers that are logged but select nothing."""
        result = None
        if self.main:
            module = self.selected
            was_training = module.training if module is not None else False
            if module is not None:
                module.eval()
            with torch.no_grad():
                result = evaluate()
            if module is not None:
                module.train(was_training)
        result = D.broadcast_object(result)  # every rank takes rank 0's decision
        score, extra = result if isinstance(result, tuple) else (result, {})
        score, extra = float(score), {k: float(v) for k, v in extra.items()}
        start = self.step == 0 and self.settings.select_start
        if start:
            self._set_start(score, extra)
        if self.step < self.settings.select_after and not start:
            return score, extra
        if score > self.best["score"] and (start or self._clears_start(score)):
            self.best = {"score": score, "step": self.step}
            if self.selected is not None:
                self.best_state = copy.deepcopy(self.selected.state_dict())
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.settings.patience and self.bad_evals >= self.settings.patience:
                self.stopped = True
        return score, extra

    def _set_start(self, score: float, extra: dict) -> None:
        margin = self.settings.select_margin
        if margin > 0 and SCORE_SD not in extra:
            log.warning(
                "train.select_margin=%g: the held-out score reports no spread ('%s'), so "
                "the start is compared without a margin",
                margin,
                SCORE_SD,
            )
        self.start = {"score": score, "sd": float(extra.get(SCORE_SD, 0.0))}

    def _clears_start(self, score: float) -> bool:
        """Whether trained weights scoring `score` may replace the untrained ones: by more
        than `select_margin` times the start score's spread (always, without select_start)."""
        if self.start is None or not self.settings.select_start:
            return True
        return score > self.start["score"] + self.settings.select_margin * self.start["sd"]

    def selected_state(self) -> dict | None:
        """Weights of `selected` to keep: the best held-out ones when scored, else the last."""
        if self.best_state is not None:
            return self.best_state
        return None if self.selected is None else self.selected.state_dict()

    def summary(self) -> dict:
        return {
            "steps": self.step,
            "best_score": None if self.best_state is None else self.best["score"],
            "best_step": None if self.best_state is None else self.best["step"],
            "early_stopped": self.stopped,
            "resumed_from": self.resumed_from,
        }

    # ---------------------------------------------------------------------------------------
    # checkpoints and the CSV log

    def _rng_states(self) -> dict:
        state = {"rng": self.rng.get_state(), "global_rng": torch.get_rng_state()}
        cuda = self._cuda_devices()
        if cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(cuda[0])
        return state

    def _checkpoint(self) -> None:
        if self.run_dir is None:
            return
        rngs = D.gather_objects(self._rng_states())  # a collective: every rank calls it
        if not self.main:
            return
        modules = {name: m.state_dict() for name, m in self.modules.items()}
        if self.best_state is not None:
            modules["best"] = self.best_state
        state = {
            "engine": ENGINE,
            "step": self.step,
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "rngs": rngs,
            "history": self.history,
            "best": self.best,
            "start": self.start,
            "bad_evals": self.bad_evals,
            "stopped": self.stopped,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }
        save_checkpoint(self.run_dir / "checkpoint", modules, state)
        if self.step == self.kill_after:  # test-only: a kill -9 just after this checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
        self.write_log()

    def write_log(self) -> Path | None:
        if self.run_dir is None or not self.history or not self.main:
            return None
        frame = pd.DataFrame(self.history)
        frame["step"] = frame["step"].astype(int)
        path = self.run_dir / "log.csv"
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))

    def _resume(self) -> None:
        if self.run_dir is None:
            return
        folder = self.run_dir / "checkpoint"
        found = load_checkpoint(folder)
        if found is None:
            return
        modules, state = found
        if state.get("engine") != ENGINE:
            raise ValueError(
                f"{folder} was written by an earlier version of radiogenomics; delete it to "
                "train from the start"
            )
        theirs = json.loads(state.get("fingerprint", "{}"))
        ours = json.loads(json.dumps(self.fingerprint))  # as the checkpoint stores it
        for key, there, here in _differences(theirs, ours):
            raise ValueError(
                f"{self.run_dir} holds a checkpoint of another run: its '{key}' differs "
                f"({_short(there)} there, {_short(here)} here); use a new --out folder or "
                "delete that one"
            )
        if set(modules) - {"best"} != set(self.modules):
            raise ValueError(
                f"{folder} holds the networks {sorted(set(modules) - {'best'})}, this run has "
                f"{sorted(self.modules)} (train.ema_decay switched on or off?); use a new "
                "--out folder or delete that one"
            )
        if len(state["rngs"]) != D.world_size():
            raise ValueError(
                f"{folder} was written by {len(state['rngs'])} process(es); resume it with as "
                f"many (this run has {D.world_size()})"
            )
        for name, module in self.modules.items():
            module.load_state_dict(modules[name])
        self.best_state = modules.get("best")
        for name, opt in self.optimizers.items():
            wanted = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict(state["optimizers"][name])
            for group, settings in zip(opt.param_groups, wanted, strict=True):
                for key, value in settings.items():
                    if group.get(key) != value:
                        # the config is what config.yaml records: the resumed run follows it
                        log.warning(
                            "%s: %s %s in the checkpoint, %s in the config: resuming with %s",
                            name,
                            key,
                            group.get(key),
                            value,
                            value,
                        )
                        group[key] = value
        mine = state["rngs"][D.rank()]
        self.rng.set_state(mine["rng"])
        torch.set_rng_state(mine["global_rng"])
        cuda = self._cuda_devices()
        if cuda and "cuda_rng" in mine:
            torch.cuda.set_rng_state(mine["cuda_rng"], cuda[0])
        self.step = self.resumed_from = int(state["step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.start = state.get("start")
        self.bad_evals = int(state["bad_evals"])
        self.stopped = bool(state["stopped"])
        log.warning("resuming %s at step %d", self.run_dir, self.step)


def _differences(theirs, ours, prefix: str = ""):
    """(dotted key, theirs, ours) of every leaf where two JSON-like values differ."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            yield from _differences(
                theirs.get(key), ours.get(key), f"{prefix}.{key}" if prefix else str(key)
            )
    elif theirs != ours:
        yield prefix, theirs, ours


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------
# step functions

LossFn = Callable[[torch.Generator], tuple[torch.Tensor, dict]]


def adversarial_step(
    trainer: Trainer,
    critic_step: LossFn,
    generator_step: LossFn,
    *,
    generator: nn.Module,
    critic: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_c: torch.optim.Optimizer,
    n_critic: int,
    ema: EMA | None = None,
    extra: tuple[LossFn, LossFn, int, int] | None = None,
) -> StepFn:
    """One training step of a GAN: `n_critic` critic steps, then one generator step, then the
    EMA. `critic_step(rng)` and `generator_step(rng)` draw their own batch and return
    `(loss, logs)` with the logs as detached tensors.

    `extra = (critic_step, generator_step, repeats, n_critic)`: a cheap part of the networks
    (the joint model's gene side) takes `repeats` more updates of its own first, each with
    its own `n_critic`; the optimisers skip the parameters those losses do not reach."""

    def update(critic_fn: LossFn, generator_fn: LossFn, n: int, rng: torch.Generator) -> dict:
        for _ in range(n):
            opt_c.zero_grad(set_to_none=True)
            with trainer.autocast():
                loss_c, logs_c = critic_fn(rng)
            loss_c.backward()
            D.average_gradients(critic.parameters())
            opt_c.step()
        opt_g.zero_grad(set_to_none=True)
        critic.requires_grad_(False)  # the generator step needs no critic gradients
        try:
            with trainer.autocast():
                loss_g, logs_g = generator_fn(rng)
            loss_g.backward()
        finally:
            critic.requires_grad_(True)
        D.average_gradients(generator.parameters())
        opt_g.step()
        return {**logs_c, **logs_g}

    def step(rng: torch.Generator) -> dict:
        logs = {}
        if extra is not None:
            for _ in range(extra[2]):
                logs.update(update(extra[0], extra[1], extra[3], rng))
        logs.update(update(critic_step, generator_step, n_critic, rng))
        if ema is not None:
            ema.update_parameters(generator)
        return logs

    return step


def supervised_step(
    trainer: Trainer, loss_step: LossFn, *, net: nn.Module, opt: torch.optim.Optimizer,
    ema: EMA | None = None,
) -> StepFn:  # fmt: skip
    """One optimiser step on the loss `loss_step(rng)` returns (then the EMA of `net`, if
    given)."""

    def step(rng: torch.Generator) -> dict:
        net.train()
        opt.zero_grad(set_to_none=True)
        with trainer.autocast():
            loss, logs = loss_step(rng)
        loss.backward()
        D.average_gradients(net.parameters())
        opt.step()
        if ema is not None:
            ema.update_parameters(net)
        return logs

    return step


def adam(groups: list[tuple[nn.Module | None, float]], betas) -> torch.optim.Adam:
    """Adam over the parameters of several modules, each with its own learning rate (the gene
    and image sides of one model learn at different rates)."""
    params = [
        {"params": list(m.parameters()), "lr": lr}
        for m, lr in groups
        if m is not None and any(True for _ in m.parameters())
    ]
    return torch.optim.Adam(params, betas=tuple(betas))


def train_gan(
    generator: nn.Module,
    critic: nn.Module,
    critic_step: LossFn,
    generator_step: LossFn,
    train,
    *,
    lr: float | None = None,
    groups_g: list | None = None,
    groups_c: list | None = None,
    extra: tuple | None = None,
    state: dict[str, nn.Module] | None = None,
    score: Callable[[nn.Module], float] | None = None,
    device: torch.device,
    seed: int,
    run_dir: str | Path | None = None,
    progress: bool = True,
    fingerprint: dict | None = None,
) -> tuple[dict, dict]:
    """Train a GAN with the settings of a `TrainConfig` (`lr` overrides train.lr and
    train.lr_critic for these networks; `groups_g`/`groups_c`, lists of (submodule, lr),
    give parts of the generator and critic their own rates; `extra`: see `adversarial_step`;
    `state`: more modules whose buffers the checkpoints keep, e.g. an adaptive augmentation's
    p); `score(sampler)` rates the EMA
    generator on held-out patients. Returns (summary, the weights to sample with)."""
    opt_g = adam(groups_g or [(generator, lr or train.lr)], train.betas)
    opt_c = adam(groups_c or [(critic, lr or train.lr_critic or train.lr)], train.betas)
    trainer, ema, selected = _engine(
        generator, {"critic": critic, **(state or {})}, {"generator": opt_g, "critic": opt_c},
        train, device=device, seed=seed, run_dir=run_dir, progress=progress,
        fingerprint=fingerprint,
    )  # fmt: skip
    step = adversarial_step(
        trainer, critic_step, generator_step, generator=generator, critic=critic,
        opt_g=opt_g, opt_c=opt_c, n_critic=train.n_critic, ema=ema, extra=extra,
    )  # fmt: skip
    evaluate = None if score is None else (lambda: score(selected))
    summary = trainer.fit(decayed(step, trainer, [opt_g, opt_c], train), evaluate)
    return summary, trainer.selected_state()


def _engine(generator, others: dict, optimisers: dict, train, **run):
    """(the Trainer of `generator`, its EMA (or None) and `others` (more modules its
    checkpoints keep), the module that samples: the EMA's copy, else the generator)."""
    ema = ema_of(generator, train.ema_decay)
    selected = generator if ema is None else ema.module
    # the checkpoint's module order: generator, critic, EMA, then state
    modules = {"generator": generator}
    if "critic" in others:
        modules["critic"] = others["critic"]
    if ema is not None:
        modules["ema"] = ema
    modules.update({k: v for k, v in others.items() if k != "critic"})
    trainer = Trainer(modules, optimisers, LoopSettings.of(train), selected=selected, **run)
    return trainer, ema, selected


def train_generator(
    generator: nn.Module,
    generator_step: LossFn,
    train,
    *,
    lr: float | None = None,
    score: Callable[[nn.Module], float] | None = None,
    device: torch.device,
    seed: int,
    run_dir: str | Path | None = None,
    progress: bool = True,
    fingerprint: dict | None = None,
) -> tuple[dict, dict]:
    """`train_gan` for a generator without a critic (the flow backend with given masks): one
    optimiser step on `generator_step(rng)` per step, then the EMA; the same settings,
    learning-rate decay, selection, checkpoints and resume. Returns (summary, the weights to
    sample with)."""
    opt = adam([(generator, lr or train.lr)], train.betas)
    trainer, ema, selected = _engine(
        generator, {}, {"generator": opt}, train, device=device, seed=seed, run_dir=run_dir,
        progress=progress, fingerprint=fingerprint,
    )  # fmt: skip
    step = supervised_step(trainer, generator_step, net=generator, opt=opt, ema=ema)
    evaluate = None if score is None else (lambda: score(selected))
    summary = trainer.fit(decayed(step, trainer, [opt], train), evaluate)
    return summary, trainer.selected_state()


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """The learning rates' factor at `step` (0-based) of `steps`: 1 until `decay_start` x
    steps, then falling linearly to 1 / (steps - start) at the last step."""
    start = int(decay_start * steps)
    if step < start:
        return 1.0
    return (steps - step) / (steps - start)


def decayed(step: StepFn, trainer: Trainer, optimisers, train) -> StepFn:
    """`step` run with the optimisers' learning rates scaled by `lr_factor` at the trainer's
    step, and set back after it: checkpoints hold the configured rates, so a resumed run
    follows the same schedule and its check of changed settings sees none."""
    if train.lr_decay_start >= 1:
        return step
    base = [[g["lr"] for g in opt.param_groups] for opt in optimisers]

    def scale(f: float) -> None:
        for opt, lrs in zip(optimisers, base, strict=True):
            for group, lr in zip(opt.param_groups, lrs, strict=True):
                group["lr"] = lr * f

    def run(rng: torch.Generator) -> dict:
        scale(lr_factor(trainer.step, train.steps, train.lr_decay_start))
        try:
            return step(rng)
        finally:
            scale(1.0)

    return run
