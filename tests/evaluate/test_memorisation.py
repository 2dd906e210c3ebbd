"""Image memorisation (nearest training against nearest held-out image) on small phantoms: a
set that copies its training images is flagged, new real images and a blurred mean image are
not, in 2D and 3D and with several channels; and the sample grids a radiologist reads: one grey
panel per channel per patient, real and synthetic at the same window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics import pl
from radiogenomics.data.phantom import make_phantom
from radiogenomics.evaluate import figures
from radiogenomics.evaluate.memorisation import (
    NEAR_COPY_MAX,
    memorisation_metrics,
    memorisation_part,
    memorisation_scores,
)

N = 40  # training, held-out and new images each: equal sizes, so new images score ratio ~1


def _three_channels(images: np.ndarray) -> np.ndarray:
    """(N, 3, *spatial) from a one-channel phantom: the image, its square and its negative
    blurred by a shift, three channels that differ like MRI sequences do."""
    x = images[:, :1]
    return np.concatenate([x, 2 * x**2 - 1, -np.roll(x, 1, axis=-1)], axis=1).astype(np.float32)


@pytest.fixture(scope="module", params=[(2, 32, 1), (2, 32, 3), (3, 16, 1)],
                ids=["2d", "2d-3ch", "3d"])  # fmt: skip
def sets(request):
    """(train, held-out, new) images of one phantom, split by patient, and its masks."""
    dims, size, channels = request.param
    ph = make_phantom(3 * N, dims, size=size, seed=0, progress=False)
    images = ph.images if channels == 1 else _three_channels(ph.images)
    return images[:N], images[N : 2 * N], images[2 * N :], ph.masks


def test_a_set_that_copies_its_training_images_is_flagged(sets):
    train, heldout, _, _ = sets
    rng = np.random.default_rng(1)
    # every training image again, with a little noise and another brightness and contrast
    copy = 0.9 * train + 0.05 + 0.01 * rng.normal(size=train.shape).astype(np.float32)
    s = memorisation_scores(train, heldout, copy)
    assert s["flag"]
    assert s["near_copy_share"] > 0.9 and s["near_copy_share_reference"] < 0.1
    assert s["ratio"] < 0.3 * s["ratio_reference"]
    # each copy's nearest training image is the one it copies
    assert (s["images"]["nearest_train"].to_numpy() == np.arange(N)).mean() > 0.95
    metrics = memorisation_metrics(s)
    assert metrics["image_memorisation_flag"] is True
    assert all(isinstance(v, (bool, int, float)) for v in metrics.values())


def test_new_real_images_are_not_flagged(sets):
    train, heldout, new, _ = sets
    s = memorisation_scores(train, heldout, new)
    assert not s["flag"] and s["near_copy_share"] <= NEAR_COPY_MAX
    # equal set sizes: a new image is as near the training images as the held-out ones (the
    # median ratio moved by at most 0.05 over phantom seeds; 0.15 of tolerance)
    assert s["ratio"] == pytest.approx(1.0, abs=0.15)
    assert s["ratio"] == pytest.approx(s["ratio_reference"], abs=0.15)


def test_a_partial_copy_is_flagged_and_a_blurred_mean_image_is_no_copy(sets):
    train, heldout, new, _ = sets
    # a quarter of the set copies training images: the median barely moves, the share flags
    partial = np.concatenate([new[: 3 * N // 4], train[: N // 4]])
    s = memorisation_scores(train, heldout, partial)
    assert s["flag"] and s["near_copy_share"] == pytest.approx(0.25, abs=0.05)
    # a mean image sits near every real image, training and held-out alike: no near-copy
    rng = np.random.default_rng(2)
    mean = train.mean(axis=0, keepdims=True) + 0.01 * rng.normal(size=(N, *train.shape[1:]))
    s = memorisation_scores(train, heldout, mean.astype(np.float32))
    assert s["near_copy_share"] == 0.0 and not s["flag"]


def test_memorisation_refuses_bad_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="differ in"):
        memorisation_scores(x, x, x[:, :, :4])
    with pytest.raises(ValueError, match="heldout set has 3 image"):
        memorisation_scores(x, x[:3], x)
    with pytest.raises(ValueError, match="synthetic images hold NaN"):
        memorisation_scores(x, x, np.where(x > 1, np.nan, x))
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        memorisation_scores(x[:, 0], x, x)


def test_the_memorisation_part_writes_its_table_and_figure(sets, tmp_path):
    train, heldout, _, masks = sets
    copy = train + 0.01 * np.random.default_rng(1).normal(size=train.shape).astype(np.float32)
    ids = {k: [f"{k}-{i}" for i in range(N)] for k in ("train", "heldout", "synthetic")}
    s = memorisation_scores(train, heldout, copy, ids=ids)
    c = train.shape[1]
    names = ["pre", "FLAIR", "post"][:c] if c > 1 else None
    shown, figure, text = memorisation_part(
        s, train, copy, tmp_path, masks=(masks[:N], masks[:N]), channel_names=names, n_shown=4
    )
    assert figure.is_file() and figure.stat().st_size > 1000
    table = pd.read_csv(tmp_path / "memorisation.csv", index_col=0)
    assert list(table.index) == ids["synthetic"] and table["near_copy"].all()
    assert table["nearest_train"].iloc[0] == "train-0"
    assert shown.loc["share of near-copies", "synthetic"] == s["near_copy_share"]
    assert "YES" in text
    fig = figures.nearest_training_images(s, train, copy, channel_names=names, n=4)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 * 2 * c  # per row: the synthetic image's channels, the training's


# --------------------------------------------------------------------------------------------
# sample grids


@pytest.fixture(scope="module")
def mri_like():
    """Two 6-patient cohorts of 3-channel 2D images (real; synthetic made brighter), with
    channel names in uns['rg'] as a manifest gives them."""
    ph = make_phantom(12, 2, size=16, seed=3, progress=False)
    images = _three_channels(ph.images)
    real, synth = ph.adata[:6].copy(), ph.adata[6:].copy()
    for a in (real, synth):
        a.uns["rg"]["channel_names"] = ["pre-contrast", "FLAIR", "post-contrast"]
    return real, images[:6], ph.masks[:6], synth, 0.5 * images[6:] + 0.4, ph.masks[6:]


def test_multichannel_patients_are_one_grey_panel_per_channel(mri_like):
    real, images, masks, *_ = mri_like
    fig = pl.patients(real, 4, images=images, masks=masks, ncols=6)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4 * 3  # one axis per channel per patient
    for ax in drawn:
        assert ax.images[0].get_array().ndim == 2  # grey levels, no RGB
        assert ax.images[0].get_cmap().name == "gray"
    titles = [ax.get_title() for ax in drawn[:3]]
    assert titles[0].endswith("pre-contrast") and titles[1] == "FLAIR"
    # single-channel cohorts keep one panel per patient
    grey = real.copy()
    del grey.uns["rg"]["channel_names"]
    one = pl.patients(grey, 4, images=images[:, :1], masks=masks)
    assert len([ax for ax in one.axes if ax.images]) == 4


def test_real_and_synthetic_grids_share_one_window_per_channel(mri_like, tmp_path):
    real, images, masks, synth, synth_images, synth_masks = mri_like
    figs = figures.sample_grids(real, images, masks, synth, synth_images, synth_masks, tmp_path)
    assert (tmp_path / "real_samples.png").is_file()
    assert (tmp_path / "synthetic_samples.png").is_file()
    window = np.percentile(np.moveaxis(images, 1, 0).reshape(3, -1), [1, 99], axis=1).T
    for fig in figs:
        drawn = [ax for ax in fig.axes if ax.images]
        assert len(drawn) == 6 * 3
        for i, ax in enumerate(drawn):
            assert ax.images[0].get_clim() == pytest.approx(tuple(window[i % 3]))


def test_channel_names_of_another_length_are_refused(mri_like):
    real, images, masks, *_ = mri_like
    bad = real.copy()
    bad.uns["rg"]["channel_names"] = ["FLAIR"]
    with pytest.raises(ValueError, match="channel_names"):
        pl.patients(bad, 2, images=images, masks=masks)


def test_a_copy_of_any_training_slice_is_caught(stacked_cohort, tmp_path):
    """A model learns from every slice of a stacked training cohort, so synthetic copies of
    slices other than the patients' evaluation slices must be caught too."""
    from radiogenomics.config import DataConfig
    from radiogenomics.data.dataset import load_images, load_slices
    from radiogenomics.evaluate.privacy import image_memorisation

    cfg = DataConfig(intensity="fixed", a_min=0.0, a_max=1.0)
    train, heldout = stacked_cohort[:7].copy(), stacked_cohort[7:].copy()
    images, masks, owner = load_slices(train, cfg)
    evaluation = load_images(train, cfg)[0]
    # per training patient with several slices, one slice that is not its evaluation slice
    copies = [
        next(k for k in np.flatnonzero(owner == i) if not np.array_equal(images[k], evaluation[i]))
        for i in np.unique(owner)
        if (owner == i).sum() > 1
    ]
    synthetic = stacked_cohort[: len(copies)].copy()  # its ids only
    loaded = {
        "train": (evaluation, load_images(train, cfg)[1]),
        "heldout": load_images(heldout, cfg),
        "synthetic": (images[copies], masks[copies]),
    }
    cohorts = {"train": train, "heldout": heldout, "synthetic": synthetic}
    blind, _ = image_memorisation(cohorts, loaded, tmp_path / "blind")  # evaluation slices
    seen, _ = image_memorisation(cohorts, loaded, tmp_path / "all", data_cfg=cfg)
    assert blind["image_near_copy_share"] == 0.0 and not blind["image_memorisation_flag"]
    assert seen["image_near_copy_share"] == 1.0 and seen["image_memorisation_flag"]
    table = pd.read_csv(tmp_path / "all" / "memorisation.csv", index_col=0)
    assert table["nearest_train"].str.contains("#").all()  # a slice of a patient, named
