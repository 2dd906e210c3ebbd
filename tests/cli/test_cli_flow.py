"""The flow backend through the command line: the demo with its flow preset (train, sample,
evaluate, report), then `sample` and the learned `map` of that run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from radiogenomics.cli import main
from radiogenomics.data.h5ad import validate_cohort_file
from radiogenomics.radiomap.features import IMAGE_FEATURES

SHORT_FLOW_DEMO = [
    "--config", "configs/joint_phantom_2d_flow.yaml",
    "--set", "phantom.n=48", "--set", "phantom.frac_image_only=0.1", "--set", "train.steps=4",
    "--set", "train.eval_every=2", "--set", "train.select_after=0", "--set", "train.batch_size=4",
    "--set", "image.channels=[8,4]", "--set", "image.critic_channels=[4,8]",
    "--set", "image.n_hidden=16", "--set", "image.n_code=4", "--set", "gene.n_hidden=16",
    "--set", "image.flow_channels=[8,8]", "--set", "image.flow_steps=2",
    "--n-samples", "12",
]  # fmt: skip


@pytest.mark.slow  # a whole demo (training, sampling, the evaluation report) and a learned map
def test_flow_demo_then_sample_and_learned_map(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), *SHORT_FLOW_DEMO]) == 0
    synth, info = validate_cohort_file(out / "synthetic" / "cohort.h5ad", progress=False)
    assert info["patients"] == 12 and synth.obs["has_expression"].all()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"gene_distance_ratio", "pair_spearman"} <= set(metrics)
    run = out / "run"
    assert "backend: flow" in (run / "config.yaml").read_text()
    capsys.readouterr()

    samples = tmp_path / "samples"
    assert main(["-q", "sample", str(run), "--n", "6", "--out", str(samples)]) == 0
    _, info = validate_cohort_file(samples / "cohort.h5ad", progress=False)
    assert info["patients"] == 6

    maps = tmp_path / "map"
    assert main(["-q", "map", str(run), "--out", str(maps), "--n-patients", "4"]) == 0
    table = pd.read_csv(maps / "map.csv")  # metagenes x the map's image features
    assert set(table["feature"]) == set(IMAGE_FEATURES) and len(table) % len(IMAGE_FEATURES) == 0
