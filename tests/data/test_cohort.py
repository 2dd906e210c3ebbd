"""Paired cohorts: make_cohort, validate_cohort (errors name the culprit), check_covariates, h5ad."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics.data.cohort import (
    CohortError,
    check_covariates,
    covariate_keys,
    make_cohort,
    resolve,
    setup_cohort,
    split_cohort,
    validate_cohort,
)
from radiogenomics.data.h5ad import (
    read_cohort,
    read_valid_cohort,
    setup_h5ad,
    write_cohort,
    write_patients,
)
from radiogenomics.data.io import load_image, save_image

SHAPE = {2: (9, 7), 3: (9, 7, 6)}
GENES = ["TP53", "EGFR", "IDH1"]


def _image(spatial_dims=2, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (channels, *SHAPE[spatial_dims])).astype(np.float32)


def _mask(spatial_dims=2, value=1.0):
    mask = np.zeros((1, *SHAPE[spatial_dims]), np.float32)
    mask[(0, slice(2, 6), slice(1, 5)) + (slice(1, 4),) * (spatial_dims - 2)] = value
    return mask


def _write_pair(root: Path, pid: str, spatial_dims=2, ext="nii.gz", seed=0):
    """Write images/<pid>.<ext> and masks/<pid>.<ext>; return their paths relative to root."""
    image, mask = f"images/{pid}.{ext}", f"masks/{pid}.{ext}"
    save_image(_image(spatial_dims, seed=seed), root / image)
    save_image(_mask(spatial_dims), root / mask)
    return image, mask


def _expression(ids, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(5, 2, (len(ids), len(GENES))), index=ids, columns=GENES)


def _paired_cohort(root: Path, spatial_dims=2, n=4):
    """n paired patients with expression, image, mask and a categorical + a numeric covariate."""
    ids = [f"p{i}" for i in range(n)]
    rows = {pid: _write_pair(root, pid, spatial_dims, seed=i) for i, pid in enumerate(ids)}
    obs = pd.DataFrame(
        {
            K.IMAGE: [rows[p][0] for p in ids],
            K.MASK: [rows[p][1] for p in ids],
            "subtype": ["A", "B"] * (n // 2) + ["A"] * (n % 2),
            "age": np.linspace(40, 70, n),
        },
        index=ids,
    )
    adata = make_cohort(
        _expression(ids), obs, spatial_dims=spatial_dims, categorical=["subtype"], numeric=["age"]
    )
    adata.uns[K.UNS][K.ROOT] = str(root)
    return adata


def _problems(adata, **kwargs) -> str:
    with pytest.raises(CohortError) as info:
        validate_cohort(adata, progress=False, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# make_cohort / setup_cohort


def test_make_cohort_layout(tmp_path):
    adata = _paired_cohort(tmp_path, n=4)
    assert adata.shape == (4, 3)
    assert adata.X.dtype == np.float32
    assert list(adata.var_names) == GENES
    assert isinstance(adata.obs["subtype"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["subtype"].cat.categories) == ["A", "B"]
    assert adata.obs["age"].dtype == np.float64
    rg = adata.uns[K.UNS]
    assert rg[K.SPATIAL_DIMS] == 2
    assert rg[K.COVARIATES][K.CATEGORICAL] == {"subtype": ["A", "B"]}
    assert rg[K.COVARIATES][K.NUMERIC]["age"]["mean"] == pytest.approx(55.0)
    assert rg[K.COVARIATES][K.NUMERIC]["age"]["std"] == pytest.approx(
        np.std(np.linspace(40, 70, 4))
    )
    assert rg[K.PROVENANCE]["library"].startswith("radiogenomics ")
    assert covariate_keys(adata) == (["subtype"], ["age"])
    for flag in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        assert adata.obs[flag].dtype == bool and adata.obs[flag].all()


def test_make_cohort_adds_unpaired_patients_with_nan_rows():
    expr = _expression(["p1", "p2", "p3"])
    obs = pd.DataFrame({K.IMAGE: ["a.nii.gz", None], "sex": ["F", "M"]}, index=["p0", "p1"])
    adata = make_cohort(expr, obs, categorical=["sex"])
    assert list(adata.obs_names) == ["p0", "p1", "p2", "p3"]
    assert adata.obs[K.HAS_EXPRESSION].tolist() == [False, True, True, True]
    assert adata.obs[K.HAS_IMAGE].tolist() == [True, False, False, False]
    assert adata.obs[K.IMAGE].tolist() == ["a.nii.gz", "", "", ""]
    assert np.isnan(adata.X[0]).all()
    np.testing.assert_array_equal(adata.X[1:], expr.to_numpy(np.float32))
    # patients only in the expression table have no covariate value; the vocabulary ignores NaN
    assert adata.uns[K.UNS][K.COVARIATES][K.CATEGORICAL] == {"sex": ["F", "M"]}


def test_make_cohort_duplicate_patient_ids():
    obs = pd.DataFrame({"x": [1, 2, 3]}, index=["p1", "p2", "p1"])
    with pytest.raises(CohortError, match=r"duplicate patient table ids: \['p1'\]"):
        make_cohort(None, obs)
    expr = _expression(["p7", "p7", "p8"])
    with pytest.raises(CohortError, match=r"duplicate expression table patient ids: \['p7'\]"):
        make_cohort(expr, pd.DataFrame(index=["p7", "p8"]))


def test_make_cohort_duplicate_gene_names():
    expr = pd.DataFrame([[1.0, 2.0]], index=["p1"], columns=["EGFR", "EGFR"])
    with pytest.raises(CohortError, match=r"duplicate gene names: \['EGFR'\]"):
        make_cohort(expr, pd.DataFrame(index=["p1"]))


def test_make_cohort_non_numeric_genes():
    expr = _expression(["p1", "p2"])
    expr["EGFR"] = ["3.5", "high"]
    with pytest.raises(
        CohortError,
        match=r"non-numeric expression for gene\(s\) \['EGFR'\]: e\.g\. \{'EGFR': \['high'\]\}",
    ):
        make_cohort(expr, pd.DataFrame(index=["p1", "p2"]))


def test_setup_cohort_errors_name_the_covariate():
    obs = pd.DataFrame({"age": [50, "old", 60], "sex": ["F", "M", "F"]}, index=["p1", "p2", "p3"])
    with pytest.raises(
        CohortError,
        match=r"numeric covariate 'age' has non-numeric values for patient\(s\) \['p2'\]: \['old'\]",
    ):
        make_cohort(None, obs, numeric=["age"])
    with pytest.raises(CohortError, match=r"covariate column 'grade' not found in obs"):
        make_cohort(None, obs, categorical=["grade"])
    with pytest.raises(
        CohortError, match=r"covariate\(s\) \['sex'\] declared both categorical and numeric"
    ):
        make_cohort(None, obs, categorical=["sex"], numeric=["sex"])
    with pytest.raises(CohortError, match=r"spatial_dims must be 2 or 3; got 4"):
        make_cohort(None, obs, spatial_dims=4)


def test_setup_cohort_keeps_existing_setup_when_arguments_are_none():
    obs = pd.DataFrame({"sex": ["F", "M"], "age": [1.0, 3.0]}, index=["p1", "p2"])
    adata = make_cohort(
        None, obs, spatial_dims=3, categorical=["sex"], numeric=["age"], provenance={"source": "x"}
    )
    setup_cohort(adata)
    rg = adata.uns[K.UNS]
    assert rg[K.SPATIAL_DIMS] == 3
    assert rg[K.COVARIATES][K.CATEGORICAL] == {"sex": ["F", "M"]}
    assert rg[K.COVARIATES][K.NUMERIC] == {"age": {"mean": 2.0, "std": 1.0}}
    assert rg[K.PROVENANCE]["source"] == "x"


# ------------------------------------------------------------------------------------------
# validate_cohort: each problem names its culprit


def test_valid_paired_cohort_summary_and_setup(tmp_path):
    adata = _paired_cohort(tmp_path, n=4)
    summary = validate_cohort(adata, progress=False)
    assert summary["patients"] == 4
    assert summary["genes"] == 3
    assert summary["with_expression"] == summary["with_image"] == summary["with_mask"] == 4
    assert summary["paired"] == 4
    assert summary["spatial_dims"] == 2
    assert summary["image_size"] == [9, 7]
    assert summary["mask_labels"] == [0, 1]
    rg = adata.uns[K.UNS]
    assert rg[K.IMAGE_SIZE] == [9, 7]
    assert rg[K.CHANNELS] == 1
    assert rg["mask_labels"] == [0, 1]


def test_valid_3d_cohort(tmp_path):
    adata = _paired_cohort(tmp_path, spatial_dims=3, n=2)
    summary = validate_cohort(adata, progress=False)
    assert summary["image_size"] == [9, 7, 6]
    assert summary["spatial_dims"] == 3


def test_validate_needs_setup():
    adata = ad.AnnData(X=np.zeros((2, 2), np.float32))
    with pytest.raises(CohortError, match=r"cohort has no uns\['rg'\] setup"):
        validate_cohort(adata)


def test_validate_duplicate_patient_ids(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.obs_names = ["p0", "p1", "p0"]
    msg = _problems(adata, check_files=False)
    assert "duplicate patient ids: ['p0']" in msg


def test_validate_nan_and_inf_expression_names_patient_and_gene(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    adata.X[1, 2] = np.nan
    adata.X[2, 0] = np.inf
    msg = _problems(adata, check_files=False)
    assert "2 problem(s)" in msg
    assert "patient 'p1': expression of gene 'IDH1' is nan" in msg
    assert "patient 'p2': expression of gene 'TP53' is inf" in msg


def test_validate_missing_image_file(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    (tmp_path / "images" / "p2.nii.gz").unlink()
    msg = _problems(adata)
    assert "1 problem(s)" in msg
    assert re.search(r"patient 'p2', image .*images/p2\.nii\.gz: image file not found", msg), msg


def test_validate_unreadable_image_file(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    (tmp_path / "images" / "p1.nii.gz").write_bytes(b"\x00not a nifti\xff" * 30)
    msg = _problems(adata)
    assert re.search(r"patient 'p1', image .*images/p1\.nii\.gz: cannot read image file", msg), msg


def test_validate_image_mask_shape_mismatch_names_both_shapes(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    save_image(np.zeros((1, 8, 7), np.float32), tmp_path / "masks" / "p1.nii.gz")
    msg = _problems(adata)
    assert (
        "patient 'p1': image images/p1.nii.gz has spatial shape (9, 7) but mask masks/p1.nii.gz has (8, 7)"
        in msg
    )


@pytest.mark.parametrize("value", [0.5, -1.0, 2.0])
def test_validate_non_binary_mask(tmp_path, value):
    # the models read lesion = mask > 0.5: 0.5 would vanish, and a label 2 would merge with 1
    adata = _paired_cohort(tmp_path, n=2)
    save_image(_mask(value=value), tmp_path / "masks" / "p0.nii.gz")
    msg = _problems(adata)
    assert "patient 'p0': mask masks/p0.nii.gz is not binary (values [" in msg
    assert str(value) in msg


def test_validate_multi_label_mask_is_refused(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    mask = _mask(value=2.0)
    mask[0, 0, 0] = 1
    save_image(mask, tmp_path / "masks" / "p0.nii.gz")
    msg = _problems(adata)
    assert "patient 'p0': mask masks/p0.nii.gz is not binary (values [0.0, 1.0, 2.0])" in msg


def test_validate_accepts_0_255_masks(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    save_image(_mask(value=255.0).astype(np.uint8), tmp_path / "masks" / "p0.nii.gz")
    assert validate_cohort(adata, progress=False)["mask_labels"] == [0, 1, 255]


def test_validate_mask_labels_round_float_noise(tmp_path):
    # a float mask read back as 0.9999999 is label 1, not 0
    adata = _paired_cohort(tmp_path, n=1)
    save_image(_mask(value=np.float32(0.9999999)), tmp_path / "masks" / "p0.nii.gz")
    assert validate_cohort(adata, progress=False)["mask_labels"] == [0, 1]


def test_validate_multichannel_mask(tmp_path):
    adata = _paired_cohort(tmp_path, n=1)
    save_image(np.concatenate([_mask()] * 3), tmp_path / "masks" / "p0.nii.gz")
    msg = _problems(adata)
    assert "patient 'p0': mask masks/p0.nii.gz has 3 channels; a mask has one" in msg


def test_validate_images_with_different_channel_counts(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    save_image(_image(channels=3), tmp_path / "images" / "p2.nii.gz")
    msg = _problems(adata)
    # names the odd patient and its file, not only the counts
    assert (
        "patient 'p2': image images/p2.nii.gz has 3 channel(s) but the cohort's other images "
        "have 1 (images differ in channel count: {1: 2, 3: 1})"
    ) in msg
    assert "'p0'" not in msg and "'p1'" not in msg


def test_validate_wrong_spatial_dims(tmp_path):
    adata = _paired_cohort(tmp_path, spatial_dims=2, n=2)
    save_image(_image(spatial_dims=3), tmp_path / "images" / "p1.nii.gz")
    msg = _problems(adata)
    assert re.search(
        r"patient 'p1', image .*images/p1\.nii\.gz: .*shape \(9, 7, 6\) does not fit spatial_dims=2",
        msg,
    ), msg


def test_validate_2d_images_in_3d_cohort(tmp_path):
    adata = _paired_cohort(tmp_path, spatial_dims=2, n=2)
    adata.uns[K.UNS][K.SPATIAL_DIMS] = 3
    msg = _problems(adata)
    for pid in ("p0", "p1"):
        for col in ("image", "mask"):
            assert re.search(
                rf"patient '{pid}', {col} .*{pid}\.nii\.gz: shape \(9, 7\) does not fit spatial_dims=3",
                msg,
            ), msg


def test_validate_mask_without_image(tmp_path):
    adata = _paired_cohort(tmp_path, n=3)
    adata.obs.loc["p2", K.IMAGE] = ""
    setup_cohort(adata)
    assert adata.obs[K.HAS_IMAGE].tolist() == [True, True, False]
    assert adata.obs[K.HAS_MASK].tolist() == [True, True, True]
    msg = _problems(adata)
    assert "1 problem(s)" in msg
    assert "patient 'p2': has a mask but no image" in msg


def test_validate_covariate_outside_vocabulary_and_missing_column(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    adata.obs["subtype"] = pd.Categorical(["A", "C"])
    del adata.obs["age"]
    msg = _problems(adata, check_files=False)
    assert "covariate 'subtype' has values ['C'] outside its vocabulary ['A', 'B']" in msg
    assert "covariate column 'age' declared in uns['rg'] is missing from obs" in msg


def test_validate_reports_several_problems_at_once(tmp_path):
    adata = _paired_cohort(tmp_path, n=5)
    adata.X[0, 1] = np.nan
    (tmp_path / "images" / "p1.nii.gz").unlink()
    save_image(_mask(value=0.5), tmp_path / "masks" / "p2.nii.gz")
    save_image(np.zeros((1, 5, 5), np.float32), tmp_path / "masks" / "p3.nii.gz")
    adata.obs.loc["p4", K.IMAGE] = ""
    setup_cohort(adata)
    msg = _problems(adata)
    assert msg.startswith("cohort validation failed: 5 problem(s)")
    assert "patient 'p0': expression of gene 'EGFR' is nan" in msg
    assert "patient 'p1', image" in msg and "image file not found" in msg
    assert "patient 'p2': mask masks/p2.nii.gz is not binary" in msg
    assert (
        "patient 'p3': image images/p3.nii.gz has spatial shape (9, 7) but mask masks/p3.nii.gz has (5, 5)"
        in msg
    )
    assert "patient 'p4': has a mask but no image" in msg


def test_validate_caps_the_listed_problems():
    expr = pd.DataFrame(
        np.full((12, 2), np.nan), index=[f"p{i:02d}" for i in range(12)], columns=["g1", "g2"]
    )
    adata = make_cohort(expr, pd.DataFrame(index=expr.index))
    msg = _problems(adata)
    # 10 cells named, then a line with the count of all 24, which is past the listing cap
    assert msg.startswith("cohort validation failed: 11 problem(s)")
    assert msg.count("expression of gene") == 10
    assert "patient 'p00': expression of gene 'g1' is nan" in msg
    assert "p05" not in msg
    assert msg.endswith("... and 1 more")


def test_check_files_false_skips_files(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    (tmp_path / "images" / "p0.nii.gz").unlink()
    summary = validate_cohort(adata, check_files=False, progress=False)
    assert summary["with_image"] == 2
    assert "image_size" not in summary


def test_validate_with_explicit_root_and_absolute_paths(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    del adata.uns[K.UNS][K.ROOT]
    assert resolve(adata, "images/p0.nii.gz", tmp_path) == tmp_path / "images/p0.nii.gz"
    assert validate_cohort(adata, root=tmp_path, progress=False)["with_image"] == 2
    adata.obs[K.IMAGE] = [str(tmp_path / v) for v in adata.obs[K.IMAGE]]
    adata.obs[K.MASK] = [str(tmp_path / v) for v in adata.obs[K.MASK]]
    assert resolve(adata, adata.obs[K.IMAGE].iloc[0], "/elsewhere") == tmp_path / "images/p0.nii.gz"
    assert validate_cohort(adata, root="/elsewhere", progress=False)["with_mask"] == 2


# ------------------------------------------------------------------------------------------
# unpaired patients and single-modality cohorts are valid


def test_unpaired_patients_are_valid(tmp_path):
    paired = ["p0", "p1"]
    image_only = ["i0", "i1"]
    expression_only = ["e0"]
    rows = {pid: _write_pair(tmp_path, pid) for pid in paired + image_only}
    obs = pd.DataFrame(
        {
            K.IMAGE: [rows[p][0] for p in rows],
            K.MASK: [rows[p][1] if p != "i1" else "" for p in rows],
        },
        index=list(rows),
    )
    expr = _expression(paired + expression_only)
    adata = make_cohort(expr, obs)
    adata.uns[K.UNS][K.ROOT] = str(tmp_path)
    assert list(adata.obs_names) == paired + image_only + expression_only
    assert adata.obs[K.HAS_EXPRESSION].tolist() == [True, True, False, False, True]
    assert adata.obs[K.HAS_IMAGE].tolist() == [True, True, True, True, False]
    assert adata.obs[K.HAS_MASK].tolist() == [True, True, True, False, False]
    assert np.isnan(adata.X[2:4]).all()
    summary = validate_cohort(adata, progress=False)
    assert (
        summary["with_expression"],
        summary["with_image"],
        summary["with_mask"],
        summary["paired"],
    ) == (3, 4, 3, 2)


def test_gene_only_cohort_is_valid():
    expr = _expression(["p1", "p2", "p3"])
    obs = pd.DataFrame({"sex": ["F", "M", "F"]}, index=["p1", "p2", "p3"])
    adata = make_cohort(expr, obs, categorical=["sex"])
    assert K.IMAGE not in adata.obs.columns
    assert not adata.obs[K.HAS_IMAGE].any() and not adata.obs[K.HAS_MASK].any()
    summary = validate_cohort(adata, progress=False)
    assert summary == {
        "patients": 3,
        "genes": 3,
        "with_expression": 3,
        "with_image": 0,
        "with_mask": 0,
        "paired": 0,
        "spatial_dims": 2,
    }


def test_validate_derives_absent_flags(tmp_path):
    # a cohort written without the flags (an older GeneGAN sample, another tool) validates
    adata = _paired_cohort(tmp_path, n=2)
    adata.obs = adata.obs.drop(columns=[K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK])
    summary = validate_cohort(adata, progress=False)
    assert (summary["with_expression"], summary["with_image"], summary["paired"]) == (2, 2, 2)
    genes = make_cohort(_expression(["p1", "p2"]), pd.DataFrame(index=["p1", "p2"]))
    genes.obs = genes.obs.drop(columns=[K.HAS_IMAGE, K.HAS_MASK])
    assert validate_cohort(genes, progress=False)["with_image"] == 0
    path = write_cohort(genes, tmp_path / "genes.h5ad")  # and the writer writes them
    assert not read_cohort(path).obs[[K.HAS_IMAGE, K.HAS_MASK]].to_numpy().any()


def test_validate_flag_without_path(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    adata.obs[K.MASK] = ["", adata.obs[K.MASK].iat[1]]
    adata.obs[K.HAS_MASK] = True
    assert "patient(s) ['p0']: has_mask is True but no mask path" in _problems(adata)


def test_image_only_cohort_is_valid(tmp_path):
    rows = {pid: _write_pair(tmp_path, pid, spatial_dims=3) for pid in ["p1", "p2"]}
    obs = pd.DataFrame(
        {K.IMAGE: [r[0] for r in rows.values()], K.MASK: [r[1] for r in rows.values()]},
        index=list(rows),
    )
    adata = make_cohort(None, obs, spatial_dims=3)
    adata.uns[K.UNS][K.ROOT] = str(tmp_path)
    assert adata.shape == (2, 0)
    assert not adata.obs[K.HAS_EXPRESSION].any()
    summary = validate_cohort(adata, progress=False)
    assert summary["genes"] == 0 and summary["with_image"] == 2 and summary["paired"] == 0
    assert summary["image_size"] == [9, 7, 6]


# ------------------------------------------------------------------------------------------
# covariates at sampling time


@pytest.fixture
def covariate_cohort():
    obs = pd.DataFrame({"subtype": ["A", "B", "A"], "age": [40, 50, 60]}, index=["p1", "p2", "p3"])
    return make_cohort(None, obs, categorical=["subtype"], numeric=["age"])


def test_check_covariates_accepts_known_values(covariate_cohort):
    assert check_covariates(covariate_cohort, {"subtype": "B", "age": "55"}) == {
        "subtype": "B",
        "age": 55.0,
    }
    # also from uns or from uns["rg"]
    assert check_covariates(covariate_cohort.uns, {"age": 1}) == {"age": 1.0}
    assert check_covariates(covariate_cohort.uns[K.UNS], {"subtype": "A"}) == {"subtype": "A"}


def test_check_covariates_unseen_category(covariate_cohort):
    with pytest.raises(
        ValueError,
        match=r"covariate 'subtype' has no category 'C'; the cohort's categories are \['A', 'B'\]",
    ):
        check_covariates(covariate_cohort, {"subtype": "C"})


def test_check_covariates_unknown_key(covariate_cohort):
    with pytest.raises(
        ValueError,
        match=r"unknown covariate 'grade'; the cohort's covariates are \['subtype', 'age'\]",
    ):
        check_covariates(covariate_cohort, {"grade": 2})


def test_check_covariates_non_numeric_value(covariate_cohort):
    with pytest.raises(ValueError, match=r"numeric covariate 'age' needs a number; got 'old'"):
        check_covariates(covariate_cohort, {"age": "old"})


# ------------------------------------------------------------------------------------------
# h5ad


def _plain(value):
    """Nested uns values with numpy arrays/scalars as lists/Python scalars, for comparison."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _mixed_cohort(tmp_path):
    """Paired, image-only (NaN expression) and expression-only patients with covariates."""
    root = tmp_path / "data"
    rows = {pid: _write_pair(root, pid, seed=i) for i, pid in enumerate(["p0", "p1", "p2"])}
    obs = pd.DataFrame(
        {
            K.IMAGE: [r[0] for r in rows.values()],
            K.MASK: [r[1] for r in rows.values()],
            "subtype": pd.Categorical(["B", "A", "B"], categories=["B", "A", "Z"]),
            "age": [50, 61, 47],
        },
        index=list(rows),
    )
    expr = _expression(["p0", "p1", "e0"])
    adata = make_cohort(
        expr, obs, categorical=["subtype"], numeric=["age"], provenance={"source": "test"}
    )
    # e0 came from the expression table only: give it covariates, which every patient needs
    # (the statistics in uns stay those of setup).
    adata.obs.loc["e0", ["subtype", "age"]] = ["A", 58.0]
    adata.uns[K.UNS][K.ROOT] = str(root)
    validate_cohort(adata, progress=False)  # records image_size, channels, mask_labels
    return adata, root


def test_missing_covariate_names_patient(tmp_path):
    adata, _ = _mixed_cohort(tmp_path)
    adata.obs.loc["e0", "age"] = np.nan
    adata.obs.loc["p1", "subtype"] = np.nan
    with pytest.raises(CohortError, match=r"'age' is missing for patient\(s\) \['e0'\]") as err:
        validate_cohort(adata, progress=False)
    assert "'subtype' is missing for patient(s) ['p1']" in str(err.value)


def test_h5ad_round_trip(tmp_path):
    adata, root = _mixed_cohort(tmp_path)
    path = write_cohort(adata, root / "cohort.h5ad")
    assert path == root / "cohort.h5ad"
    back = read_cohort(path)
    np.testing.assert_array_equal(back.X, adata.X)  # NaN rows included
    assert np.isnan(back.X[2]).all()
    assert back.X.dtype == np.float32
    assert list(back.obs_names) == list(adata.obs_names)
    assert list(back.var_names) == GENES
    assert isinstance(back.obs["subtype"].dtype, pd.CategoricalDtype)
    assert list(back.obs["subtype"].cat.categories) == ["B", "A"]  # order kept, unused dropped
    assert back.obs["subtype"].iloc[:3].tolist() == ["B", "A", "B"]
    assert back.obs["subtype"].iloc[3] == "A"  # the expression-only patient's covariates kept
    np.testing.assert_array_equal(back.obs["age"].to_numpy(), adata.obs["age"].to_numpy())
    for flag in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        assert back.obs[flag].dtype == bool
        assert back.obs[flag].tolist() == adata.obs[flag].tolist()
    assert back.obs[K.HAS_EXPRESSION].tolist() == [True, True, False, True]
    # same folder: the paths are written as they were
    assert back.obs[K.IMAGE].astype(str).tolist() == adata.obs[K.IMAGE].tolist()
    # the whole setup; read_cohort adds the root (the h5ad's folder)
    assert back.uns[K.UNS][K.ROOT] == str(root.resolve())
    expected = {k: v for k, v in adata.uns[K.UNS].items() if k != K.ROOT}
    got = {k: v for k, v in back.uns[K.UNS].items() if k != K.ROOT}
    assert _plain(got) == _plain(expected)
    assert _plain(got[K.COVARIATES]) == {
        K.CATEGORICAL: {"subtype": ["B", "A"]},
        K.NUMERIC: {
            "age": {"mean": pytest.approx(52.666666), "std": pytest.approx(np.std([50, 61, 47]))}
        },
    }
    assert got[K.PROVENANCE]["source"] == "test"
    # the written cohort validates again
    assert validate_cohort(back, progress=False)["paired"] == 2
    # atomic: no temporary files beside it
    assert sorted(p.name for p in root.iterdir()) == ["cohort.h5ad", "images", "masks"]


def test_h5ad_in_another_folder_keeps_images_reachable(tmp_path):
    adata, root = _mixed_cohort(tmp_path)
    out = tmp_path / "elsewhere" / "deeper" / "cohort.h5ad"
    write_cohort(adata, out)
    # the input cohort is not modified
    assert adata.obs[K.IMAGE].tolist()[0] == "images/p0.nii.gz"
    assert adata.uns[K.UNS][K.ROOT] == str(root)
    back = read_cohort(out)
    assert back.uns[K.UNS][K.ROOT] == str(out.parent.resolve())
    for pid in ["p0", "p1", "p2"]:
        for col in (K.IMAGE, K.MASK):
            value = str(back.obs.loc[pid, col])
            assert not Path(value).is_absolute()  # still relative, so the pair stays relocatable
            assert resolve(back, value).resolve() == (root / adata.obs.loc[pid, col]).resolve()
        np.testing.assert_array_equal(
            load_image(resolve(back, back.obs.loc[pid, K.IMAGE]), 2), _image(seed=int(pid[1]))
        )
    assert validate_cohort(back, progress=False)["with_image"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["cohort.h5ad"]
    # a second hop, from the read cohort (its paths now relative to out.parent)
    again = read_cohort(write_cohort(back, tmp_path / "third" / "c.h5ad"))
    assert str(again.obs.loc["p1", K.MASK]) == "../data/masks/p1.nii.gz"
    assert validate_cohort(again, progress=False)["with_mask"] == 3


def test_write_cohort_failure_keeps_old_file(tmp_path, monkeypatch):
    adata, root = _mixed_cohort(tmp_path)
    path = write_cohort(adata, tmp_path / "cohort.h5ad")
    before = path.read_bytes()

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    adata.obs["age"] = 0.0
    with pytest.raises(OSError, match="disk full"):
        write_cohort(adata, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.h5ad", "data"]


def test_read_cohort_errors(tmp_path):
    missing = tmp_path / "nope.h5ad"
    with pytest.raises(
        FileNotFoundError, match=rf"cohort file not found: {re.escape(str(missing))}"
    ):
        read_cohort(missing)
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_bytes(b"not hdf5" * 10)
    with pytest.raises(ValueError, match=rf"cannot read cohort {re.escape(str(garbage))} as h5ad"):
        read_cohort(garbage)
    plain = tmp_path / "plain.h5ad"
    ad.AnnData(X=np.zeros((2, 2), np.float32)).write_h5ad(plain)
    with pytest.raises(CohortError, match=r"plain\.h5ad is an AnnData without uns\['rg'\]"):
        read_cohort(plain)


def test_read_plain_h5ad_says_the_setup_command(tmp_path):
    plain = tmp_path / "plain.h5ad"
    obs = pd.DataFrame(
        {"subtype": pd.Categorical(["A", "B"]), "age": [50.0, 60.0], "note": ["x", "y"]},
        index=["p0", "p1"],
    )
    ad.AnnData(X=np.zeros((2, 2), np.float32), obs=obs).write_h5ad(plain)
    with pytest.raises(CohortError) as info:
        read_cohort(plain)
    assert (
        f"`radiogenomics cohort setup {plain} --categorical subtype --numeric age "
        f"--out {tmp_path / 'plain_cohort.h5ad'}`"
    ) in str(info.value)


def test_setup_cohort_sparse_x_and_path_columns(tmp_path):
    """A scanpy-style AnnData: sparse float64 X, categorical obs, paths in columns of its own."""
    import scipy.sparse as sp

    image, mask = _write_pair(tmp_path, "p0")
    obs = pd.DataFrame(
        {"subtype": pd.Categorical(["A", "B"]), "scan": [image, ""], "seg": [mask, ""]},
        index=["p0", "p1"],
    )
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=GENES))
    adata.write_h5ad(tmp_path / "plain.h5ad")
    back = setup_h5ad(
        tmp_path / "plain.h5ad", categorical=["subtype"], image_key="scan", mask_key="seg"
    )
    for cohort in (
        back,
        setup_cohort(adata, categorical=["subtype"], image_key="scan", mask_key="seg"),
    ):
        assert isinstance(cohort.X, np.ndarray) and cohort.X.dtype == np.float32
        assert cohort.obs[K.HAS_EXPRESSION].tolist() == [True, True]
        assert cohort.obs[K.IMAGE].tolist() == [image, ""]
        assert cohort.obs[K.HAS_MASK].tolist() == [True, False]
    # relative paths resolve against the h5ad's folder
    summary = validate_cohort(back, progress=False)
    assert summary["with_image"] == 1 and summary["image_size"] == list(SHAPE[2])
    with pytest.raises(CohortError, match=r"image column 'scan_path' not found in obs"):
        setup_cohort(adata, image_key="scan_path")


def test_write_keeps_paths_of_a_cohort_built_in_memory(tmp_path, monkeypatch):
    """No root recorded: relative paths mean the working folder, and stay valid after writing."""
    monkeypatch.chdir(tmp_path)
    image, mask = _write_pair(tmp_path / "img", "p0", seed=0)
    obs = pd.DataFrame({K.IMAGE: [f"img/{image}"], K.MASK: [f"img/{mask}"]}, index=["p0"])
    adata = make_cohort(None, obs)
    validate_cohort(adata, progress=False)
    back = read_cohort(write_cohort(adata, tmp_path / "sub" / "c.h5ad"))
    assert back.obs[K.IMAGE].iat[0] == f"../img/{image}"
    assert validate_cohort(back, progress=False)["with_image"] == 1


def test_split_by_group_keeps_groups_whole():
    ids = [f"p{i:02d}" for i in range(40)]
    expr = pd.DataFrame(np.zeros((40, 3)), index=ids, columns=GENES)
    # 16 women with 1-4 rows each (lesions, left and right films)
    obs = pd.DataFrame(
        {"woman": [f"w{i % 16}" for i in range(40)], "grade": ["G2", "G3"] * 20}, index=ids
    )
    adata = make_cohort(expr, obs, categorical=["grade"])
    for stratify in (None, "grade"):
        train, test = split_cohort(adata, 0.25, group="woman", stratify=stratify, seed=3)
        assert not set(train.obs["woman"]) & set(test.obs["woman"])
        assert sorted([*train.obs_names, *test.obs_names]) == ids
        assert 5 <= test.n_obs <= 15
    # the larger side can be the test side too
    train, test = split_cohort(adata, 0.75, group="woman", stratify="grade", seed=3)
    assert test.n_obs > train.n_obs and not set(train.obs["woman"]) & set(test.obs["woman"])
    # a row split puts some woman on both sides
    train, test = split_cohort(adata, 0.25, seed=3)
    assert set(train.obs["woman"]) & set(test.obs["woman"])
    with pytest.raises(ValueError, match="group column 'subject' not in obs"):
        split_cohort(adata, 0.25, group="subject")
    with pytest.raises(ValueError, match="stratify column 'stage' not in obs"):
        split_cohort(adata, 0.25, stratify="stage")
    adata.obs.loc["p03", "woman"] = None
    with pytest.raises(ValueError, match=r"group column 'woman' is missing for patients \['p03'\]"):
        split_cohort(adata, 0.25, group="woman")


# ------------------------------------------------------------------------------------------
# reading through validation; writing in-memory patients


def test_read_valid_cohort_refuses_with_the_file_named(tmp_path):
    adata = _paired_cohort(tmp_path, n=2)
    path = write_cohort(adata, tmp_path / "c.h5ad")
    assert read_valid_cohort(path).uns["rg"]["image_size"] == [9, 7]  # recorded for the models
    save_image(_mask(value=0.5), tmp_path / "masks" / "p1.nii.gz")
    with pytest.raises(CohortError) as info:
        read_valid_cohort(path)
    assert str(info.value).startswith(f"{path}: cohort validation failed: 1 problem(s)")
    assert "patient 'p1': mask masks/p1.nii.gz is not binary" in str(info.value)


def _patients(ids):
    n = len(ids)
    cohort = make_cohort(_expression(ids), pd.DataFrame(index=ids))
    cohort.obs[K.HAS_IMAGE] = True
    images = np.stack([_image(seed=i) for i in range(n)])
    masks = np.stack([_mask()] * n).astype(np.uint8)
    return cohort, images, masks


def test_write_patients_keeps_files_inside_and_apart_whatever_the_ids(tmp_path):
    ids = ["../../x", "a/b", "a_b", "A_B", "..", ""]
    cohort, images, masks = _patients(ids)
    path = write_patients(cohort, images, masks, tmp_path / "out", progress=False)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all(f.parts[0] == "out" for f in files)  # nothing written outside the folder
    back = read_valid_cohort(path)
    assert list(back.obs_names) == ids  # the real ids stay the ids
    assert back.obs[K.IMAGE].nunique() == len(ids) and back.obs[K.MASK].nunique() == len(ids)
    assert {p.name.lower() for p in (tmp_path / "out" / "images").iterdir()}.__len__() == len(ids)
    for i, pid in enumerate(ids):  # each patient reads back its own image
        image = load_image(tmp_path / "out" / back.obs[K.IMAGE].iat[i])
        np.testing.assert_allclose(image, images[i], rtol=1e-6, err_msg=pid)


def test_write_patients_replaces_a_folder_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "synth"
    cohort, images, masks = _patients(["p0", "p1"])
    write_patients(cohort, images, masks, out, progress=False)
    with pytest.raises(ValueError, match="is not empty; pass --overwrite"):
        write_patients(cohort, images, masks, out, progress=False)
    # a write that dies half way leaves the old cohort whole and no new file beside it
    import radiogenomics.data.io as io

    real_save, calls = io.save_image, []

    def dying_save(array, path, *args):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(array, path, *args)

    monkeypatch.setattr(io, "save_image", dying_save)
    other, _, _ = _patients(["q0", "q1"])
    with pytest.raises(KeyboardInterrupt):
        write_patients(other, images, masks, out, progress=False, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary left
    assert sorted(p.name for p in (out / "images").iterdir()) == ["p0.nii.gz", "p1.nii.gz"]
    assert list(read_valid_cohort(out / "cohort.h5ad").obs_names) == ["p0", "p1"]
    write_patients(other, images, masks, out, progress=False, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["q0.nii.gz", "q1.nii.gz"]
    assert list(read_valid_cohort(out / "cohort.h5ad").obs_names) == ["q0", "q1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_write_patients_never_replaces_what_is_not_a_cohort(tmp_path):
    cohort, images, masks = _patients(["p0"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a cohort folder"):
        write_patients(cohort, images, masks, tmp_path / "notes", progress=False, overwrite=True)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        write_patients(cohort, images, masks, tmp_path / "file.txt", progress=False, overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert (tmp_path / "file.txt").read_text() == "mine"
