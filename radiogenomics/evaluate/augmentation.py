"""Does adding synthetic lesions help a lesion classifier? (the lesion-DCGAN experiment)

A small MONAI CNN learns lesion vs normal tissue on real training crops, once with real
lesions only, once with the synthetic lesions added, and once with synthetic lesions only
(train on synthetic, test on real). Every setting is scored on the same held-out real
lesions and normal tissue, over several seeds, so the difference is paired by seed.

The synthetic lesions must come from a generator trained on the training lesions only;
otherwise the held-out lesions leak into the augmented training set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from tqdm.auto import tqdm

SETTINGS = ("real", "real+synthetic", "synthetic")
BASELINE = "first-order baseline"


def split_negatives(normal, train, test, *, group: str = "subject", seed: int = 0):
    """Normal-tissue crops to (train, test): a woman's tissue goes where her lesions went
    (`group`), the others' by woman in the lesions' train/test proportion.

    ValueError if a woman has lesions on both sides (split the lesions with `cohort split
    --group`), or if either side would be left without normal tissue.
    """
    from sklearn.model_selection import GroupShuffleSplit

    side = np.full(normal.n_obs, "", dtype=object)
    if group in normal.obs:
        groups = normal.obs[group].astype(str).to_numpy()
        sides = {
            name: set(cohort.obs[group].astype(str)) if group in cohort.obs else set()
            for name, cohort in (("train", train), ("test", test))
        }
        both = sorted(sides["train"] & sides["test"])
        if both:
            raise ValueError(
                f"'{group}' {both[:10]} have lesions in both the training and the test cohort: "
                f"split the lesions by '{group}' (cohort split --group {group})"
            )
        for name, members in sides.items():
            side[np.isin(groups, list(members))] = name
    else:
        groups = normal.obs_names.to_numpy()
    free = np.flatnonzero(side == "")
    if len(np.unique(groups[free])) > 1:
        fraction = test.n_obs / (train.n_obs + test.n_obs)
        splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
        tr, te = next(splitter.split(free, groups=groups[free]))
        side[free[tr]], side[free[te]] = "train", "test"
    side[side == ""] = "train"
    for name in ("train", "test"):
        if not (side == name).any():
            raise ValueError(f"no normal-tissue crop is left for the {name} side")
    return normal[side == "train"].copy(), normal[side == "test"].copy()


def lesion_classifier(spatial_dims: int, size) -> torch.nn.Module:
    """A MONAI `Classifier` (residual units, instance norm) with one logit."""
    from monai.networks.nets import Classifier

    size = [int(s) for s in size]
    if len(size) != spatial_dims:
        raise ValueError(f"size {size} does not have {spatial_dims} entries")
    return Classifier(in_shape=(1, *size), classes=1, channels=(16, 32, 64), strides=(2, 2, 2))


def _flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    # random flips along every spatial axis: lesion presence does not depend on orientation
    for axis in range(2, x.ndim):
        flip = torch.rand(x.shape[0], generator=rng) < 0.5
        x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(axis), x)
    return x


def train_classifier(
    images: torch.Tensor,
    labels: np.ndarray,
    *,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> torch.nn.Module:
    """Fit `lesion_classifier` on `images (N, 1, *S)` and 0/1 `labels`; the loss weighs the
    classes equally, so adding lesions does not just move the decision threshold."""
    labels = np.asarray(labels, dtype=np.float32)
    if images.shape[0] != len(labels):
        raise ValueError(f"{images.shape[0]} images but {len(labels)} labels")
    if set(np.unique(labels)) != {0.0, 1.0}:
        raise ValueError("the classifier needs both lesions (1) and normal tissue (0)")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
        torch.manual_seed(seed)
        model = lesion_classifier(images.ndim - 2, images.shape[2:])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y = torch.as_tensor(labels)
    pos_weight = (y == 0).sum() / (y == 1).sum()
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(y), (min(batch_size, len(y)),), generator=rng)
        loss = loss_fn(model(_flip(images[idx], rng)).squeeze(1), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _probabilities(model, images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    return torch.cat([model(b).squeeze(1) for b in images.split(batch_size)]).sigmoid().numpy()


def augmentation_experiment(
    train_lesions: torch.Tensor,
    train_normal: torch.Tensor,
    test_lesions: torch.Tensor,
    test_normal: torch.Tensor,
    synthetic: torch.Tensor,
    *,
    repeats: int = 5,
    steps: int = 600,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (seed, setting): F1, precision, recall (threshold 0.5) and ROC AUC on the
    held-out real crops. All inputs are `(N, 1, *S)` tensors on one intensity scale.

    A last row, `first-order baseline`, is a logistic regression on each crop's intensity
    statistics (percentiles, spread, dark fraction): what a classifier gets without any
    lesion shape, e.g. from where the crops were taken. Read the CNN rows against it.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    named = {
        "train_lesions": train_lesions,
        "train_normal": train_normal,
        "test_lesions": test_lesions,
        "test_normal": test_normal,
        "synthetic": synthetic,
    }
    empty = [name for name, t in named.items() if len(t) == 0]
    if empty:
        raise ValueError(f"no crops in {empty}")
    shapes = {t.shape[1:] for t in (train_lesions, train_normal, test_lesions, test_normal)}
    if len(shapes | {synthetic.shape[1:]}) != 1:
        raise ValueError(
            "all crops must share one shape; got "
            f"train {tuple(train_lesions.shape[1:])}/{tuple(train_normal.shape[1:])}, "
            f"test {tuple(test_lesions.shape[1:])}/{tuple(test_normal.shape[1:])}, "
            f"synthetic {tuple(synthetic.shape[1:])}"
        )
    test = torch.cat([test_lesions, test_normal])
    truth = np.r_[np.ones(len(test_lesions)), np.zeros(len(test_normal))]
    train_sets = {
        "real": (train_lesions, train_normal),
        "real+synthetic": (torch.cat([train_lesions, synthetic]), train_normal),
        "synthetic": (synthetic, train_normal),
    }
    rows = []
    jobs = [(r, s) for r in range(repeats) for s in SETTINGS]
    for r, setting in tqdm(jobs, desc="augmentation experiment", disable=not progress):
        pos, neg = train_sets[setting]
        model = train_classifier(
            torch.cat([pos, neg]),
            np.r_[np.ones(len(pos)), np.zeros(len(neg))],
            steps=steps,
            batch_size=batch_size,
            seed=seed + r,
        )
        p = _probabilities(model, test)
        rows.append(
            {
                "seed": seed + r,
                "setting": setting,
                "n_lesions": len(pos),
                "n_normal": len(neg),
                **_scores_of(truth, (p >= 0.5).astype(int), p),
            }
        )
    base = _first_order_baseline(
        torch.cat([train_lesions, train_normal]),
        np.r_[np.ones(len(train_lesions)), np.zeros(len(train_normal))],
        test,
    )
    pred = (base >= 0.5).astype(int)
    rows.append(
        {
            "seed": seed,
            "setting": BASELINE,
            "n_lesions": len(train_lesions),
            "n_normal": len(train_normal),
            **_scores_of(truth, pred, base),
        }
    )
    return pd.DataFrame(rows)


def _scores_of(truth, pred, prob) -> dict:
    return {
        "f1": f1_score(truth, pred, zero_division=0),
        "precision": precision_score(truth, pred, zero_division=0),
        "recall": recall_score(truth, pred, zero_division=0),
        "auc": roc_auc_score(truth, prob),
    }


def _intensity_stats(x: torch.Tensor) -> np.ndarray:
    flat = x.flatten(1).numpy()
    q = np.percentile(flat, [1, 10, 50, 90, 99], axis=1).T
    dark = (flat <= flat.min(1, keepdims=True) + 0.05).mean(1, keepdims=True)
    return np.c_[q, flat.std(1, keepdims=True), dark]


def _first_order_baseline(train: torch.Tensor, labels, test: torch.Tensor) -> np.ndarray:
    """Lesion probabilities of the test crops from a class-balanced logistic regression on
    `_intensity_stats` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    model.fit(_intensity_stats(train), labels)
    return model.predict_proba(_intensity_stats(test))[:, 1]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd per setting, plus the paired (same seed) F1 gain over real-only training."""
    summary = table.groupby("setting", sort=False)[["f1", "precision", "recall", "auc"]].agg(
        ["mean", "std"]
    )
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    real = table[table.setting == "real"].set_index("seed")["f1"]
    gain = {
        s: (table[table.setting == s].set_index("seed")["f1"] - real).agg(["mean", "std"])
        for s in table.setting.unique()
    }
    summary["f1_gain_mean"] = [gain[s]["mean"] for s in summary.index]
    summary["f1_gain_std"] = [gain[s]["std"] for s in summary.index]
    return summary
