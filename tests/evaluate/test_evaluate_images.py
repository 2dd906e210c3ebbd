"""Image evaluation: known answers on disks/spheres and noise, 2D (32x32) and 3D (16^3)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import UNet
from scipy import ndimage

from radiogenomics.evaluate.images import (
    BASELINE,
    REFERENCE,
    SYNTHETIC,
    _ms_ssim_setup,
    _segment,
    detection_auc,
    diversity,
    encoder_features,
    evaluate_images,
    frd,
    frechet_distance,
    mask_dice,
    ms_ssim,
    radiomic_table,
    real_reference,
    region_mean_baseline,
    ssim,
)
from radiogenomics.radiomap.definitions import RADIOMIC_FEATURES
from radiogenomics.radiomap.features import radiomic_features

SIZE = {2: 32, 3: 16}
RADIUS = {2: 10.0, 3: 6.0}


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def sd(request) -> int:
    return request.param


def ball(sd: int, radii, center=None, size=None) -> np.ndarray:
    """Boolean `(1, *spatial)` ellipse/ellipsoid with semi-axes `radii`."""
    size = size or SIZE[sd]
    grid = np.mgrid[tuple(slice(0, size) for _ in range(sd))].astype(np.float64)
    center = (size - 1) / 2 if center is None else center
    radii = np.broadcast_to(np.asarray(radii, np.float64), (sd,))
    return (sum(((g - center) / r) ** 2 for g, r in zip(grid, radii, strict=True)) <= 1)[None]


def lesions(sd: int, n: int, seed: int, noise: float = 0.1, smooth: float = 0.0):
    """`n` images `(n, 1, *spatial)`: a bright ball of random radius on a dark noisy background."""
    rng = np.random.default_rng(seed)
    lo = 3 if sd == 2 else 2.5
    masks = np.stack([ball(sd, rng.uniform(lo, SIZE[sd] / 3)) for _ in range(n)])
    field = rng.standard_normal(masks.shape)
    if smooth:
        field = ndimage.gaussian_filter(field, (0, 0) + (smooth,) * sd) * 3
    images = np.clip(np.where(masks, 0.4, -0.4) + noise * field, -1, 1).astype(np.float32)
    return images, masks.astype(np.float32)


# --------------------------------------------------------------------------------------------
# radiomic features


def test_shape_of_ball_near_analytic_and_lower_for_ellipse(sd):
    r = RADIUS[sd]
    m = ball(sd, r)
    image = np.where(m, 0.5, -0.5)
    f = radiomic_features(image, m)
    analytic = np.pi * r**2 if sd == 2 else 4 / 3 * np.pi * r**3
    assert f["shape_volume"] == pytest.approx(analytic, rel=0.10)
    assert f["shape_sphericity"] == pytest.approx(1.0, abs=0.15)
    assert f["shape_elongation"] == pytest.approx(1.0, abs=0.02)
    assert f["shape_surface_volume_ratio"] == pytest.approx(f["shape_surface"] / m.sum())
    assert 0.75 < f["shape_solidity"] <= 1.0  # staircase voxels: a digital ball is not convex
    e = radiomic_features(image, ball(sd, [r] + [r / 3] * (sd - 1)))
    assert e["shape_sphericity"] < f["shape_sphericity"] - 0.1
    assert e["shape_elongation"] == pytest.approx(1 / 3, abs=0.05)  # ratio of the semi-axes


def test_firstorder_and_texture_of_a_constant_image(sd):
    m = ball(sd, RADIUS[sd])
    f = radiomic_features(np.full(m.shape, 0.25), m)
    assert f["firstorder_mean"] == 0.25
    assert f["firstorder_p10"] == f["firstorder_p90"] == 0.25
    for k in ("std", "skewness", "kurtosis", "entropy", "range"):
        assert f[f"firstorder_{k}"] == 0.0, k
    assert f["firstorder_energy"] == pytest.approx(0.0625 * m.sum(), rel=1e-12)
    assert f["glcm_contrast"] == 0.0 and f["glcm_dissimilarity"] == 0.0
    assert f["glcm_homogeneity"] == pytest.approx(1.0) and f["glcm_energy"] == pytest.approx(1.0)


def test_channels_are_averaged():
    m = ball(2, 8)
    rng = np.random.default_rng(0)
    two = rng.uniform(-1, 1, (2, 32, 32))
    f2 = radiomic_features(two, m)
    f1 = radiomic_features(two.mean(axis=0, keepdims=True), m)
    assert f2 == pytest.approx(f1, rel=1e-12)


def test_empty_and_tiny_masks_give_nan(sd, caplog):
    image = np.zeros((1,) + (SIZE[sd],) * sd)
    empty = np.zeros_like(image)
    assert np.isnan(list(radiomic_features(image, empty).values())).all()
    tiny = empty.copy()
    tiny[(0,) + (5,) * sd] = tiny[(0,) + (6,) + (5,) * (sd - 1)] = 1  # 2 voxels
    f = radiomic_features(image, tiny)
    assert f["firstorder_mean"] == 0.0
    assert all(np.isnan(f[k]) for k in RADIOMIC_FEATURES if not k.startswith("firstorder_"))
    # in a batch, the empty-mask lesion becomes a NaN row, left out of FRD with a warning
    images, masks = lesions(sd, 6, seed=0)
    masks[0] = 0
    table = radiomic_table(images, masks, progress=False)
    assert list(table.columns) == list(RADIOMIC_FEATURES) and len(table) == 6
    assert table.iloc[0].isna().all() and table.iloc[1:].notna().all().all()
    with caplog.at_level(logging.WARNING):
        assert np.isfinite(frd(images, masks, images, masks))
    assert "1 lesion(s) with NaN features left out" in caplog.text


def test_bad_shapes_name_the_shape():
    with pytest.raises(ValueError, match=r"\(1, 32, 32\)"):
        radiomic_features(np.zeros((1, 32, 32)), np.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match=r"\(4, 32, 32\)"):
        radiomic_table(np.zeros((4, 32, 32)), np.zeros((4, 32, 32)))


def test_out_of_range_intensities_are_logged(caplog):
    images, masks = lesions(2, 4, seed=0)
    with caplog.at_level(logging.WARNING):
        radiomic_table(images * 200, masks, progress=False)
    assert "not [-1, 1]" in caplog.text


# --------------------------------------------------------------------------------------------
# Fréchet distances


def test_frechet_distance_known_value_self_zero_and_monotone(caplog):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 1))
    # one feature, equal covariances: FD = (mean shift / pooled std)^2, pooled std over both sets
    delta = 0.7
    expected = delta**2 / (a.var() + delta**2 / 4)
    assert frechet_distance(a, a + delta) == pytest.approx(expected, rel=1e-9)
    # wildly different scales: standardisation makes the distance scale-free
    X = rng.standard_normal((150, 6)) * np.array([1e-3, 1, 1e3, 1e6, 5, 0.1])
    assert frechet_distance(X, X) < 1e-6
    scaled = [frechet_distance(X, X + s * X.std(axis=0)) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(b > a for a, b in zip(scaled, scaled[1:], strict=False)), scaled
    # NaN columns are dropped by name, constant columns silently; fewer samples than features
    df = pd.DataFrame(X[:5], columns=list("abcdef")).assign(const=1.0)
    df.loc[0, "b"] = np.nan
    with caplog.at_level(logging.WARNING):
        d = frechet_distance(df, df)
    assert d < 1e-6 and "['b']" in caplog.text
    assert frechet_distance(df.drop(columns="b"), df.drop(columns="b") + 1.0) > 1.0


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="no feature left"):
        frechet_distance(np.ones((4, 3)), np.ones((4, 3)))


def test_frd_zero_for_same_set_and_grows_with_difference(sd):
    images, masks = lesions(sd, 10, seed=1)
    assert frd(images, masks, images, masks) < 1e-6
    bigger = np.stack([ndimage.binary_dilation(m, iterations=2) for m in masks > 0])
    assert frd(images, masks, np.where(bigger, 0.4, images), bigger) > 1.0


# --------------------------------------------------------------------------------------------
# SSIM, MS-SSIM, diversity


def test_ms_ssim_setup_fits_small_images():
    k2, w2 = _ms_ssim_setup((32, 32))
    k3, w3 = _ms_ssim_setup((16, 16, 16))
    assert (k2, len(w2), k3, len(w3)) == (7, 3, 3, 3)
    assert sum(w2) == pytest.approx(1.0) and sum(w3) == pytest.approx(1.0)
    assert _ms_ssim_setup((8, 8)) is None


def test_ssim_and_ms_ssim(sd):
    images, _ = lesions(sd, 4, seed=2)
    assert ssim(images, images) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(torch.from_numpy(images), images) == pytest.approx(1.0, abs=1e-5)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (2, *images.shape))
    assert ssim(noise[0], noise[1]) < 0.1
    assert ms_ssim(noise[0], noise[1]) < 0.1
    with pytest.raises(ValueError, match="too small"):
        ms_ssim(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="same shape"):
        ssim(images, images[:2])


def test_diversity(sd):
    images, _ = lesions(sd, 6, seed=3)
    same = np.repeat(images[:1], 6, axis=0)
    assert diversity(same) == pytest.approx(1.0, abs=1e-5)
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    d_noise, d_lesions = diversity(noise, n_pairs=10), diversity(images)
    assert d_noise < 0.1 and d_noise < d_lesions < 1.0
    small = np.repeat(np.random.default_rng(1).uniform(-1, 1, (1, 1, 8, 8)), 3, axis=0)
    assert diversity(small) == pytest.approx(1.0, abs=1e-5)  # SSIM fallback


# --------------------------------------------------------------------------------------------
# Dice, detection, baseline


def test_mask_dice_known_values():
    y = np.zeros((4, 1, 8, 8))
    y[:3, :, :4] = 1  # rows 0-3
    pred = np.zeros_like(y)
    pred[0, :, :4] = 1  # identical
    pred[1, :, 4:] = 1  # disjoint
    pred[2, :, 2:6] = 1  # rows 2-5: overlap 2 of 4 rows each
    # image 3: empty vs empty
    out = mask_dice(pred, y)
    np.testing.assert_allclose(out["dice_per_image"], [1.0, 0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["iou_per_image"], [1.0, 0.0, 1 / 3, 1.0], atol=1e-6)
    assert out["dice"] == pytest.approx(0.625) and out["iou"] == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match=r"\(4, 1, 8, 8\)"):
        mask_dice(pred, y[:2])


def test_detection_auc(sd):
    # same distribution: over data seeds the AUC spreads ~0.03 (2D) / ~0.07 (3D) around 0.5
    a, _ = lesions(sd, 100, seed=4, smooth=1.5)
    b, _ = lesions(sd, 100, seed=5, smooth=1.5)
    assert detection_auc(a, b) == pytest.approx(0.5, abs=0.15)
    noisy, _ = lesions(sd, 40, seed=6, noise=0.3)  # the larger set is subsampled to 40
    assert detection_auc(a, noisy) > 0.9
    assert detection_auc(a, noisy, classifier="boosting", folds=3) > 0.9
    with pytest.raises(ValueError, match="'svm'"):
        detection_auc(a, b, classifier="svm")


def test_region_mean_baseline():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (5, 2, 16, 16)).astype(np.float32)
    masks = np.zeros((5, 1, 16, 16), np.float32)
    masks[:, :, 4:8, 4:8] = 1
    inside = [images[:, c][masks[:, 0] > 0].mean() for c in range(2)]
    outside = [images[:, c][masks[:, 0] == 0].mean() for c in range(2)]
    fill = np.zeros((3, 1, 16, 16))
    fill[:, :, 10:, 10:] = 1
    out = region_mean_baseline(images, masks, fill_masks=fill)
    assert out.shape == (3, 2, 16, 16) and out.dtype == np.float32
    for c in range(2):
        np.testing.assert_allclose(out[:, c, 12, 12], inside[c], rtol=1e-5)
        np.testing.assert_allclose(out[:, c, 5, 5], outside[c], rtol=1e-5)
    assert np.unique(region_mean_baseline(images, masks)[:, 0]).size == 2
    with pytest.raises(ValueError, match="0 lesion voxels"):
        region_mean_baseline(images, np.zeros_like(masks))


def test_real_reference_splits_into_disjoint_halves():
    images = np.arange(9, dtype=np.float32).reshape(9, 1, 1, 1) * np.ones((1, 1, 4, 4)) / 10

    def metric(xa, ma, xb, mb):
        assert ma is None and mb is None
        return (xa[:, 0, 0, 0].tolist(), xb[:, 0, 0, 0].tolist())

    a, b = real_reference(metric, images, seed=0)
    assert (len(a), len(b)) == (4, 5) and not set(a) & set(b)
    assert real_reference(metric, images, seed=0) == (a, b)  # seeded


# --------------------------------------------------------------------------------------------
# segmentation-net features and the full table


def tiny_unet(sd: int) -> UNet:
    torch.manual_seed(0)
    return UNet(sd, 1, 1, channels=(4, 8, 16), strides=(2, 2))


def test_encoder_features_is_the_pooled_bottom_layer(sd):
    net = tiny_unet(sd)
    images, _ = lesions(sd, 5, seed=7)
    net.train()
    feats = encoder_features(net, images, batch_size=2)
    assert feats.shape == (5, 16) and net.training  # mode restored
    with torch.no_grad():  # by hand: first down, second down, bottom, global average pool
        net.eval()
        x = net.model[1].submodule[0](net.model[0](torch.from_numpy(images)))
        bottom = net.model[1].submodule[1].submodule(x)
    np.testing.assert_allclose(feats, bottom.flatten(2).mean(-1).numpy(), rtol=1e-5, atol=1e-6)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = net

        def forward(self, x):
            return self.unet(x)

    np.testing.assert_allclose(encoder_features(Wrapped(), images), feats, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Linear"):
        encoder_features(torch.nn.Linear(2, 2), images)


def test_evaluate_images_rows_and_columns(sd):
    real, real_m = lesions(sd, 12, seed=8)
    fake, fake_m = lesions(sd, 10, seed=9, noise=0.2)
    df = evaluate_images(real, real_m, fake, fake_m, seg_net=tiny_unet(sd), progress=False)
    assert list(df.index) == [SYNTHETIC, BASELINE, REFERENCE]
    assert list(df.columns) == ["frd", "encoder_fd", "ms_ssim_diversity", "dice", "detection_auc"]
    assert np.isfinite(df.to_numpy()).all()
    # a flat baseline is trivially told from noisy real images and is less diverse
    assert df.loc[BASELINE, "detection_auc"] > 0.9

    def threshold(x):  # a perfect segmenter of these images, as a plain callable
        return (x > 0).float() * 20 - 10

    df = evaluate_images(real, real_m, fake, fake_m, seg_net=threshold, progress=False)
    assert df["encoder_fd"].isna().all()
    # all 12 real images: in 3D a 4-sigma noise voxel or so crosses the threshold
    assert df.loc[REFERENCE, "dice"] == pytest.approx(1.0, abs=1e-3)
    assert df.loc[BASELINE, "dice"] == 1.0
    plain = evaluate_images(real, real_m, fake, fake_m, progress=False)
    assert list(plain.columns) == ["frd", "ms_ssim_diversity", "detection_auc"]
    assert plain["frd"].equals(df["frd"])  # seeded: the same subsets


def test_segmentation_masks_follow_the_threshold():
    images = np.zeros((2, 1, 8, 8), np.float32)
    probability = np.linspace(0.05, 0.95, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    logits = torch.from_numpy(np.log(probability / (1 - probability))).expand(2, 1, 8, 8)
    net = lambda x: logits[: len(x)]  # noqa: E731
    for threshold in (0.3, 0.5, 0.8):
        pred = _segment(net, images, threshold)
        assert pred.shape == (2, 1, 8, 8)
        np.testing.assert_array_equal(pred[0, 0], probability[0, 0] > threshold)
    with pytest.raises(ValueError, match="threshold"):
        _segment(net, images, 1.0)


def test_twins_are_scored_against_their_own_source():
    real, real_m = lesions(2, 12, seed=8)
    twins = np.clip(real + 0.01 * np.random.default_rng(0).normal(size=real.shape), -1, 1)
    source = np.arange(12)
    df = evaluate_images(real, real_m, twins, real_m, fake_source=source, progress=False)
    assert df.loc[SYNTHETIC, "ssim_to_source"] > 0.95  # near copies of their sources
    assert df.loc[BASELINE, "ssim_to_source"] < df.loc[SYNTHETIC, "ssim_to_source"] - 0.1
    assert np.isnan(df.loc[REFERENCE, "ssim_to_source"])
    shuffled = evaluate_images(
        real, real_m, twins, real_m, fake_source=np.roll(source, 1), progress=False
    )
    assert shuffled.loc[SYNTHETIC, "ssim_to_source"] < 0.9  # the wrong sources do not match


def test_dice_reads_every_synthetic_image(sd):
    """Dice is a mean over images: it is read on all fakes, not on the half-sized draw the
    distances use. Half the fakes are blank (the perfect segmenter finds nothing where their
    masks say there is a lesion), so every draw but the whole set would miss 0.5."""
    real, real_m = lesions(sd, 12, seed=8)
    fake, fake_m = lesions(sd, 10, seed=9)
    fake = fake.copy()
    fake[::2] = -1.0  # blank images: Dice 0 against their (non-empty) masks

    def threshold(x):
        return (x > 0).float() * 20 - 10

    df = evaluate_images(real, real_m, fake, fake_m, seg_net=threshold, progress=False)
    assert df.loc[SYNTHETIC, "dice"] == pytest.approx(0.5, abs=1e-3)  # noise voxels, as above
