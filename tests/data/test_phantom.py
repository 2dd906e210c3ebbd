"""The phantom cohort: determinism, contract, and planted associations measured on images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics.data.cohort import validate_cohort
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.io import load_image
from radiogenomics.data.phantom import FEATURES, PROGRAMS, feature_effects, make_phantom
from radiogenomics.radiomap.features import lesion_feature_table


def test_deterministic_per_seed_and_prefix_stable(spatial_dims):
    a = make_phantom(12, spatial_dims, seed=3, progress=False)
    b = make_phantom(12, spatial_dims, seed=3, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.adata.X, b.adata.X)
    pd.testing.assert_frame_equal(a.adata.obs, b.adata.obs)
    # Patient i depends on (seed, i) only: a larger cohort extends a smaller one.
    c = make_phantom(20, spatial_dims, seed=3, progress=False)
    np.testing.assert_array_equal(a.images, c.images[:12])
    np.testing.assert_array_equal(a.adata.X, c.adata.X[:12])
    d = make_phantom(12, spatial_dims, seed=4, progress=False)
    assert not np.array_equal(a.images, d.images)


def test_shapes_and_contract(phantom, spatial_dims):
    size = 64 if spatial_dims == 2 else 32
    assert phantom.images.shape == (48, 1) + (size,) * spatial_dims
    assert phantom.images.min() >= 0 and phantom.images.max() <= 1
    assert set(np.unique(phantom.masks)) == {0, 1}
    assert (phantom.masks.reshape(48, -1).sum(1) > 10).all()
    adata = phantom.adata
    rg = adata.uns[K.UNS]
    assert rg[K.SPATIAL_DIMS] == spatial_dims
    assert rg[K.COVARIATES][K.CATEGORICAL] == {"sex": ["F", "M"], "subtype": ["A", "B", "C"]}
    assert list(rg[K.COVARIATES][K.NUMERIC]) == ["age"]
    truth = rg[K.PHANTOM]["truth_map"]
    assert truth.shape == (adata.n_vars, len(FEATURES))
    np.testing.assert_allclose(
        truth, rg[K.PHANTOM]["program_loadings"] @ feature_effects(), atol=1e-5
    )
    # Image-only patients have NaN expression; expression-only patients have no image.
    no_expr = ~adata.obs[K.HAS_EXPRESSION].to_numpy()
    no_img = ~adata.obs[K.HAS_IMAGE].to_numpy()
    assert no_expr.any() and no_img.any() and not (no_expr & no_img).any()
    assert np.isnan(adata.X[no_expr]).all() and np.isfinite(adata.X[~no_expr]).all()


def test_written_cohort_validates_and_keeps_truth(phantom, phantom_cohort, tmp_path):
    summary = validate_cohort(phantom_cohort, progress=False)
    assert summary["patients"] == 48
    assert summary["with_image"] == int(phantom.adata.obs[K.HAS_IMAGE].sum())
    assert summary["mask_labels"] == [0, 1]
    # Files hold exactly the rendered arrays.
    first = np.flatnonzero(phantom_cohort.obs[K.HAS_IMAGE])[0]
    image = load_image(
        f"{phantom_cohort.uns['rg']['root']}/{phantom_cohort.obs[K.IMAGE].iat[first]}"
    )
    np.testing.assert_array_equal(image, phantom.images[first])
    # h5ad round trip keeps the ground truth and per-patient programs.
    again = read_cohort(write_cohort(phantom_cohort, tmp_path / "copy.h5ad"))
    np.testing.assert_array_equal(
        again.uns["rg"]["phantom"]["truth_map"], phantom.adata.uns["rg"]["phantom"]["truth_map"]
    )
    pd.testing.assert_frame_equal(again.obsm[K.PROGRAMS], phantom.adata.obsm[K.PROGRAMS])
    assert validate_cohort(again, progress=False)["with_image"] == summary["with_image"]


def test_gene_blocks_follow_their_program():
    ph = make_phantom(300, 2, seed=1, progress=False)
    W = ph.adata.uns["rg"]["phantom"]["program_loadings"]
    z = ph.adata.obsm[K.PROGRAMS].to_numpy()
    X = ph.adata.X
    for p, name in enumerate(PROGRAMS):
        genes = np.flatnonzero(W[:, p])
        r = [np.corrcoef(X[:, g], z[:, p])[0, 1] * np.sign(W[g, p]) for g in genes]
        assert np.median(r) > 0.5, (
            f"program {name}: median signed gene correlation {np.median(r):.2f}"
        )
    # Subtype shifts programs: subtype A has larger 'size' than subtype C (planted +0.8 vs -0.8).
    sub = ph.adata.obs["subtype"].to_numpy()
    assert z[sub == "A", 0].mean() - z[sub == "C", 0].mean() > 1.0


@pytest.mark.parametrize("dims", [2, 3])
def test_planted_associations_measured_on_images(dims):
    """Regress each feature measured on the rendered images on all programs: the planted
    driver has the largest coefficient, with the planted sign; expression-only programs do not
    reach the images. Thresholds are on standardised coefficients (n=300)."""
    ph = make_phantom(300, dims, seed=2, progress=False)
    F = lesion_feature_table(ph.images, ph.masks)
    Z = ph.adata.obsm[K.PROGRAMS]
    Zs = ((Z - Z.mean()) / Z.std()).to_numpy()
    Fs = ((F - F.mean()) / F.std()).to_numpy()
    # programs x features
    coef = np.linalg.lstsq(np.c_[np.ones(len(Zs)), Zs], Fs, rcond=None)[0][1:]
    floor = 0.6 if dims == 2 else 0.4
    for j, feature in enumerate(FEATURES):
        col = coef[:, j]
        driver = PROGRAMS.index(feature)
        assert col[driver] > floor, f"{feature}: driver coefficient {col[driver]:.2f}"
        assert np.argmax(np.abs(col)) == driver, (
            f"{feature}: strongest program is {PROGRAMS[np.argmax(np.abs(col))]}"
        )
        for control in ("immune", "proliferation"):
            assert abs(col[PROGRAMS.index(control)]) < 0.15, f"{feature} leaks from {control}"
    # The planted cross-talk (larger lesions are more necrotic) shows up with its sign.
    assert coef[PROGRAMS.index("size"), FEATURES.index("necrosis")] > 0.15
