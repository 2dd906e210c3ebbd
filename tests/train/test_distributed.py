"""Two processes under torchrun (gloo on the CPU): the ranks draw different batches, average their
gradients, and end with identical parameters; rank 0 alone writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from radiogenomics.data.phantom import make_phantom, write_phantom

# Each rank trains through the library's API and saves what it ends with, so the test can
# compare the ranks (the library itself writes from rank 0 only).
SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from radiogenomics.config import load_config
    from radiogenomics.data.h5ad import read_cohort
    from radiogenomics.models import MODELS
    from radiogenomics.train import distributed as D

    torch.set_num_threads(1)
    D.init_from_env()
    data, run, out, *overrides = sys.argv[1:]
    cfg = load_config(None, overrides)
    model = MODELS[cfg.model](read_cohort(data), cfg)
    model.train(run_dir=run, progress=False)
    state = {f"{name}.{k}": v.detach().clone().contiguous()
             for name, m in model._modules().items() for k, v in m.state_dict().items()}
    save_file(state, f"{out}/rank{D.rank()}.safetensors")
    """
)

GENE = ["model=gene_gan", "gene.n_hidden=16", "gene.n_noise=4", "train.steps=12",
        "train.batch_size=8", "train.n_critic=2", "train.eval_every=4", "train.select_after=0",
        "train.checkpoint_every=4"]  # fmt: skip
IMAGE = ["model=image_gan", "image.channels=[8,4]", "image.critic_channels=[4,8]",
         "image.n_noise=4", "image.n_code=4", "image.n_hidden=8", "image.gene_aux_components=4",
         "train.steps=4", "train.batch_size=4", "train.n_critic=1", "train.eval_every=2",
         "train.select_after=0", "train.checkpoint_every=2", "train.val_fraction=0.3"]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_cohort")
    # a third without expression: batches with no expression leave the gene read-back head
    # without a gradient on one rank, and the ranks must still reduce alike
    phantom = make_phantom(
        40, 2, size=16, n_genes=128, seed=2, frac_image_only=0.35, progress=False
    )
    return write_phantom(phantom, out, progress=False)


def _torchrun(tmp_path: Path, cohort: Path, overrides: list[str]) -> Path:
    script = tmp_path / "train_ranks.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(cohort), str(run), str(tmp_path), *overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a generous guard against a hang (a deadlocked collective), not a speed limit
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def _same_on_both_ranks(tmp_path: Path) -> dict:
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    return a


@pytest.fixture(scope="module", params=["gene_gan", "image_gan"])
def ranks(request, cohort, tmp_path_factory):
    """(folder with rank0/rank1 weights, run folder, overrides) of one torchrun."""
    overrides = {"gene_gan": GENE, "image_gan": IMAGE}[request.param]
    out = tmp_path_factory.mktemp(f"ddp_{request.param}")
    return out, _torchrun(out, cohort, overrides), overrides


def test_two_ranks_end_identical_with_one_checkpoint(ranks):
    out, run, overrides = ranks
    state = _same_on_both_ranks(out)
    # one run folder, written by rank 0: one checkpoint, with both ranks' RNG states
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint"
    ]
    saved = load_file(str(run / "model.safetensors"))
    for key, value in saved.items():
        assert torch.equal(value, state[key]), key
    rngs = torch.load(run / "checkpoint" / "state.pt", weights_only=True)["rngs"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["rng"], rngs[1]["rng"])  # own streams
    meta = json.loads((run / "model.json").read_text())
    steps = int(dict(o.split("=") for o in overrides)["train.steps"])
    assert meta["trained"] and meta["summary"]["steps"] == steps


def test_a_checkpoint_of_two_ranks_refuses_one(ranks, cohort):
    from radiogenomics.config import load_config
    from radiogenomics.data.h5ad import read_cohort
    from radiogenomics.models import MODELS

    _, run, overrides = ranks
    cfg = load_config(None, [*overrides, "train.steps=20"])
    model = MODELS[cfg.model](read_cohort(cohort), cfg)
    with pytest.raises(ValueError, match=r"written by 2 process\(es\); resume it with as many"):
        model.train(run_dir=run, progress=False)
