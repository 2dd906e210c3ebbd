"""SIGKILL mid-run, then the same command again: the run goes on from its checkpoint and ends on
weights bit-identical to a run never killed, for every model (the image GAN with its gene
read-back head, whose dropout draws from the global RNG; the flow backend, whose timesteps do).

The kill is the engine's own, test-only (`RADIOGENOMICS_KILL_AFTER_CHECKPOINT`, see
`radiogenomics.train.loop`): the process SIGKILLs itself right after the checkpoint of the step
chosen here is in place, so the kill point does not depend on timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.train.checkpoint import load_checkpoint
from radiogenomics.train.loop import (
    KILL_AFTER_CHECKPOINT,
    LoopSettings,
    Trainer,
    kill_after_checkpoint,
    supervised_step,
)

ROOT = Path(__file__).resolve().parents[2]

GENE = ["model=gene_gan", "gene.n_hidden=16", "gene.n_noise=4", "train.steps=400",
        "train.lr_decay_start=0.05",  # killed and resumed inside the decay
        "train.batch_size=8", "train.n_critic=2", "train.eval_every=20", "train.select_after=0",
        "train.checkpoint_every=10"]  # fmt: skip
IMAGE = ["model=image_gan", "image.channels=[8,4]", "image.critic_channels=[4,8]",
         "image.n_noise=4", "image.n_code=4", "image.n_hidden=8", "image.gene_aux_components=4",
         "train.steps=100", "train.batch_size=4", "train.n_critic=1", "train.eval_every=4",
         "train.select_after=0", "train.checkpoint_every=4", "train.val_fraction=0.3",
         "data.image_size=[64,64]"]  # fmt: skip
SEGMENT = ["model=segmentation", "segment.channels=[4,8]", "segment.strides=[2]",
           "segment.num_res_units=1", "segment.steps=200", "segment.batch_size=4",
           "segment.eval_every=5", "data.image_size=[64,64]"]  # fmt: skip
# the flow backend (nn.flow): its timesteps come from the global RNG, its gene dropout from
# the batch RNG; the GAN-only terms of the preset off
FLOW = ["image.backend=flow", "image.gene_aux_weight=0", "image.mask_consistency_weight=0",
        "image.appearance_association_weight=0", "image.flow_channels=[8,8]",
        "image.flow_steps=2", "image.channels=[8,4]", "image.critic_channels=[4,8]",
        "image.n_noise=4", "image.n_code=4", "image.n_hidden=8", "image.gene_aux_components=4",
        "train.steps=12", "train.batch_size=4", "train.n_critic=1", "train.eval_every=4",
        "train.select_after=0", "train.checkpoint_every=4", "train.val_fraction=0.3",
        "data.image_size=[16,16]"]  # fmt: skip
IMAGE_FLOW = ["model=image_gan", *FLOW]
JOINT_FLOW = ["model=joint_gan", *FLOW, "joint.use_latent=false", "joint.gene_steps=1",
              "gene.n_hidden=16", "gene.n_noise=4"]  # fmt: skip
MODELS = {"gene_gan": GENE, "image_gan": IMAGE, "segmentation": SEGMENT,
          "image_flow": IMAGE_FLOW, "joint_flow": JOINT_FLOW}  # fmt: skip
# kill after this checkpoint step: at the second held-out evaluation, so the resumed run must
# also restore the best weights so far and the count of evaluations without improvement
KILL_AFTER = {"gene_gan": 40, "image_gan": 8, "segmentation": 10, "image_flow": 8,
              "joint_flow": 8}  # fmt: skip
SCORE = {"gene_gan": "val_score", "image_gan": "val_score", "segmentation": "val_dice",
         "image_flow": "val_score", "joint_flow": "val_score"}  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_cohort")
    phantom = make_phantom(32, 2, size=16, n_genes=128, seed=4, progress=False)
    return write_phantom(phantom, out, progress=False)


def _command(cohort: Path, run: Path, overrides: list[str]) -> list[str]:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return [sys.executable, "-m", "radiogenomics", "-q", "train", "configs/joint_phantom_2d.yaml",
            "--data", str(cohort), "--out", str(run), *sets]  # fmt: skip


def _run(command: list[str], kill_after: int | None = None) -> subprocess.CompletedProcess:
    """`command` in a subprocess that imports this tree's package; with `kill_after`, the
    engine kills it right after the checkpoint of that step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop(KILL_AFTER_CHECKPOINT, None)
    if kill_after is not None:
        env[KILL_AFTER_CHECKPOINT] = str(kill_after)
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )  # fmt: skip


def _checkpoint(run: Path) -> tuple[dict, dict]:
    found = load_checkpoint(run / "checkpoint")
    assert found is not None, f"no checkpoint in {run}"
    return found


def _identical(a: dict, b: dict, what: str) -> None:
    """Zero tolerance: the same keys, every tensor equal bit for bit."""
    assert a.keys() == b.keys() and a, what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key}"


@pytest.mark.parametrize("kind", list(MODELS))
def test_sigkill_and_resume_give_bit_identical_weights(cohort, tmp_path, kind):
    overrides, at = MODELS[kind], KILL_AFTER[kind]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = _run(_command(cohort, straight, overrides))
    assert done.returncode == 0, done.stderr[-3000:]

    died = _run(_command(cohort, killed, overrides), kill_after=at)
    assert died.returncode == -signal.SIGKILL, (died.returncode, died.stderr[-3000:])
    assert not (killed / "model.json").exists()  # it never finished
    assert not (killed / "checkpoint.tmp").exists()  # killed after the rename, not during it
    modules, state = _checkpoint(killed)
    assert int(state["step"]) == at  # the newest complete checkpoint is exactly the kill step
    # what the resume must restore: two held-out evaluations done, best weights kept so far
    assert sum(SCORE[kind] in row for row in state["history"]) == 2
    assert "best" in modules and int(state["best"]["step"]) > 0

    again = _run(_command(cohort, killed, overrides))
    assert again.returncode == 0, again.stderr[-3000:]
    # it went on from the checkpoint it had, not from step 0
    assert f"resumed from step {at}:" in again.stdout
    _identical(
        load_file(str(straight / "model.safetensors")),
        load_file(str(killed / "model.safetensors")),
        "model.safetensors",
    )
    # the last checkpoints agree too: every network (critic, EMA, best weights), the best
    # score and step, the evaluations without improvement, the whole logged history
    (mods_a, state_a), (mods_b, state_b) = _checkpoint(straight), _checkpoint(killed)
    assert mods_a.keys() == mods_b.keys()
    for name in mods_a:
        _identical(mods_a[name], mods_b[name], f"checkpoint {name}")
    for key in ("step", "best", "bad_evals", "stopped", "history"):
        assert state_a[key] == state_b[key], key


# ------------------------------------------------------------------------------------------
# the hook itself, in process: os.kill stands in so the test process lives


def _tiny_trainer(run_dir: Path, steps: int = 12) -> tuple[Trainer, object]:
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    def loss_step(rng):
        batch = x[torch.randint(16, (4,), generator=rng)]
        loss = net(batch).pow(2).mean()
        return loss, {"loss": loss.detach()}

    trainer = Trainer(
        {"net": net},
        {"net": opt},
        LoopSettings(steps=steps, eval_every=steps, checkpoint_every=4, log_every=1),
        device=torch.device("cpu"),
        run_dir=run_dir,
        progress=False,
        selected=net,
    )
    return trainer, supervised_step(trainer, loss_step, net=net, opt=opt)


def _record_kills(monkeypatch, run_dir: Path) -> list:
    calls = []

    def kill(pid, sig):  # what was on disk when the process would have died
        found = load_checkpoint(run_dir / "checkpoint")
        calls.append((pid, sig, None if found is None else int(found[1]["step"])))

    monkeypatch.setattr(os, "kill", kill)
    return calls


@pytest.mark.parametrize("value", [None, "", "  "])
def test_kill_hook_does_nothing_when_unset(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv(KILL_AFTER_CHECKPOINT, raising=False)
    else:
        monkeypatch.setenv(KILL_AFTER_CHECKPOINT, value)
    calls = _record_kills(monkeypatch, tmp_path)
    trainer, step = _tiny_trainer(tmp_path)
    assert trainer.kill_after is None
    assert trainer.fit(step)["steps"] == 12
    assert calls == []
    assert int(_checkpoint(tmp_path)[1]["step"]) == 12


def test_kill_hook_fires_once_right_after_the_checkpoint_of_its_step(monkeypatch, tmp_path):
    monkeypatch.setenv(KILL_AFTER_CHECKPOINT, "8")
    calls = _record_kills(monkeypatch, tmp_path)
    trainer, step = _tiny_trainer(tmp_path)
    monkeypatch.delenv(KILL_AFTER_CHECKPOINT)  # read once, when the trainer is built
    assert trainer.kill_after == 8
    trainer.fit(step)
    assert calls == [(os.getpid(), signal.SIGKILL, 8)]


@pytest.mark.parametrize("value", ["abc", "1.5", "8 steps", "0", "-3"])
def test_kill_hook_refuses_a_value_that_is_no_step(monkeypatch, tmp_path, value):
    monkeypatch.setenv(KILL_AFTER_CHECKPOINT, value)
    with pytest.raises(ValueError, match=KILL_AFTER_CHECKPOINT) as err:
        kill_after_checkpoint()
    assert repr(value) in str(err.value) and "positive integer" in str(err.value)
    with pytest.raises(ValueError, match=KILL_AFTER_CHECKPOINT):
        _tiny_trainer(tmp_path)  # before any training
