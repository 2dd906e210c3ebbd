"""Map features (radiomap.features) against analytic shapes, 2D and 3D, and on a cohort."""

from __future__ import annotations

import numpy as np
import pytest

from radiogenomics.radiomap.features import (
    IMAGE_FEATURES,
    image_feature_batch,
    image_feature_table,
    image_features,
)

N = {2: 64, 3: 40}


def _grid(d):
    return np.stack(np.meshgrid(*[np.arange(N[d]) - N[d] / 2 + 0.5] * d, indexing="ij"), -1)


def ellipsoid(d, axes):
    """A mask `(1, *spatial)` of the ellipse/ellipsoid with semi-axes `axes` (voxels)."""
    return (((_grid(d) / np.asarray(axes, float)) ** 2).sum(-1) <= 1)[None].astype(np.uint8)


def star(d, radius, amplitude=0.35, waves=7):
    g = _grid(d)
    r = np.linalg.norm(g, axis=-1)
    theta = np.arctan2(g[..., 1], g[..., 0])
    bump = (
        np.cos(waves * theta)
        if d == 2
        else np.cos(waves * theta)
        * np.sin(np.arccos(np.clip(g[..., 2] / np.maximum(r, 1e-9), -1, 1)))
    )
    return (r <= radius * (1 + amplitude * bump))[None].astype(np.uint8)


def _image(mask, inside=0.5, outside=-0.5):
    return np.where(mask > 0, inside, outside).astype(np.float32)


@pytest.mark.parametrize("d", [2, 3])
def test_round_lesion(d):
    r = 12 if d == 2 else 10
    m = ellipsoid(d, [r] * d)
    f = image_features(_image(m), m)
    assert set(f) == set(IMAGE_FEATURES)
    exact = np.pi * r**2 if d == 2 else 4 / 3 * np.pi * r**3
    assert f["shape_volume"] == pytest.approx(exact, rel=0.03)
    assert f["shape_axis_ratio"] == pytest.approx(1.0, abs=0.02)
    assert f["shape_elongation"] == pytest.approx(1.0, abs=0.02)
    assert f["shape_radius_cv"] < 0.03  # staircase only
    assert abs(f["shape_margin"]) < 0.06
    assert f["shape_solidity"] > (0.9 if d == 2 else 0.8)
    # two flat regions: lesion 0.5, ring -0.5
    assert f["contrast"] == pytest.approx(1.0, abs=1e-6)
    assert f["ring_mean"] == pytest.approx(-0.5, abs=1e-6) and f["ring_std"] < 1e-6
    assert f["firstorder_mean"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("d", [2, 3])
def test_ellipse_axis_ratio(d):
    axes = [16, 8] if d == 2 else [15, 7.5, 7.5]
    m = ellipsoid(d, axes)
    f = image_features(_image(m), m)
    assert f["shape_axis_ratio"] == pytest.approx(2.0, rel=0.04)
    assert f["shape_elongation"] == pytest.approx(0.5, rel=0.04)
    assert f["shape_radius_cv"] > 0.15  # the radius runs from 8 to 16
    assert abs(f["shape_margin"]) < 0.06  # convex


@pytest.mark.parametrize("d", [2, 3])
def test_star_margin_against_disk(d):
    r = 12 if d == 2 else 10
    disk, spiky = ellipsoid(d, [r] * d), star(d, r)
    fd = image_features(_image(disk), disk)
    fs = image_features(_image(spiky), spiky)
    assert fs["shape_radius_cv"] > 0.1 > 3 * fd["shape_radius_cv"]
    assert fs["shape_margin"] > 0.1 > abs(fd["shape_margin"])
    assert fs["shape_solidity"] < fd["shape_solidity"] - 0.1
    assert fs["shape_axis_ratio"] < 1.15  # symmetric spikes do not elongate it


def test_intensity_moments_and_ring_width():
    rng = np.random.default_rng(0)
    m = ellipsoid(2, [12, 12])
    img = rng.normal(0, 0.1, m.shape).astype(np.float32)
    f = image_features(img, m)
    inside = img[m > 0]
    assert f["firstorder_std"] == pytest.approx(inside.std(), rel=1e-6)
    assert f["firstorder_p10"] == pytest.approx(np.percentile(inside, 10), rel=1e-6)
    # the ring is the 3-voxel band outside the mask
    from scipy import ndimage

    ring = ndimage.binary_dilation(m[0] > 0, iterations=3) & ~(m[0] > 0)
    assert f["ring_mean"] == pytest.approx(img[0][ring].mean(), rel=1e-6)


def test_empty_and_tiny_masks_give_nan():
    img = np.zeros((1, 16, 16), np.float32)
    f = image_features(img, np.zeros((1, 16, 16)))
    assert np.isnan(list(f.values())).all()
    tiny = np.zeros((1, 16, 16))
    tiny[0, 8, 8:10] = 1
    f = image_features(img, tiny)
    assert np.isnan(f["shape_margin"]) and np.isfinite(f["ring_mean"])


def test_batch_checks_shapes():
    with pytest.raises(ValueError, match="masks"):
        image_feature_batch(np.zeros((2, 1, 8, 8)), np.zeros((2, 8, 8)))


def test_cohort_table_indexed_by_patient(phantom_cohort, spatial_dims):
    table = image_feature_table(phantom_cohort, progress=False)
    with_image = phantom_cohort.obs["has_image"] & phantom_cohort.obs["has_mask"]
    assert list(table.index) == list(phantom_cohort.obs_names[with_image.to_numpy(bool)])
    assert list(table.columns) == list(IMAGE_FEATURES)
    assert np.isfinite(table.to_numpy()).all()
    # phantom lesions are brighter than their surroundings
    assert (table["contrast"] > 0).mean() > 0.9
