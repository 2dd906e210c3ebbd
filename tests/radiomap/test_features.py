"""Map features (radiomap.features) against analytic shapes, 2D and 3D, and on a cohort."""

from __future__ import annotations

import numpy as np
import pytest

from radiogenomics.radiomap.definitions import IMAGE_FEATURES
from radiogenomics.radiomap.features import (
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


def _odd_lesions(d):
    """Lesions that exercise the edge cases: empty, 1 and 2 voxels (no shape), 3 voxels apart
    (no GLCM pair), touching the image edge, flat, 2 channels."""
    n = N[d]
    rng = np.random.default_rng(3)
    masks = np.zeros((7, 1, *[n] * d), np.uint8)
    masks[1, 0][(5,) * d] = 1
    masks[2, 0][(5,) * (d - 1) + (slice(5, 7),)] = 1
    masks[3, 0][(9,) * (d - 1) + (slice(4, 13, 4),)] = 1
    masks[4] = ellipsoid(d, [8] * d)
    masks[4, 0][(slice(0, 6),) * d] = 1  # a corner block on the image's edge
    masks[5] = star(d, 9)
    masks[6] = ellipsoid(d, [10, 6] + [5] * (d - 2))
    images = np.clip(rng.normal(0, 0.5, (7, 2, *[n] * d)), -1.2, 1.2).astype(np.float32)
    images[5] = 0.25  # flat: zero skewness and kurtosis
    return images, masks


# lesion_features (the per-lesion necrosis) asks skimage for the solidity of 3 scattered voxels
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Failed to get convex hull image:UserWarning")
@pytest.mark.parametrize("d", [2, 3])
def test_batched_features_equal_the_per_lesion_ones(d):
    """The batched path (radiomap.batched) against `image_features` lesion by lesion, on
    phantom lesions and the odd ones above: the same NaN, the same values within 1e-6
    (relative or absolute; measured: 2D <= 6e-13 relative; 3D's surface differs by <= 2e-7
    relative, being a float64 sum where skimage sums the mesh's triangles in float32, and the
    features made from it (surface/volume, sphericity, margin) by <= 3e-7 absolute)."""
    from radiogenomics.data.phantom import make_phantom

    ph = make_phantom(12, d, seed=1, progress=False)
    odd_images, odd_masks = _odd_lesions(d)
    for images, masks in ((ph.images, ph.masks), (odd_images, odd_masks)):
        fast = image_feature_batch(images, masks)
        slow = image_feature_batch(images, masks, reference=True)
        np.testing.assert_array_equal(fast.isna().to_numpy(), slow.isna().to_numpy())
        np.testing.assert_allclose(fast.to_numpy(), slow.to_numpy(), rtol=1e-6, atol=1e-6)
    # the odd lesions do reach the special cases
    assert fast.iloc[0].isna().all() and fast.iloc[1:3]["shape_volume"].isna().all()
    assert np.isfinite(fast.iloc[1]["ring_mean"]) and np.isnan(fast.iloc[3]["glcm_contrast"])
    assert fast.iloc[5]["firstorder_skewness"] == 0 and fast.iloc[5]["firstorder_kurtosis"] == 0


def test_batched_surface_equals_marching_cubes_on_random_volumes():
    """The 3D surface as a sum of per-cube areas equals skimage's marching-cubes mesh area on
    random binary volumes (every ambiguous cube configuration occurs), within 1e-6 relative."""
    from skimage.measure import marching_cubes, mesh_surface_area

    from radiogenomics.radiomap.batched import _surfaces

    rng = np.random.default_rng(0)
    masks = rng.random((4, 10, 11, 12)) < np.array([0.2, 0.4, 0.6, 0.8])[:, None, None, None]
    for mask, area in zip(masks, _surfaces(masks), strict=True):
        verts, faces, *_ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
        assert area == pytest.approx(mesh_surface_area(verts, faces), rel=1e-6)


def _pyradiomics(image, mask):
    """pyradiomics' first-order, shape and GLCM features of one lesion, set up as ours:
    32 bins of width 2/32 (pyradiomics starts its bins at a multiple of the width, so they
    fall on our fixed [-1, 1] edges), GLCM at distance 1 in the plane of our first two spatial
    axes (`force2D` along pyradiomics' first axis, to which our last axis is moved), symmetric,
    averaged over directions; a 2D lesion is a one-slice volume with `shape2D`."""
    import logging

    import radiomics
    import SimpleITK as sitk
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    d = image.ndim
    volume = image[None] if d == 2 else np.moveaxis(image, -1, 0)
    label = (mask[None] if d == 2 else np.moveaxis(mask, -1, 0)).astype(np.uint8)
    extractor = featureextractor.RadiomicsFeatureExtractor(
        binWidth=2 / 32, force2D=True, force2Ddimension=0, additionalInfo=False
    )
    extractor.disableAllFeatures()
    glcm = ["Contrast", "Idm", "JointEnergy", "Correlation", "DifferenceAverage"]
    shape = "shape2D" if d == 2 else "shape"
    extractor.enableFeaturesByName(firstorder=[], glcm=glcm, **{shape: []})
    out = extractor.execute(sitk.GetImageFromArray(volume), sitk.GetImageFromArray(label))
    return {k.removeprefix("original_").replace(shape, "shape"): float(v) for k, v in out.items()}


def test_radiomic_features_agree_with_pyradiomics():
    """Our radiomic features against pyradiomics (the optional `radiomics` extra) on noisy
    synthetic lesions in 2D and 3D: a disk or ball, an ellipse or ellipsoid, a star.

    Same definitions, within 1e-9 relative (measured <= 1e-13): first-order mean, variance
    (our std squared), skewness, kurtosis (ours is excess kurtosis: pyradiomics' minus 3),
    energy (sum of squares; voxelArrayShift 0), entropy (bits, the same 32 bins), p10, p90,
    range; volume (voxel or pixel count); elongation (sqrt of the second over the largest
    eigenvalue of the coordinate covariance); GLCM contrast, homogeneity (pyradiomics' Idm),
    correlation and dissimilarity (DifferenceAverage).
    Different definitions, with looser tolerances and why:
    - 3D surface: both are marching-cubes meshes through the voxel edges' midpoints; skimage
      sums the triangles in float32 (1e-6 relative for the ball and ellipsoid, measured ~1e-7),
      and the star's saddle-shaped cubes are cut differently (Lewiner's topology tests against
      pyradiomics' own case table): 1e-2 (measured 0.25%);
    - 3D sphericity: ours takes the voxel count as the volume, pyradiomics the mesh's volume
      (smaller by about half a voxel layer; the two sphericities differ by 0.4-1.1%): ours
      times (mesh volume / voxel count)^(2/3) times (our area / theirs) equals pyradiomics'
      within 1e-6;
    - 2D perimeter: ours is skimage's weighted count of border pixels, pyradiomics the length
      of the marching-squares contour: 6% (ours shorter by 1.9-4.6%); 2D sphericity is not
      compared (ours is the circularity 4 pi A / P^2 of the pixel count, pyradiomics'
      2 sqrt(pi A) / P of the contour's area);
    - GLCM energy: ours averages sqrt(ASM) over directions, pyradiomics' JointEnergy averages
      the ASM: ours squared is at most theirs, and within 0.2% (measured 2e-5 to 1.4e-3).
    """
    pytest.importorskip("radiomics")
    pytest.importorskip("SimpleITK")
    from radiogenomics.radiomap.features import radiomic_features

    rng = np.random.default_rng(0)
    same = {
        "firstorder_mean": "firstorder_Mean",
        "firstorder_skewness": "firstorder_Skewness",
        "firstorder_energy": "firstorder_Energy",
        "firstorder_entropy": "firstorder_Entropy",
        "firstorder_p10": "firstorder_10Percentile",
        "firstorder_p90": "firstorder_90Percentile",
        "firstorder_range": "firstorder_Range",
        "shape_elongation": "shape_Elongation",
        "glcm_contrast": "glcm_Contrast",
        "glcm_homogeneity": "glcm_Idm",
        "glcm_correlation": "glcm_Correlation",
        "glcm_dissimilarity": "glcm_DifferenceAverage",
    }
    for d in (2, 3):
        r = 12 if d == 2 else 9
        shapes = {
            "round": ellipsoid(d, [r] * d),
            "elongated": ellipsoid(d, [r, r / 2] + [r / 2] * (d - 2)),
            "star": star(d, r),
        }
        for kind, m in shapes.items():
            ramp = _grid(d)[..., 0] / N[d]
            image = np.clip(0.2 + 0.3 * rng.standard_normal(m.shape[1:]) + 0.2 * ramp, -0.99, 0.99)
            ours = radiomic_features(image[None], m)
            theirs = _pyradiomics(image, m[0] > 0)
            for name, key in same.items():
                assert ours[name] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), (d, name)
            assert ours["firstorder_std"] ** 2 == pytest.approx(theirs["firstorder_Variance"])
            assert ours["firstorder_kurtosis"] + 3 == pytest.approx(
                theirs["firstorder_Kurtosis"], rel=1e-9
            )
            # the square of a mean of square roots is at most the mean
            joint = theirs["glcm_JointEnergy"]
            assert joint * (1 - 2e-3) < ours["glcm_energy"] ** 2 <= joint * (1 + 1e-12)
            if d == 2:
                assert ours["shape_volume"] == theirs["shape_PixelSurface"]
                assert ours["shape_surface"] == pytest.approx(theirs["shape_Perimeter"], rel=0.06)
            else:
                assert ours["shape_volume"] == theirs["shape_VoxelVolume"]
                area = ours["shape_surface"] / theirs["shape_SurfaceArea"]
                assert area == pytest.approx(1, abs=1e-2 if kind == "star" else 1e-6)
                # the same formula once ours takes the mesh's volume and pyradiomics' area
                mesh = (theirs["shape_MeshVolume"] / ours["shape_volume"]) ** (2 / 3)
                assert ours["shape_sphericity"] * mesh * area == pytest.approx(
                    theirs["shape_Sphericity"], rel=1e-6
                )


def test_features_do_not_import_pyradiomics():
    """pyradiomics is an optional extra: the feature modules run without it."""
    import subprocess
    import sys

    code = (
        "import sys, radiogenomics.radiomap.features, radiogenomics.radiomap.batched; "
        "assert 'radiomics' not in sys.modules and 'SimpleITK' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
