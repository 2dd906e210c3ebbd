"""The adversarial training loop shared by the models.

A model supplies three callables: `critic_step(rng)` and `generator_step(rng)` draw their own
batch with the given torch.Generator and return `(loss, logs)`; `evaluate(sampler)` scores the
sampling generator on held-out patients (higher is better). The loop does everything else:
n_critic critic steps per generator step, the EMA of the generator, model selection and early
stopping on the held-out score, bf16 autocast on CUDA, a CSV log (and TensorBoard scalars when
tensorboard is installed) and resumable checkpoints.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from radiogenomics.config import TrainConfig
from radiogenomics.train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Generator], tuple[torch.Tensor, dict]]


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


def _ema_with_warmup(decay: float):
    """EMA update for AveragedModel whose decay ramps up as (1 + n) / (10 + n): a plain 0.999
    would keep 74% of the initial weights after 300 steps, too slow for short runs."""

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


class AdversarialTrainer:
    """Trains `generator` against `critic` with the settings of a TrainConfig."""

    def __init__(
        self,
        generator: nn.Module,
        critic: nn.Module,
        cfg: TrainConfig,
        *,
        device: torch.device,
        seed: int = 0,
        run_dir: str | Path | None = None,
        progress: bool = True,
        fingerprint: dict | None = None,
    ):
        """`fingerprint` (JSON-like) says what is trained on what; a checkpoint with another
        one is refused, so a run folder never resumes on other data or another model."""
        self.cfg, self.device, self.progress = cfg, device, progress
        self.fingerprint = dict(fingerprint or {})
        self.generator = generator.to(device)
        self.critic = critic.to(device)
        betas = tuple(cfg.betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_c = torch.optim.Adam(
            self.critic.parameters(), lr=cfg.lr_critic or cfg.lr, betas=betas
        )
        self.ema = (
            AveragedModel(self.generator, multi_avg_fn=_ema_with_warmup(cfg.ema_decay))
            if cfg.ema_decay > 0
            else None
        )
        self.rng = torch.Generator().manual_seed(seed)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.step = 0
        self.history: list[dict] = []
        self.best = {"score": -math.inf, "step": 0}
        self.best_state: dict | None = None
        self.bad_evals = 0
        self.stopped = False

    @property
    def sampler(self) -> nn.Module:
        """The generator used for sampling: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.generator

    def _autocast(self):
        on = self.device.type == "cuda" and self.cfg.amp
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    # ---------------------------------------------------------------------------------------
    def fit(self, critic_step: StepFn, generator_step: StepFn, evaluate=None) -> dict:
        cfg = self.cfg
        self._resume()
        if self.stopped or self.step >= cfg.steps:
            log.info("training already finished at step %d", self.step)
            return self.summary()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", disable=not self.progress)
        board = self._board()
        started = time.perf_counter()
        try:
            self._loop(critic_step, generator_step, evaluate, bar, board)
        finally:  # a failed or killed run still flushes what it logged
            bar.close()
            if board is not None:
                board.close()
        log.info("trained %d steps in %.1f s", self.step, time.perf_counter() - started)
        return self.summary()

    def _loop(self, critic_step, generator_step, evaluate, bar, board) -> None:
        """Generator steps (each after n_critic critic steps) until cfg.steps or early stop."""
        cfg = self.cfg
        record_every = max(1, cfg.steps // 1000)
        while self.step < cfg.steps:
            for _ in range(cfg.n_critic):
                self.opt_c.zero_grad(set_to_none=True)
                with self._autocast():
                    loss_c, logs_c = critic_step(self.rng)
                loss_c.backward()
                self.opt_c.step()
            self.opt_g.zero_grad(set_to_none=True)
            self.critic.requires_grad_(False)  # the generator step needs no critic gradients
            with self._autocast():
                loss_g, logs_g = generator_step(self.rng)
            loss_g.backward()
            self.opt_g.step()
            self.critic.requires_grad_(True)
            if self.ema is not None:
                self.ema.update_parameters(self.generator)
            self.step += 1
            bar.update(1)
            row = {"step": self.step, **logs_c, **logs_g}
            if not all(math.isfinite(float(v)) for v in row.values()):
                raise FloatingPointError(
                    f"training diverged at step {self.step}: {row}; lower train.lr or raise "
                    "train.gp_weight"
                )
            if evaluate is not None and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                row["val_score"] = self._evaluate(evaluate)
                bar.set_postfix(val=f"{row['val_score']:.3f}", best=f"{self.best['score']:.3f}")
            if self.step % record_every == 0 or "val_score" in row:
                self.history.append({k: float(v) for k, v in row.items()})
                if board is not None:
                    for key, value in self.history[-1].items():
                        if key != "step":
                            board.add_scalar(key, value, self.step)
            if self.stopped:
                log.info(
                    "early stop at step %d: no better held-out score for %d evaluations "
                    "(best %.4f at step %d)",
                    self.step,
                    cfg.patience,
                    self.best["score"],
                    self.best["step"],
                )
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or self.stopped:
                self._checkpoint()
            if self.stopped:
                break

    def _board(self):
        """A TensorBoard writer in `run_dir/tensorboard` when tensorboard is installed (the
        `tensorboard` extra), else None. A resumed run drops the events logged after its
        checkpoint, so a curve has one value per step."""
        if self.run_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)

    def _evaluate(self, evaluate) -> float:
        sampler = self.sampler
        was_training = sampler.training
        sampler.eval()
        with torch.no_grad():
            score = float(evaluate(sampler))
        sampler.train(was_training)
        if self.step < self.cfg.select_after:
            return score
        if score > self.best["score"]:
            self.best = {"score": score, "step": self.step}
            self.best_state = copy.deepcopy(sampler.state_dict())
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.cfg.patience and self.bad_evals >= self.cfg.patience:
                self.stopped = True
        return score

    def sampler_state(self) -> dict:
        """Weights to sample with: the best held-out ones when scored, else the last."""
        return self.best_state if self.best_state is not None else self.sampler.state_dict()

    def summary(self) -> dict:
        return {
            "steps": self.step,
            "best_score": None if self.best_state is None else self.best["score"],
            "best_step": None if self.best_state is None else self.best["step"],
            "early_stopped": self.stopped,
        }

    # ---------------------------------------------------------------------------------------
    # checkpoints and the CSV log

    def _checkpoint(self) -> None:
        if self.run_dir is None:
            return
        modules = {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
        }
        if self.ema is not None:
            modules["ema"] = self.ema.state_dict()
        if self.best_state is not None:
            modules["best"] = self.best_state
        state = {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "rng": self.rng.get_state(),
            "history": self.history,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "stopped": self.stopped,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }
        save_checkpoint(self.run_dir / "checkpoint", modules, state)
        self.write_log()

    def write_log(self) -> Path | None:
        if self.run_dir is None or not self.history:
            return None
        from radiogenomics.data.io import atomic_write

        frame = pd.DataFrame(self.history)
        frame["step"] = frame["step"].astype(int)
        path = self.run_dir / "log.csv"
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))

    def _resume(self) -> None:
        if self.run_dir is None:
            return
        found = load_checkpoint(self.run_dir / "checkpoint")
        if found is None:
            return
        modules, state = found
        theirs = json.loads(state.get("fingerprint", "{}"))
        for key in sorted(set(theirs) | set(self.fingerprint)):
            if theirs.get(key) != self.fingerprint.get(key):
                raise ValueError(
                    f"{self.run_dir} holds a checkpoint of another run: its '{key}' differs "
                    f"({_short(theirs.get(key))} there, {_short(self.fingerprint.get(key))} "
                    "here); use a new --out folder or delete that one"
                )
        self.generator.load_state_dict(modules["generator"])
        self.critic.load_state_dict(modules["critic"])
        if self.ema is not None and "ema" in modules:
            self.ema.load_state_dict(modules["ema"])
        self.best_state = modules.get("best")
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.bad_evals = int(state["bad_evals"])
        self.stopped = bool(state["stopped"])


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def fit_model(model, critic_step: StepFn, generator_step: StepFn, evaluate, *, run_dir, progress):
    """Train `model.generator` against `model.critic` with `model.config.train`, then load the
    weights to sample with into `model.sampler`. `model` is a GeneGAN or an ImageGAN: both
    hold generator, critic, sampler, config, device and _fingerprint under these names."""
    trainer = AdversarialTrainer(
        model.generator,
        model.critic,
        model.config.train,
        device=model.device,
        seed=model.config.seed,
        run_dir=run_dir,
        progress=progress,
        fingerprint=model._fingerprint,
    )
    summary = trainer.fit(critic_step, generator_step, evaluate)
    model.sampler.load_state_dict(trainer.sampler_state())
    model.sampler.to(model.device).eval()
    model.trained = True
    return summary
