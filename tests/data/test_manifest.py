"""Manifests (YAML and CSV) -> build_cohort -> validate_cohort, in every image format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from radiogenomics import _keys as K
from radiogenomics.data.cohort import CohortError, resolve, validate_cohort
from radiogenomics.data.io import load_image, save_image
from radiogenomics.data.manifest import build_cohort, load_manifest

SHAPE = {2: (9, 7), 3: (9, 7, 6)}
GENES = ["TP53", "EGFR", "IDH1", "MGMT"]
EXPR_IDS = ["P-001", "P-002", "P-003", "P-004"]
IMAGE_IDS = ["P-001", "P-002", "P-003", "P-005"]  # P-004 has no image, P-005 no expression
ALL_IDS = ["P-001", "P-002", "P-003", "P-004", "P-005"]

# (format, spatial_dims) -> file suffix ('' for a DICOM series folder)
FORMATS = {
    ("nii.gz", 2): ".nii.gz",
    ("nii.gz", 3): ".nii.gz",
    ("nii", 3): ".nii",
    ("npy", 2): ".npy",
    ("npy", 3): ".npy",
    ("png", 2): ".png",
    ("tif", 2): ".tif",
    ("dcm", 2): ".dcm",
    ("dicom", 3): "",
}


def _arrays(fmt: str, spatial_dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (1, *SHAPE[spatial_dims])
    if fmt in ("png", "tif"):
        image = rng.integers(0, 256, shape).astype(np.uint8)
    else:
        image = rng.normal(100.0, 20.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8 if fmt in ("png", "tif") else np.float32)
    mask[(0, slice(2, 2 + seed % 3 + 2), slice(1, 5)) + (slice(1, 4),) * (spatial_dims - 2)] = 1
    return image, mask


def _write_images(root: Path, fmt: str, spatial_dims: int, ids=IMAGE_IDS) -> dict:
    """images/<id><suffix> and masks/<id><suffix> under root; {id: (image rel, mask rel, image, mask)}."""
    suffix = FORMATS[(fmt, spatial_dims)]
    out = {}
    for seed, pid in enumerate(ids):
        image, mask = _arrays(fmt, spatial_dims, seed)
        rel_image, rel_mask = f"images/{pid}{suffix}", f"masks/{pid}{suffix}"
        save_image(image, root / rel_image)
        save_image(mask, root / rel_mask)
        out[pid] = (rel_image, rel_mask, image, mask)
    return out


def _expression_table(ids=EXPR_IDS) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    values = np.round(rng.normal(5.0, 2.0, (len(ids), len(GENES))), 4)
    return pd.DataFrame(values, index=pd.Index(ids, name="sample"), columns=GENES)


def _clinical_table(ids=ALL_IDS) -> pd.DataFrame:
    """Clinical table with ids written with underscores (joined through id_replace)."""
    n = len(ids)
    return pd.DataFrame(
        {
            "patient_id": [i.replace("-", "_") for i in ids],
            "sex": (["F", "M"] * n)[:n],
            "age": [40 + 5 * k for k in range(n)],
            "grade": (["II", "III", "IV"] * n)[:n],
        }
    )


def _write_yaml(path: Path, manifest: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def _tables_manifest(tmp_path: Path, fmt: str, spatial_dims: int) -> tuple[Path, dict]:
    """Expression CSV (samples x genes), clinical CSV with id_replace, image table CSV."""
    images = _write_images(tmp_path, fmt, spatial_dims)
    (tmp_path / "tables").mkdir()
    _expression_table().to_csv(tmp_path / "tables" / "expr.csv")
    _clinical_table().to_csv(tmp_path / "tables" / "clinical.csv", index=False)
    pd.DataFrame(
        {
            "id": list(images),
            "image": [v[0] for v in images.values()],
            "mask": [v[1] for v in images.values()],
        }
    ).to_csv(tmp_path / "tables" / "images.csv", index=False)
    manifest = _write_yaml(
        tmp_path / "manifests" / "cohort.yaml",
        {
            "name": f"test-{fmt}-{spatial_dims}d",
            "root": "..",  # relative to the manifest's folder
            "spatial_dims": spatial_dims,
            "expression": {"path": "tables/expr.csv", "orientation": "samples_x_genes"},
            "clinical": {
                "path": "tables/clinical.csv",
                "id_column": "patient_id",
                "id_replace": {"_": "-"},
            },
            "images": {
                "table": "tables/images.csv",
                "id_column": "id",
                "image": "image",
                "mask": "mask",
            },
            "covariates": {"categorical": ["sex", "grade"], "numeric": ["age"]},
            "patients": "union",
        },
    )
    return manifest, images


def _template_manifest(tmp_path: Path, fmt: str, spatial_dims: int) -> tuple[Path, dict]:
    """Genes x samples TSV with a covariate row and sample barcodes (id_regex), {id} templates."""
    images = _write_images(tmp_path, fmt, spatial_dims)
    expr = _expression_table().T.astype(object)
    expr.columns = [f"{c}-01A" for c in expr.columns]  # sample barcodes; the patient is the prefix
    subtype = pd.DataFrame(
        [["classical", "mesenchymal", "classical", "neural"]],
        index=["subtype"],
        columns=expr.columns,
    )
    table = pd.concat([subtype, expr])
    table.index.name = "gene"
    table.to_csv(tmp_path / "expr.tsv", sep="\t")
    suffix = FORMATS[(fmt, spatial_dims)]
    manifest = _write_yaml(
        tmp_path / "cohort.yaml",
        {
            "spatial_dims": spatial_dims,
            "expression": {
                "path": "expr.tsv",
                "orientation": "genes_x_samples",
                "covariate_rows": {"subtype": "subtype"},
                "id_regex": r"^(P-\d{3})",
            },
            "images": {"image": f"images/{{id}}{suffix}", "mask": f"masks/{{id}}{suffix}"},
            "covariates": {"categorical": ["subtype"]},
        },
    )
    return manifest, images


def _assert_images_equal(adata, images: dict, fmt: str, spatial_dims: int) -> int:
    """Loaded images and masks of the cohort's patients equal the written ones; returns the count."""
    checked = 0
    for pid, (rel_image, rel_mask, image, mask) in images.items():
        if pid not in adata.obs_names:
            continue
        checked += 1
        assert adata.obs.loc[pid, K.IMAGE] == rel_image
        assert adata.obs.loc[pid, K.MASK] == rel_mask
        got_image = load_image(resolve(adata, rel_image), spatial_dims)
        got_mask = load_image(resolve(adata, rel_mask), spatial_dims)
        assert got_image.shape == image.shape
        if fmt in ("dcm", "dicom"):  # 16-bit with rescale slope: within one quantisation step
            step = float(image.max() - image.min()) / 65535
            assert np.abs(got_image - image).max() <= step
            assert np.abs(got_mask - mask).max() <= 1 / 65535
        else:
            np.testing.assert_array_equal(got_image, image)
            np.testing.assert_array_equal(got_mask, mask)
    return checked


CASES = [pytest.param(fmt, sd, id=f"{fmt}-{sd}d") for (fmt, sd) in FORMATS]


@pytest.mark.parametrize("fmt, spatial_dims", CASES)
def test_yaml_manifest_with_tables(tmp_path, fmt, spatial_dims):
    manifest, images = _tables_manifest(tmp_path, fmt, spatial_dims)
    adata = build_cohort(manifest)
    assert Path(adata.uns[K.UNS][K.ROOT]) == tmp_path.resolve()
    assert list(adata.obs_names) == ALL_IDS
    assert list(adata.var_names) == GENES
    assert adata.obs[K.HAS_EXPRESSION].tolist() == [True, True, True, True, False]
    assert adata.obs[K.HAS_IMAGE].tolist() == [True, True, True, False, True]
    assert adata.obs[K.HAS_MASK].tolist() == [True, True, True, False, True]
    # expression values joined to the right patients, NaN for the image-only one
    np.testing.assert_allclose(adata[EXPR_IDS].X, _expression_table().to_numpy(np.float32))
    assert np.isnan(adata["P-005"].X).all()
    # clinical ids joined through id_replace; vocabularies and numeric statistics
    assert adata.obs["sex"].tolist() == ["F", "M", "F", "M", "F"]
    assert adata.obs["age"].tolist() == [40.0, 45.0, 50.0, 55.0, 60.0]
    cov = adata.uns[K.UNS][K.COVARIATES]
    assert cov[K.CATEGORICAL] == {"sex": ["F", "M"], "grade": ["II", "III", "IV"]}
    assert cov[K.NUMERIC]["age"]["mean"] == pytest.approx(50.0)
    assert isinstance(adata.obs["grade"].dtype, pd.CategoricalDtype)
    assert adata.uns[K.UNS][K.SPATIAL_DIMS] == spatial_dims
    assert adata.uns[K.UNS][K.PROVENANCE]["manifest"] == str(manifest.resolve())
    summary = validate_cohort(adata, check_files=True, progress=False)
    assert (summary["patients"], summary["genes"], summary["paired"]) == (5, 4, 3)
    assert (summary["with_image"], summary["with_mask"]) == (4, 4)
    assert summary["image_size"] == list(SHAPE[spatial_dims])
    assert summary["mask_labels"] == [0, 1]
    assert _assert_images_equal(adata, images, fmt, spatial_dims) == 4


@pytest.mark.parametrize("fmt, spatial_dims", CASES)
def test_yaml_manifest_genes_x_samples_and_templates(tmp_path, fmt, spatial_dims):
    manifest, images = _template_manifest(tmp_path, fmt, spatial_dims)
    adata = build_cohort(manifest)
    # template candidates come from the expression ids, so P-005 (image only) is not found
    assert list(adata.obs_names) == EXPR_IDS
    assert list(adata.var_names) == GENES
    np.testing.assert_allclose(adata.X, _expression_table().to_numpy(np.float32))
    assert adata.obs[K.HAS_EXPRESSION].all()
    assert adata.obs[K.HAS_IMAGE].tolist() == [True, True, True, False]
    assert adata.obs.loc["P-004", K.IMAGE] == ""
    assert adata.obs["subtype"].tolist() == ["classical", "mesenchymal", "classical", "neural"]
    assert adata.uns[K.UNS][K.COVARIATES][K.CATEGORICAL] == {
        "subtype": ["classical", "mesenchymal", "neural"]
    }
    summary = validate_cohort(adata, check_files=True, progress=False)
    assert (summary["patients"], summary["paired"], summary["with_mask"]) == (4, 3, 3)
    assert summary["image_size"] == list(SHAPE[spatial_dims])
    assert _assert_images_equal(adata, images, fmt, spatial_dims) == 3


def test_spatial_dims_argument_overrides_manifest(tmp_path):
    manifest, _ = _tables_manifest(tmp_path, "nii.gz", 3)
    adata = build_cohort(manifest, spatial_dims=2)
    assert adata.uns[K.UNS][K.SPATIAL_DIMS] == 2
    with pytest.raises(
        CohortError, match=r"patient 'P-001', image .*P-001\.nii\.gz: .*does not fit spatial_dims=2"
    ):
        validate_cohort(adata, progress=False)


# ------------------------------------------------------------------------------------------
# CSV manifests


@pytest.mark.parametrize(
    "fmt, spatial_dims", [("nii.gz", 2), ("png", 2), ("nii.gz", 3), ("dicom", 3)]
)
def test_csv_manifest_infers_covariate_types(tmp_path, fmt, spatial_dims):
    images = _write_images(tmp_path, fmt, spatial_dims, ids=["a1", "a2", "a3"])
    table = pd.DataFrame(
        {
            "id": list(images),
            "image": [v[0] for v in images.values()],
            "mask": [images["a1"][1], "", images["a3"][1]],
            "age": [50, 61.5, 70],
            "grade": [2, 3, 2],
            "sex": ["F", "M", "F"],
        }
    )
    table.to_csv(tmp_path / "cohort.csv", index=False)
    adata = build_cohort(tmp_path / "cohort.csv")
    assert list(adata.obs_names) == ["a1", "a2", "a3"]
    assert adata.n_vars == 0
    assert adata.uns[K.UNS][K.SPATIAL_DIMS] == spatial_dims  # guessed from the first image
    cov = adata.uns[K.UNS][K.COVARIATES]
    assert set(cov[K.NUMERIC]) == {"age", "grade"}
    assert cov[K.CATEGORICAL] == {"sex": ["F", "M"]}
    assert adata.obs[K.HAS_MASK].tolist() == [True, False, True]
    assert not adata.obs[K.HAS_EXPRESSION].any()
    summary = validate_cohort(adata, progress=False)
    assert summary["with_image"] == 3 and summary["image_size"] == list(SHAPE[spatial_dims])
    assert (
        _assert_images_equal(
            adata, {k: v for k, v in images.items() if k != "a2"}, fmt, spatial_dims
        )
        == 2
    )


def test_csv_manifest_needs_id_column(tmp_path):
    path = tmp_path / "cohort.csv"
    pd.DataFrame({"patient": ["a"], "image": ["x.nii.gz"]}).to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=rf"CSV manifest {re.escape(str(path))} needs an 'id' column"
    ):
        build_cohort(path)


# ------------------------------------------------------------------------------------------
# manifest errors


def _expression_only_manifest(tmp_path: Path, expr: pd.DataFrame, **extra) -> Path:
    expr.to_csv(tmp_path / "expr.csv")
    return _write_yaml(
        tmp_path / "m.yaml",
        {"expression": {"path": "expr.csv", **extra.pop("expression", {})}, **extra},
    )


@pytest.mark.parametrize(
    "manifest, key, suggestion",
    [
        ({"patiens": "union"}, "patiens", "patients"),
        (
            {"expression": {"path": "e.csv", "orientaton": "genes_x_samples"}},
            "expression.orientaton",
            "orientation",
        ),
        ({"covariates": {"categoricals": ["sex"]}}, "covariates.categoricals", "categorical"),
        ({"images": {"tabel": "i.csv"}}, "images.tabel", "table"),
    ],
)
def test_unknown_manifest_key(tmp_path, manifest, key, suggestion):
    path = _write_yaml(tmp_path / "m.yaml", manifest)
    with pytest.raises(
        ValueError, match=rf"unknown key '{re.escape(key)}' \(did you mean '{suggestion}'\?\)"
    ) as info:
        build_cohort(path)
    assert str(path) in str(info.value)


def test_bad_manifest_value_names_key(tmp_path):
    path = _write_yaml(tmp_path / "m.yaml", {"patients": "everyone"})
    with pytest.raises(ValueError, match=r"key 'patients' must be one of 'union', 'paired'"):
        load_manifest(path)


def test_missing_manifest_and_missing_table(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest not found: .*nope\.yaml"):
        build_cohort(tmp_path / "nope.yaml")
    path = _write_yaml(tmp_path / "m.yaml", {"expression": {"path": "missing.csv"}})
    with pytest.raises(FileNotFoundError, match=r"expression file not found: .*missing\.csv"):
        build_cohort(path)


def test_non_numeric_expression_value_names_gene_and_sample(tmp_path):
    expr = _expression_table().astype(object)
    expr.loc["P-003", "IDH1"] = "high"
    with pytest.raises(
        CohortError, match=r"non-numeric value 'high' for gene 'IDH1', sample 'P-003'"
    ):
        build_cohort(_expression_only_manifest(tmp_path, expr))


def test_duplicate_samples_after_id_regex(tmp_path):
    expr = _expression_table(["P-001-01A", "P-001-11A", "P-002-01A"])
    manifest = _expression_only_manifest(tmp_path, expr, expression={"id_regex": r"^(P-\d{3})"})
    with pytest.raises(CohortError, match=r"several samples map to patient\(s\) \['P-001'\]"):
        build_cohort(manifest)
    data = yaml.safe_load(manifest.read_text())
    data["expression"]["duplicates"] = "first"
    adata = build_cohort(_write_yaml(manifest, data))
    assert list(adata.obs_names) == ["P-001", "P-002"]
    np.testing.assert_allclose(adata["P-001"].X[0], expr.iloc[0].to_numpy(np.float32))


# ------------------------------------------------------------------------------------------
# missing values


def _expr_with_nan() -> pd.DataFrame:
    expr = _expression_table()
    expr.loc["P-002", "EGFR"] = np.nan
    expr.loc["P-004", "EGFR"] = np.nan
    expr.loc["P-003", "MGMT"] = np.nan
    return expr


def test_missing_expression_error_names_cells(tmp_path):
    manifest = _expression_only_manifest(tmp_path, _expr_with_nan())
    with pytest.raises(CohortError) as info:
        build_cohort(manifest)
    msg = str(info.value)
    assert "expression has 3 missing values" in msg
    for cell in ("('P-002', 'EGFR')", "('P-004', 'EGFR')", "('P-003', 'MGMT')"):
        assert cell in msg
    assert "expression.missing" in msg


def test_missing_expression_drop_genes(tmp_path):
    manifest = _expression_only_manifest(
        tmp_path, _expr_with_nan(), expression={"missing": "drop_genes"}
    )
    adata = build_cohort(manifest)
    assert list(adata.var_names) == ["TP53", "IDH1"]
    np.testing.assert_allclose(adata.X, _expression_table()[["TP53", "IDH1"]].to_numpy(np.float32))
    assert (
        adata.uns[K.UNS][K.PROVENANCE]["expression_missing"]
        == "dropped 2 genes with missing values"
    )
    assert validate_cohort(adata, progress=False)["genes"] == 2


def test_missing_expression_impute_median(tmp_path):
    expr = _expr_with_nan()
    manifest = _expression_only_manifest(tmp_path, expr, expression={"missing": "impute_median"})
    adata = build_cohort(manifest)
    assert list(adata.var_names) == GENES
    assert np.isfinite(adata.X).all()
    egfr = adata[:, "EGFR"].X[:, 0]
    median = np.median(expr["EGFR"].dropna())
    assert egfr[1] == pytest.approx(median) and egfr[3] == pytest.approx(median)
    assert egfr[0] == pytest.approx(expr.loc["P-001", "EGFR"])
    assert adata[:, "MGMT"].X[2, 0] == pytest.approx(np.median(expr["MGMT"].dropna()))
    assert "imputed 3 missing values" in adata.uns[K.UNS][K.PROVENANCE]["expression_missing"]
    assert validate_cohort(adata, progress=False)["with_expression"] == 4


def _covariate_manifest(tmp_path: Path, missing: str) -> Path:
    _expression_table().to_csv(tmp_path / "expr.csv")
    clinical = _clinical_table(EXPR_IDS)
    clinical.loc[1, "sex"] = np.nan  # P-002
    clinical.loc[2, "age"] = np.nan  # P-003
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    return _write_yaml(
        tmp_path / "m.yaml",
        {
            "expression": {"path": "expr.csv"},
            "clinical": {
                "path": "clinical.csv",
                "id_column": "patient_id",
                "id_replace": {"_": "-"},
            },
            "covariates": {"categorical": ["sex"], "numeric": ["age"], "missing": missing},
        },
    )


def test_missing_covariates_error_names_covariate_and_patient(tmp_path):
    with pytest.raises(
        CohortError,
        match=r"missing covariate values \(covariate: patients\) \{'sex': \['P-002'\], 'age': \['P-003'\]\}",
    ):
        build_cohort(_covariate_manifest(tmp_path, "error"))


def test_missing_covariates_drop_patients(tmp_path):
    adata = build_cohort(_covariate_manifest(tmp_path, "drop_patients"))
    assert list(adata.obs_names) == ["P-001", "P-004"]
    np.testing.assert_allclose(
        adata.X, _expression_table().loc[["P-001", "P-004"]].to_numpy(np.float32)
    )
    assert (
        adata.uns[K.UNS][K.PROVENANCE]["covariates_missing"]
        == "dropped 2 patients with missing covariates"
    )
    validate_cohort(adata, progress=False)


def test_missing_covariates_fill(tmp_path):
    adata = build_cohort(_covariate_manifest(tmp_path, "fill"))
    assert list(adata.obs_names) == EXPR_IDS
    assert adata.obs["sex"].tolist() == ["F", "unknown", "F", "M"]
    assert adata.uns[K.UNS][K.COVARIATES][K.CATEGORICAL] == {"sex": ["F", "M", "unknown"]}
    assert adata.obs["age"].tolist() == [40.0, 45.0, 45.0, 55.0]  # median of 40, 45, 55
    assert (
        "filled 2 missing covariate values" in adata.uns[K.UNS][K.PROVENANCE]["covariates_missing"]
    )
    validate_cohort(adata, progress=False)


def test_unknown_covariate_column(tmp_path):
    manifest = _expression_only_manifest(
        tmp_path, _expression_table(), covariates={"categorical": ["stage"]}
    )
    with pytest.raises(ValueError, match=r"covariate column\(s\) \['stage'\] not found"):
        build_cohort(manifest)


# ------------------------------------------------------------------------------------------
# which patients make the cohort; single-modality manifests


@pytest.mark.parametrize(
    "patients, expected",
    [
        ("union", ALL_IDS),
        ("paired", ["P-001", "P-002", "P-003"]),
        ("images", IMAGE_IDS),
        ("expression", EXPR_IDS),
        ("clinical", ALL_IDS),
    ],
)
def test_patients_selection(tmp_path, patients, expected):
    manifest, _ = _tables_manifest(tmp_path, "npy", 2)
    data = yaml.safe_load(manifest.read_text())
    data["patients"] = patients
    adata = build_cohort(_write_yaml(manifest, data))
    assert list(adata.obs_names) == expected
    has_expr = [pid in EXPR_IDS for pid in expected]
    has_image = [pid in IMAGE_IDS for pid in expected]
    assert adata.obs[K.HAS_EXPRESSION].tolist() == has_expr
    assert adata.obs[K.HAS_IMAGE].tolist() == has_image
    summary = validate_cohort(adata, progress=False)
    assert summary["paired"] == sum(e and i for e, i in zip(has_expr, has_image, strict=True))


def test_patients_selecting_nobody(tmp_path):
    manifest, _ = _tables_manifest(tmp_path, "npy", 2)
    pd.DataFrame({"id": ["X-1"], "image": ["images/P-001.npy"], "mask": [""]}).to_csv(
        tmp_path / "tables" / "images.csv", index=False
    )
    data = yaml.safe_load(manifest.read_text())
    data["patients"] = "paired"
    with pytest.raises(CohortError, match=r"selects no patients \(patients: paired\)"):
        build_cohort(_write_yaml(manifest, data))


def test_expression_only_manifest(tmp_path):
    _clinical_table(EXPR_IDS).to_csv(tmp_path / "clinical.csv", index=False)
    manifest = _expression_only_manifest(
        tmp_path,
        _expression_table(),
        clinical={"path": "clinical.csv", "id_column": "patient_id", "id_replace": {"_": "-"}},
        covariates={"categorical": ["sex"], "numeric": ["age"]},
    )
    adata = build_cohort(manifest)
    assert adata.shape == (4, 4)
    assert K.IMAGE not in adata.obs.columns
    assert not adata.obs[K.HAS_IMAGE].any()
    summary = validate_cohort(adata, check_files=True, progress=False)
    assert (summary["with_expression"], summary["with_image"], summary["paired"]) == (4, 0, 0)
    assert adata.uns[K.UNS][K.COVARIATES][K.CATEGORICAL] == {"sex": ["F", "M"]}


@pytest.mark.parametrize("fmt, spatial_dims", [("png", 2), ("dicom", 3)])
def test_image_only_manifest(tmp_path, fmt, spatial_dims):
    images = _write_images(tmp_path, fmt, spatial_dims)
    pd.DataFrame({"pid": list(images), "img": [v[0] for v in images.values()]}).to_csv(
        tmp_path / "images.csv", index=False
    )
    manifest = _write_yaml(
        tmp_path / "m.yaml",
        {
            "spatial_dims": spatial_dims,
            "images": {"table": "images.csv", "id_column": "pid", "image": "img"},
        },
    )
    adata = build_cohort(manifest)
    assert adata.shape == (4, 0)
    assert list(adata.obs_names) == IMAGE_IDS
    assert not adata.obs[K.HAS_EXPRESSION].any() and not adata.obs[K.HAS_MASK].any()
    summary = validate_cohort(adata, check_files=True, progress=False)
    assert (summary["with_image"], summary["genes"], summary["image_size"]) == (
        4,
        0,
        list(SHAPE[spatial_dims]),
    )


def test_image_table_missing_column_and_template_without_matches(tmp_path):
    manifest, _ = _tables_manifest(tmp_path, "npy", 2)
    data = yaml.safe_load(manifest.read_text())
    data["images"]["mask"] = "segmentation"
    with pytest.raises(ValueError, match=r"image table .*images\.csv has no column 'segmentation'"):
        build_cohort(_write_yaml(manifest, data))
    data["images"] = {"image": "nowhere/{id}.npy"}
    with pytest.raises(
        FileNotFoundError, match=r"no image file matches the template 'nowhere/\{id\}\.npy'"
    ):
        build_cohort(_write_yaml(manifest, data))


# ------------------------------------------------------------------------------------------
# id joins


def test_numeric_looking_ids_keep_leading_zeros(tmp_path):
    expr = _expression_table(["001", "002", "010"])
    expr.to_csv(tmp_path / "expr.csv")
    pd.DataFrame({"pid": ["001", "002", "010"], "sex": ["F", "M", "F"]}).to_csv(
        tmp_path / "clinical.csv", index=False
    )
    manifest = _write_yaml(
        tmp_path / "m.yaml",
        {
            "expression": {"path": "expr.csv"},
            "clinical": {"path": "clinical.csv", "id_column": "pid"},
            "covariates": {"categorical": ["sex"]},
        },
    )
    adata = build_cohort(manifest)
    assert list(adata.obs_names) == ["001", "002", "010"]
    assert adata.obs["sex"].tolist() == ["F", "M", "F"]
    # and in a CSV manifest
    save_image(np.zeros((1, *SHAPE[2]), np.float32), tmp_path / "001.nii.gz")
    pd.DataFrame({"id": ["001"], "image": ["001.nii.gz"]}).to_csv(
        tmp_path / "cohort.csv", index=False
    )
    assert list(build_cohort(tmp_path / "cohort.csv").obs_names) == ["001"]


def test_expression_from_h5ad(tmp_path):
    import anndata as ad

    expr = _expression_table()
    ad.AnnData(
        X=expr.to_numpy(np.float32),
        obs=pd.DataFrame(index=expr.index),
        var=pd.DataFrame(index=GENES),
    ).write_h5ad(tmp_path / "expr.h5ad")
    adata = build_cohort(_write_yaml(tmp_path / "m.yaml", {"expression": {"path": "expr.h5ad"}}))
    assert list(adata.obs_names) == EXPR_IDS
    assert list(adata.var_names) == GENES
    np.testing.assert_array_equal(adata.X, expr.to_numpy(np.float32))


def test_expression_h5ad_keeps_its_obs_columns(tmp_path):
    """A scanpy-style h5ad: sparse X, categorical and numeric obs annotations, sample ids."""
    import anndata as ad
    import scipy.sparse as sp

    expr = _expression_table()
    n = len(expr)
    obs = pd.DataFrame(
        {
            "subtype": pd.Categorical((["A", "B"] * n)[:n]),
            "age": np.arange(n, dtype=float) + 40,
            "has_image": True,  # the library's own columns are rebuilt, not taken over
        },
        index=[f"{i}-01A" for i in expr.index],
    )
    ad.AnnData(
        X=sp.csr_matrix(expr.to_numpy(np.float32)), obs=obs, var=pd.DataFrame(index=GENES)
    ).write_h5ad(tmp_path / "expr.h5ad")
    manifest = {
        "expression": {"path": "expr.h5ad", "id_regex": "^(.*)-01A$"},
        "covariates": {"categorical": ["subtype"], "numeric": ["age"]},
    }
    adata = build_cohort(_write_yaml(tmp_path / "m.yaml", manifest))
    assert list(adata.obs_names) == EXPR_IDS
    assert adata.obs["subtype"].tolist() == obs["subtype"].tolist()
    assert adata.obs["age"].tolist() == obs["age"].tolist()
    assert adata.uns["rg"]["covariates"]["categorical"] == {"subtype": ["A", "B"]}
    assert not adata.obs["has_image"].any()
    np.testing.assert_array_equal(adata.X, expr.to_numpy(np.float32))


def test_non_numeric_numeric_covariate_names_patient_and_value(tmp_path):
    clinical = _clinical_table(EXPR_IDS).astype({"age": object})
    clinical.loc[1, "age"] = "old"
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    manifest = _expression_only_manifest(
        tmp_path,
        _expression_table(),
        clinical={"path": "clinical.csv", "id_column": "patient_id", "id_replace": {"_": "-"}},
        covariates={"numeric": ["age"]},
    )
    with pytest.raises(
        CohortError, match=r"numeric covariate 'age' has non-numeric values.*P-002.*'old'"
    ):
        build_cohort(manifest)


def test_channel_names_are_recorded_and_checked_against_the_images(tmp_path):
    manifest, _ = _tables_manifest(tmp_path, "npy", 2)
    spec = yaml.safe_load(manifest.read_text())
    spec["images"]["channel_names"] = ["FLAIR"]
    adata = build_cohort(_write_yaml(manifest, spec))
    assert adata.uns[K.UNS][K.CHANNEL_NAMES] == ["FLAIR"]
    validate_cohort(adata, check_files=True, progress=False)  # one channel, one name
    spec["images"]["channel_names"] = ["pre-contrast", "FLAIR"]
    adata = build_cohort(_write_yaml(manifest, spec))
    with pytest.raises(CohortError, match="channel_names'] names 2 channel"):
        validate_cohort(adata, check_files=True, progress=False)
