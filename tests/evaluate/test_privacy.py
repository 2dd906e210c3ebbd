"""Privacy (DCR, membership inference) and map agreement on a small 2D phantom: a synthetic set
that copies training patients is flagged on every record, new patients of the same phantom are
not; two maps that agree score 1, sign-flipped ones -1; the paired report's privacy and map
parts write their figures and keys."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from radiogenomics.config import DataConfig
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.evaluate.privacy import (
    cohort_privacy,
    distance_scores,
    mia_threshold,
    null_sd,
    privacy_metrics,
    privacy_scores,
)
from radiogenomics.radiomap.features import image_feature_batch
from radiogenomics.radiomap.scoring import map_agreement, rank_correlation

N_TRAIN, N_HELDOUT, N_NEW = 120, 60, 120


@pytest.fixture(scope="module")
def cohorts():
    """(train, held-out, new, their image features): one 2D phantom at 32x32, split by patient;
    `new` are further patients of the same phantom (make_phantom extends a cohort patient by
    patient), an independent draw from the population the training patients came from."""
    ph = make_phantom(N_TRAIN + N_HELDOUT + N_NEW, 2, size=32, seed=0, progress=False)
    cuts = np.cumsum([0, N_TRAIN, N_HELDOUT, N_NEW])
    sets, feats = [], {}
    for name, a, b in zip(("train", "heldout", "new"), cuts[:-1], cuts[1:], strict=True):
        sets.append(ph.adata[a:b].copy())
        feats[name] = image_feature_batch(
            ph.images[a:b], ph.masks[a:b], index=ph.adata.obs_names[a:b]
        )
    return (*sets, feats, ph)


def _copy(train, feats, ph, noise=0.01, seed=1):
    """The training patients again, renamed, with a little noise on expression and images."""
    rng = np.random.default_rng(seed)
    copy = train.copy()
    X = np.asarray(copy.X, np.float64)
    copy.X = X + noise * X.std(axis=0) * rng.normal(size=X.shape)
    copy.obs_names = [f"copy-{i}" for i in range(copy.n_obs)]
    images = ph.images[:N_TRAIN] + noise * rng.normal(size=ph.images[:N_TRAIN].shape)
    f = image_feature_batch(images, ph.masks[:N_TRAIN], index=copy.obs_names)
    return copy, f


def test_a_copy_of_the_training_patients_is_flagged_on_every_record(cohorts):
    train, heldout, _, feats, ph = cohorts
    copy, copy_feats = _copy(train, feats, ph)
    table, distances = cohort_privacy(
        train, heldout, copy, {"train": feats["train"], "heldout": feats["heldout"],
                               "synthetic": copy_feats}
    )  # fmt: skip
    assert list(table.index) == ["expression", "image", "joint"]
    assert table["flag"].all()
    assert (table["mia_auc"] > 0.95).all()  # every member sits on its copy
    assert (table["dcr_ratio"] < 0.2).all()
    assert (table["dcr_close_fraction"] > 0.9).all()
    assert set(distances) == set(table.index)
    assert len(distances["joint"]["synthetic"]) == N_TRAIN
    metrics = privacy_metrics(table)
    assert metrics["privacy_flag"] is True and metrics["privacy_image_flag"]


def test_new_patients_of_the_same_phantom_are_not_flagged(cohorts):
    train, heldout, new, feats, _ = cohorts
    features = {"train": feats["train"], "heldout": feats["heldout"], "synthetic": feats["new"]}
    table, _ = cohort_privacy(train, heldout, new, features)
    assert not table["flag"].any()
    # chance sd of the AUC at 120 members / 60 non-members: 0.046; 3 sd of tolerance
    sd = null_sd(N_TRAIN, N_HELDOUT)
    assert sd == pytest.approx(0.0458, abs=1e-3)
    assert (table["mia_auc"] - 0.5).abs().max() < 3 * sd
    assert table["dcr_ratio"].between(0.75, 1.33).all()
    # 2 sd (0.092) is under the 0.1 margin: the flag sits at AUC 0.6
    assert np.allclose(table["mia_threshold"], 0.6)
    assert mia_threshold(N_TRAIN, N_HELDOUT) == pytest.approx(0.6)


def test_the_joint_record_weighs_both_blocks_alike(cohorts):
    """New patients' expression joined to copies of the training patients' images (32 image
    features beside 256 genes): the joint record still sees the copied half, where plain
    concatenation of the z-scored columns lets the genes swamp it."""
    train, heldout, new, feats, _ = cohorts
    copied = feats["train"].set_axis(new.obs_names)
    expression = tuple(
        pd.DataFrame(np.asarray(a.X), index=a.obs_names) for a in (train, heldout, new)
    )
    images = (feats["train"], feats["heldout"], copied)
    table, _ = privacy_scores({"expression": expression, "image": images})
    assert table.loc["image", "flag"] and table.loc["image", "mia_auc"] == 1.0
    assert not table.loc["expression", "flag"]
    assert table.loc["joint", "flag"] and table.loc["joint", "mia_auc"] > 0.65
    concat = tuple(pd.concat([e, i], axis=1) for e, i in zip(expression, images, strict=True))
    plain, _ = privacy_scores({"concatenated": concat})
    assert plain.loc["concatenated", "mia_auc"] < table.loc["joint", "mia_auc"] - 0.1


def test_distance_scores_refuse_bad_records():
    rng = np.random.default_rng(0)
    ok = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="heldout set has 3 record"):
        distance_scores(ok, ok[:3], ok)
    with pytest.raises(ValueError, match="synthetic set's records hold NaN"):
        distance_scores(ok, ok, np.where(ok > 1, np.nan, ok))
    with pytest.raises(ValueError, match="alike"):
        distance_scores(ok, ok[:, :2], ok)


def test_map_agreement_of_identical_and_flipped_maps():
    rng = np.random.default_rng(0)
    genes, feats = [f"g{i}" for i in range(6)], [f"f{j}" for j in range(5)]
    idx = pd.MultiIndex.from_product([genes, feats], names=["genomic", "feature"])
    effect = rng.uniform(-1, 1, len(idx))
    p_adj = np.where(np.abs(effect) > 0.5, 0.001, 0.5)
    real = pd.DataFrame({"effect": effect, "p_adj": p_adj}, index=idx).reset_index()
    flipped = real.assign(effect=-real["effect"])
    same = map_agreement(real, real.sample(frac=1, random_state=0))  # row order is irrelevant
    assert same["rank_correlation"] == pytest.approx(1.0)
    assert same["sign_agreement"] == 1.0 and same["n_significant"] == (p_adj < 0.05).sum()
    flip = map_agreement(real, flipped)
    assert flip["rank_correlation"] == pytest.approx(-1.0) and flip["sign_agreement"] == 0.0
    noisy = real.assign(effect=real["effect"] + rng.normal(0, 0.3, len(real)))
    assert 0.5 < rank_correlation(real, noisy) < 0.99
    none = map_agreement(real.assign(p_adj=1.0), real)
    assert np.isnan(none["sign_agreement"]) and none["n_significant"] == 0


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """48 training and 24 held-out patients of a 2D phantom at 32x32 on disk, and the copy
    attack: the training patients again, renamed, expression with 1% noise."""
    root = tmp_path_factory.mktemp("privacy")
    ph = make_phantom(72, 2, size=32, seed=0, progress=False)
    whole = read_cohort(write_phantom(ph, root / "phantom", progress=False))
    train, heldout = whole[:48].copy(), whole[48:].copy()
    copy = train.copy()
    X = np.asarray(copy.X, np.float64)
    copy.X = X + 0.01 * X.std(axis=0) * np.random.default_rng(1).normal(size=X.shape)
    copy.obs_names = [f"copy-{i}" for i in range(copy.n_obs)]
    write_cohort(copy, root / "copy" / "cohort.h5ad")
    return train, heldout, read_cohort(root / "copy" / "cohort.h5ad"), root


def test_the_paired_reports_privacy_and_map_parts(on_disk):
    from radiogenomics.evaluate.html import write_html
    from radiogenomics.evaluate.maps import privacy_and_maps

    train, heldout, copy, root = on_disk
    out = root / "report"
    (metrics, private), (maps, mapped) = privacy_and_maps(
        train, heldout, copy, out, DataConfig(spatial_dims=2)
    )
    for kind in ("expression", "image", "joint"):
        assert metrics[f"privacy_{kind}_flag"], kind
        assert metrics[f"privacy_{kind}_mia_auc"] > 0.95
    # the copies' images are the training images' files: every one a near-copy
    assert metrics["image_memorisation_flag"] and metrics["privacy_flag"]
    assert metrics["image_near_copy_share"] == 1.0
    assert metrics["image_memorisation_ratio"] < 0.01
    assert out / "privacy" / "memorisation.png" in private.figures.values()
    for key in ("map_rank_correlation", "map_reference_heldout", "map_reference_halves",
                "map_rank_correlation_halves", "map_metagenes_rank_correlation",
                "map_auroc_real", "map_auroc_synthetic"):  # fmt: skip
        assert np.isfinite(maps[key]), key
    # copies of the training patients keep its map better than new real patients do
    assert maps["map_rank_correlation_all"] > 0.97
    assert maps["map_rank_correlation"] > maps["map_reference_heldout"] - 0.05
    assert -1 <= maps["map_reference_halves"] <= 1 and maps["map_auroc_real"] > 0.7
    html = write_html(out / "report.html", "t", [private, mapped])
    for section in (private, mapped):
        for fig in section.figures.values():
            assert fig.is_file() and fig.stat().st_size > 1000, fig
            assert fig.relative_to(out).as_posix() in html.read_text()
    table = pd.read_csv(out / "privacy" / "privacy.csv", index_col=0)
    assert table["flag"].all()
    json.dumps(metrics | maps, default=float)  # the report writes them as JSON


def test_the_gene_report_flags_the_copy(on_disk):
    from radiogenomics.evaluate.report import gene_report

    train, heldout, copy, root = on_disk
    _, report = gene_report(train, heldout, copy, root / "genes", seed=0)
    table = pd.read_csv(root / "genes" / "privacy.csv", index_col=0)
    assert list(table.index) == ["expression"] and table.loc["expression", "flag"]
    text = report.read_text()
    assert "Privacy" in text and "dcr.png" in text and (root / "genes" / "dcr.png").is_file()


def test_the_image_report_flags_the_copy(on_disk):
    from radiogenomics.evaluate.report import image_report

    train, heldout, copy, root = on_disk
    data = DataConfig(spatial_dims=2, image_size=[32, 32])
    scores, report = image_report(heldout, copy, root / "images", data, train=train, progress=False)
    # copies of real images show no augmentation: the leak check runs and passes them
    leak = pd.read_csv(root / "images" / "augmentation_leak.csv", index_col=0)
    assert not leak["flagged"].any() and "Augmentation leak" in report.read_text()
    assert scores.attrs["augmentation_leak"]["flag"] is False
    table = pd.read_csv(root / "images" / "privacy.csv", index_col=0)
    assert list(table.index) == ["image"] and table.loc["image", "flag"]
    assert table.loc["image", "mia_auc"] == 1.0 and table.loc["image", "dcr_ratio"] == 0.0
    assert "dcr.png" in report.read_text() and "memorisation.png" in report.read_text()
    memo = pd.read_csv(root / "images" / "memorisation_scores.csv", index_col=0)["value"]
    assert memo["image_memorisation_flag"] == "True"
    assert float(memo["image_near_copy_share"]) == 1.0
    # the flat metrics.json holds the same numbers, read back as JSON
    metrics = json.loads((root / "images" / "metrics.json").read_text())
    assert metrics["image_memorisation_flag"] is True and metrics["image_near_copy_share"] == 1.0
    assert metrics["image_frd"] == pytest.approx(scores.loc["synthetic", "frd"])
    assert metrics["image_frd_reference"] == pytest.approx(scores.loc["real (reference)", "frd"])
    assert metrics["image_augmentation_leak_flag"] is False
    assert metrics["privacy_image_mia_auc"] == 1.0 and metrics["privacy_flag"] is True
