"""Map scoring (radiomap.scoring) on hand-made maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics.radiomap.scoring import (
    auroc,
    auroc_by_row,
    average_precision,
    rank_correlation,
    sign_agreement,
)

TRUTH = np.array([[1.0, 0.0], [0.0, -0.5], [0.0, 0.0]])


def test_perfect_and_inverted_recovery():
    good = np.array([[0.8, 0.1], [0.05, -0.6], [0.2, -0.1]])
    assert auroc(good, TRUTH) == 1.0 and average_precision(good, TRUTH) == 1.0
    assert sign_agreement(good, TRUTH) == 1.0
    flipped = -good
    assert auroc(flipped, TRUTH) == 1.0  # |effect| ranks; the sign is scored apart
    assert sign_agreement(flipped, TRUTH) == 0.0
    bad = np.array([[0.0, 0.9], [0.8, 0.0], [0.7, 0.6]])
    assert auroc(bad, TRUTH) == 0.0


def test_partial_recovery_by_hand():
    # positives |e| = 0.5, 0.2; negatives 0.3, 0.1, 0.0, 0.4: pairs won 4 + 2 of 8
    effect = np.array([[0.5, 0.3], [0.1, 0.2], [0.0, 0.4]])
    assert auroc(effect, TRUTH) == pytest.approx(6 / 8)
    # ranked: 0.5 (+), 0.4, 0.3, 0.2 (+): precision 1 at rank 1 and 2/4 at rank 4
    assert average_precision(effect, TRUTH) == pytest.approx((1 + 0.5) / 2)
    assert sign_agreement(effect, TRUTH) == 0.5  # 0.2 has the wrong sign for -0.5
    # NaN pairs are left out
    with_nan = effect.copy()
    with_nan[2, 1] = np.nan
    assert auroc(with_nan, TRUTH) == pytest.approx(5 / 6)


def test_per_row_auroc():
    effect = pd.DataFrame([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3]], index=["g1", "g2", "g3"])
    rows = auroc_by_row(effect, TRUTH)
    assert rows["g1"] == 1.0 and rows["g2"] == 0.0 and np.isnan(rows["g3"])


def test_rank_correlation_of_long_tables_and_matrices():
    a = pd.DataFrame(
        {
            "genomic": ["g1", "g1", "g2", "g2"],
            "feature": ["f", "h", "f", "h"],
            "effect": [0.1, 0.5, -0.3, 0.9],
        }
    )
    b = a.assign(effect=a["effect"] * 2 + 1).iloc[::-1]  # same order of effects, shuffled rows
    assert rank_correlation(a, b) == pytest.approx(1.0)
    c = a.assign(effect=-a["effect"])
    assert rank_correlation(a, c) == pytest.approx(-1.0)
    extra = pd.concat([b, pd.DataFrame({"genomic": ["g9"], "feature": ["f"], "effect": [5.0]})])
    assert rank_correlation(a, extra) == pytest.approx(1.0)  # only the common pairs count
    m = pd.DataFrame([[0.1, 0.5], [-0.3, 0.9]])
    assert rank_correlation(m, m * 3) == pytest.approx(1.0)
