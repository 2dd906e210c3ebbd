"""Throughput of what a trained run is used for (pytest-benchmark): `radiogenomics sample` end
to end (load the run, draw fully synthetic patients, write the cohort folder: patients/s
written) and the learned map (`tl.learned_map`, finite differences: (gene, feature) pairs/s),
for the demo's joint model (configs/joint_phantom_2d.yaml; untrained weights cost what
trained ones do). Harness and recorded numbers: `_bench.py`.
"""

from __future__ import annotations

import pytest
from _bench import DEVICES, config, dtype_of, engine_of, measure, use_device

from radiogenomics import tl
from radiogenomics.cli import main as cli
from radiogenomics.models import JointGAN

PRESET = "configs/joint_phantom_2d.yaml"
N_WRITTEN = {"full": 1024, "smoke": 32}  # patients a `sample` call writes
MAP = {"full": (64, None), "smoke": (4, 4)}  # base patients, genes mapped (None: all)


@pytest.fixture(scope="module")
def joint(phantom_cohort):
    """`get(device) -> (cohort, model, config)`: the demo preset's model of a 64-patient
    phantom, built once per device."""
    cache = {}

    def get(device):
        if device not in cache:
            cohort = phantom_cohort(64, 2, 32)
            cfg = config(["train.val_fraction=0"], path=PRESET, device=device)
            model = JointGAN(cohort, cfg, progress=False)
            engine_of(model)  # set up as training leaves it (the sampler on the device)
            cache[device] = (cohort, model, cfg)
        return cache[device]

    return get


@pytest.mark.parametrize("device", DEVICES)
def test_sample_to_disk(benchmark, joint, tmp_path, size, device):
    use_device(device)
    _, model, cfg = joint(device)
    model.trained = True  # untrained weights sample as fast; this keeps the warning quiet
    run = model.save(tmp_path / "run")
    n = N_WRITTEN[size]
    argv = [
        "sample",
        str(run),
        "--n",
        str(n),
        "--out",
        str(tmp_path / "synth"),
        "--quiet",
        "--overwrite",
    ]  # the run's device: its config's

    def sample():
        assert cli(argv) == 0

    measure(benchmark, sample, device=device, dtype=dtype_of(cfg), batch=n,
            shape=cfg.data.image_size, size=size, flops=False, unit="patients written")  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_learned_map(benchmark, joint, size, device):
    use_device(device)
    cohort, model, cfg = joint(device)
    n_patients, n_genes = MAP[size]
    genes = None if n_genes is None else list(model.genes[:n_genes])
    table = {}

    def learned_map():
        table["map"] = tl.learned_map(cohort, model, n_patients=n_patients, variables=genes,
                                      copy=True).uns["rg_learned_map"]  # fmt: skip

    learned_map()  # the number of pairs, outside timing
    from radiogenomics.radiomap.conventional import map_from_uns

    pairs = len(map_from_uns(table["map"]))
    measure(benchmark, learned_map, device=device, dtype=dtype_of(cfg), batch=n_patients,
            shape=cfg.data.image_size, size=size, samples=pairs, flops=False,
            unit="(gene, feature) pairs", n_genes=len(genes or model.genes))  # fmt: skip
