"""The one patient-level split of the library.

`held_out` decides, for a cohort's patients, which are held out: stratified by a column and
grouped by another where asked. `cohort split` calls it for the train/test files, every model
for its held-out patients: a model holds out the patients of its modality among those the
cohort-wide split holds out, so the gene model, the image model and the segmentation net of one
cohort and one seed hold out the same ids.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def held_out(
    obs: pd.DataFrame,
    fraction: float,
    seed: int = 0,
    *,
    stratify: str | None = None,
    group: str | None = None,
) -> np.ndarray:
    """Boolean (n_obs,): the patients held out, about `fraction` of them.

    `stratify` names a column whose classes keep their proportions on both sides; `group` a
    column whose rows stay on one side (e.g. mini-MIAS `subject`: the lesions and films of one
    woman). With both, the held-out side is one fold of a `StratifiedGroupKFold`, so its
    fraction is only about `fraction` (1/k for the nearest k).
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1); got {fraction}")
    n = len(obs)
    strata = None
    if stratify is not None:
        strata = _column(obs, stratify, "stratify").astype(str).to_numpy()
        counts = pd.Series(strata).value_counts()
        if counts.min() < 2:
            raise ValueError(
                f"cannot stratify on '{stratify}': class(es) {counts[counts < 2].index.tolist()} "
                "have a single patient"
            )
    rows = np.arange(n)
    try:
        if group is None:
            _, test = train_test_split(rows, test_size=fraction, random_state=seed, stratify=strata)
        else:
            column = _column(obs, group, "group")
            if column.isna().any():
                missing = list(obs.index[column.isna().to_numpy()][:10])
                raise ValueError(f"group column '{group}' is missing for patients {missing}")
            groups = column.astype(str).to_numpy()
            if strata is None:
                splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
                _, test = next(splitter.split(rows, strata, groups))
            else:
                # one fold of k is the smaller side; k is the nearest to 1 / that fraction
                small = min(fraction, 1 - fraction)
                n_splits = max(2, int(np.floor(1 / small + 0.5)))
                splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
                rest, fold = next(splitter.split(rows, strata, groups))
                test = fold if fraction <= 0.5 else rest
    except ValueError as err:
        raise ValueError(f"cannot split {n} patients: {err}") from None
    out = np.zeros(n, dtype=bool)
    out[test] = True
    return out


def model_split(
    obs: pd.DataFrame, rows: np.ndarray, train_cfg, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of a model that trains on cohort rows `rows`.

    The cohort-wide split (`held_out` with `train.val_fraction`, `train.stratify`,
    `train.group`) is restricted to `rows`. The held-out patients stay out of training even
    where fewer than 2 of them have this model's modality (too few to select weights on: the
    model then keeps its last ones).
    """
    rows = np.asarray(rows)
    if train_cfg.val_fraction == 0 or len(obs) < 4:
        return rows, rows[:0]
    mask = held_out(
        obs,
        train_cfg.val_fraction,
        seed,
        stratify=train_cfg.stratify,
        group=train_cfg.group,
    )
    val, train = rows[mask[rows]], rows[~mask[rows]]
    if len(train) < 2:
        raise ValueError(
            f"only {len(train)} of the model's {len(rows)} patients are left to train on once "
            f"train.val_fraction={train_cfg.val_fraction} of the cohort is held out"
        )
    if len(val) < 2:
        log.warning(
            "%d of the model's %d patients fall in the held-out split: too few to score "
            "(train.val_fraction=%s); keeping the last weights",
            len(val),
            len(rows),
            train_cfg.val_fraction,
        )
    return train, val


def _column(obs: pd.DataFrame, key: str, what: str) -> pd.Series:
    if key not in obs.columns:
        raise ValueError(f"{what} column '{key}' not in obs; columns: {list(obs.columns)}")
    return obs[key]
