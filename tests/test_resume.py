"""SIGKILL mid-run, then the same command again: the run goes on from its checkpoint and ends on
weights bit-identical to a run never killed, for every model (the image GAN with its gene
read-back head, whose dropout draws from the global RNG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.train.checkpoint import load_checkpoint

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
MODELS = {"gene_gan": GENE, "image_gan": IMAGE, "segmentation": SEGMENT}
# kill after this checkpoint step: past the second held-out evaluation, so the resumed run must
# also restore the best weights so far and the count of evaluations without improvement
KILL_AFTER = {"gene_gan": 40, "image_gan": 8, "segmentation": 10}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_cohort")
    phantom = make_phantom(32, 2, size=16, n_genes=128, seed=4, progress=False)
    return write_phantom(phantom, out, progress=False)


def _command(cohort: Path, run: Path, overrides: list[str]) -> list[str]:
    sets = [arg for o in overrides for arg in ("--set", o)]
    return [sys.executable, "-m", "radiogenomics", "-q", "train", "configs/joint_phantom_2d.yaml",
            "--data", str(cohort), "--out", str(run), *sets]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _checkpoint_step(run: Path) -> int:
    """The step of the run's newest complete checkpoint (0 while there is none)."""
    try:
        found = load_checkpoint(run / "checkpoint")
    except (ValueError, OSError):  # caught between the writer's renames: look again
        return 0
    return 0 if found is None else int(found[1]["step"])


@pytest.mark.parametrize("kind", list(MODELS))
def test_sigkill_and_resume_give_bit_identical_weights(cohort, tmp_path, kind):
    root = Path(__file__).resolve().parents[1]
    overrides = MODELS[kind]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        _command(cohort, straight, overrides), cwd=root, env=_env(), capture_output=True,
        text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(
        _command(cohort, killed, overrides), cwd=root, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while _checkpoint_step(killed) < KILL_AFTER[kind] and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-run: no handler, no cleanup
    finally:
        proc.wait(timeout=60)
    at = _checkpoint_step(killed)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert at >= KILL_AFTER[kind]
    assert not (killed / "model.json").exists()  # it never finished

    again = subprocess.run(
        _command(cohort, killed, overrides), cwd=root, env=_env(), capture_output=True,
        text=True, timeout=1800,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    # it went on from the checkpoint it had, not from step 0
    assert f"resumed from step {at}:" in again.stdout
    a, b = (
        load_file(str(straight / "model.safetensors")),
        load_file(str(killed / "model.safetensors")),
    )
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
