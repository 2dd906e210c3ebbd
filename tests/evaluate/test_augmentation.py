"""The lesion-classifier augmentation experiment on crops whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.data.cohort import make_cohort
from radiogenomics.evaluate.augmentation import (
    BASELINE,
    SETTINGS,
    augmentation_experiment,
    lesion_classifier,
    split_negatives,
    summarise,
    train_classifier,
)


def crops(n: int, lesion: bool, seed: int, size: int = 16, bright: float = 1.0) -> torch.Tensor:
    """Textured tissue in [-1, 1], with a disk `bright` above it at a random place when
    `lesion`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-0.2, 0.25, (n, 1, size, size))
    if lesion:
        yy, xx = np.mgrid[:size, :size]
        for i in range(n):
            cy, cx = rng.uniform(5, size - 5, 2)
            x[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] += bright
    return torch.as_tensor(np.clip(x, -1, 1), dtype=torch.float32)


def test_classifier_shapes_2d_and_3d():
    for dims, size in ((2, (16, 16)), (3, (16, 16, 16))):
        net = lesion_classifier(dims, size)
        assert net(torch.zeros(2, 1, *size)).shape == (2, 1)
    with pytest.raises(ValueError, match="entries"):
        lesion_classifier(3, (16, 16))


def test_classifier_learns_an_easy_task():
    x = torch.cat([crops(40, True, 0), crops(40, False, 1)])
    y = np.r_[np.ones(40), np.zeros(40)]
    model = train_classifier(x, y, steps=80, batch_size=16, seed=0)
    test = torch.cat([crops(20, True, 2), crops(20, False, 3)])
    with torch.no_grad():
        pred = (model(test).squeeze(1) > 0).numpy()
    accuracy = (pred == np.r_[np.ones(20), np.zeros(20)]).mean()
    assert accuracy >= 0.9
    with pytest.raises(ValueError, match="both lesions"):
        train_classifier(x[:40], y[:40], steps=1)
    with pytest.raises(ValueError, match="80 images but 40 labels"):
        train_classifier(x, y[:40], steps=1)


def test_experiment_separates_useful_from_useless_synthetic_lesions():
    args = dict(repeats=2, steps=60, batch_size=16, progress=False)
    real = (crops(8, True, 0), crops(30, False, 1), crops(20, True, 2), crops(20, False, 3))
    good = augmentation_experiment(*real, crops(30, True, 4), **args)
    # "synthetic lesions" that are dark holes teach the classifier the wrong lesions
    bad = augmentation_experiment(*real, crops(30, True, 5, bright=-1.0), **args)
    assert list(good.setting) == [*SETTINGS, *SETTINGS, BASELINE]
    assert set(good.n_lesions) == {8, 38, 30} and set(good.n_normal) == {30}
    # the disks are bright: intensity statistics alone find them, and the row says so
    assert good.loc[good.setting == BASELINE, "auc"].item() >= 0.8
    assert good.loc[good.setting == "synthetic", "auc"].mean() >= 0.9
    assert bad.loc[bad.setting == "synthetic", "auc"].mean() <= 0.5
    with pytest.raises(ValueError, match="one shape"):
        augmentation_experiment(*real, crops(4, True, 6, size=12), **args)
    with pytest.raises(ValueError, match=r"no crops in \['synthetic'\]"):
        augmentation_experiment(*real, crops(0, True, 6), **args)
    with pytest.raises(ValueError, match="repeats"):
        augmentation_experiment(*real, crops(4, True, 6), **{**args, "repeats": 0})


def _cohort(ids, women):
    return make_cohort(None, pd.DataFrame({"subject": women}, index=ids))


def test_negatives_follow_their_woman_and_never_leak():
    train = _cohort(["l1", "l2"], ["w1", "w2"])
    test = _cohort(["l3"], ["w3"])
    women = ["w1", "w3", "w3", "w4", "w4", "w5", "w6", "w7", "w8", "w9"]
    normal = _cohort([f"n{i}" for i in range(len(women))], women)
    tr, te = split_negatives(normal, train, test, seed=0)
    assert sorted([*tr.obs_names, *te.obs_names]) == sorted(normal.obs_names)
    assert "n0" in tr.obs_names and {"n1", "n2"} <= set(te.obs_names)
    assert not set(tr.obs["subject"]) & set(te.obs["subject"])  # w4's two windows stay together
    with pytest.raises(ValueError, match=r"\['w1'\] have lesions in both"):
        split_negatives(normal, train, _cohort(["l4"], ["w1"]))
    lonely = _cohort(["n0", "n1"], ["w1", "w1"])  # all tissue goes with w1's training lesions
    with pytest.raises(ValueError, match="no normal-tissue crop is left for the test side"):
        split_negatives(lonely, train, test)


def test_summary_gain_is_paired_by_seed():
    table = pd.DataFrame(
        {
            "seed": [0, 0, 1, 1],
            "setting": ["real", "real+synthetic"] * 2,
            "f1": [0.5, 0.7, 0.6, 0.7],
            "precision": 0.5,
            "recall": 0.5,
            "auc": 0.5,
        }
    )
    summary = summarise(table)
    assert summary.loc["real+synthetic", "f1_gain_mean"] == pytest.approx(0.15)
    assert summary.loc["real+synthetic", "f1_gain_std"] == pytest.approx(np.std([0.2, 0.1], ddof=1))
    assert summary.loc["real", "f1_gain_mean"] == 0.0
    assert summary.loc["real", "f1_mean"] == pytest.approx(0.55)
