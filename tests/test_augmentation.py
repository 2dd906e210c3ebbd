"""The lesion-classifier augmentation experiment on crops whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.evaluate.augmentation import (
    SETTINGS,
    augmentation_experiment,
    lesion_classifier,
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
    assert list(good.setting) == list(SETTINGS) * 2
    assert set(good.n_lesions) == {8, 38, 30} and set(good.n_normal) == {30}
    assert good.loc[good.setting == "synthetic", "auc"].mean() >= 0.9
    assert bad.loc[bad.setting == "synthetic", "auc"].mean() <= 0.5
    with pytest.raises(ValueError, match="one shape"):
        augmentation_experiment(*real, crops(4, True, 6, size=12), **args)


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
