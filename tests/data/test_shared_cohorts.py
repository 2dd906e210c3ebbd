"""Real cohorts from ../shared/data: prepare, build from data_manifests/, validate, round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics.data.cohort import split_cohort, validate_cohort
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.io import load_image, read_slices
from radiogenomics.data.manifest import build_cohort, load_manifest
from radiogenomics.data.shared import (
    ENV_VAR,
    IMAGE_TABLE,
    SHARED_DATA,
    find_shared_data,
    prepare_shared,
)

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"

pytestmark = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"shared real data not found at {SHARED_DATA} (set {ENV_VAR} to its folder)",
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("prepared")
    return {
        name: prepare_shared(name, SHARED_DATA, base / name, progress=False)
        for name in ("tcga-lgg", "mini-mias", "mini-mias-normal")
    }


def build_and_check(manifest: str, tmp_path: Path, root: Path | None = None):
    """Build, validate (files too), write and read back, validate again; return both cohorts."""
    adata = build_cohort(MANIFESTS / manifest, root=root)
    summary = validate_cohort(adata, check_files=True, progress=False)
    out = tmp_path / "cohort.h5ad"
    write_cohort(adata, out)
    back = read_cohort(out)
    assert validate_cohort(back, check_files=True, progress=False) == summary
    assert list(back.obs_names) == list(adata.obs_names)
    assert list(back.var_names) == list(adata.var_names)
    np.testing.assert_array_equal(back.X, adata.X)
    cov, cov_back = adata.uns[K.UNS][K.COVARIATES], back.uns[K.UNS][K.COVARIATES]
    assert cov_back[K.NUMERIC].keys() == cov[K.NUMERIC].keys()
    for key in cov[K.CATEGORICAL]:
        assert vocab(back, key) == vocab(adata, key)
    for col in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        assert back.obs[col].tolist() == adata.obs[col].tolist()
    return adata, back, summary


def vocab(adata, key: str) -> list[str]:
    # h5ad gives lists back as numpy arrays
    return [str(v) for v in adata.uns[K.UNS][K.COVARIATES][K.CATEGORICAL][key]]


# --------------------------------------------------------------------------------------------
# preparation


def test_prepare_tcga_lgg(prepared):
    out = prepared["tcga-lgg"]
    table = pd.read_csv(out / IMAGE_TABLE)
    assert list(table.columns) == ["id", "image", "mask"]
    assert len(table) == 110 and table["id"].is_unique
    assert table["id"].str.fullmatch(r"TCGA-\w\w-\w{4}").all()
    row = table.set_index("id").loc["TCGA-CS-4941"]
    image, mask = load_image(out / row["image"], 2), load_image(out / row["mask"], 2)
    assert image.shape == (3, 256, 256) and mask.shape == (1, 256, 256)
    assert set(np.unique(mask)) == {0.0, 1.0}
    raw = np.load(SHARED_DATA / "tcga-lgg" / "lgg_max_area_slice_256.npz")
    np.testing.assert_array_equal(image, np.moveaxis(raw["images"][0], -1, 0))
    np.testing.assert_array_equal(mask[0], raw["masks"][0])
    for file in ("data.csv", "expression_24genes.csv", "SOURCE.txt"):
        assert (out / file).is_file()


def test_prepare_mini_mias(prepared):
    table = pd.read_csv(prepared["mini-mias"] / IMAGE_TABLE)
    assert len(table) == 119 and table["id"].is_unique
    assert {"tissue", "abnormality", "severity", "radius"} <= set(table.columns)
    # single-lesion films keep their refnum; several lesions get _1, _2, ...
    assert "mdb001" in set(table["id"])
    assert {"mdb005_1", "mdb005_2", "mdb226_3"} <= set(table["id"])
    assert table["abnormality"].value_counts().to_dict() == {
        "CALC": 27, "CIRC": 24, "ARCH": 19, "SPIC": 19, "MISC": 15, "ASYM": 15
    }  # fmt: skip
    image = load_image(prepared["mini-mias"] / table["image"][0], 2)
    assert image.shape == (1, 128, 128)


def test_prepare_is_idempotent(tmp_path):
    first = prepare_shared("mini-mias", SHARED_DATA, tmp_path, progress=False)
    before = (first / IMAGE_TABLE).read_text()
    png = (first / "masks" / "mdb001.png").read_bytes()
    prepare_shared("mini-mias", SHARED_DATA / "mini-mias", tmp_path, progress=False)
    assert (first / IMAGE_TABLE).read_text() == before
    assert (first / "masks" / "mdb001.png").read_bytes() == png
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_prepare_missing_files_write_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="lgg_max_area_slice_256.npz"):
        prepare_shared("tcga-lgg", tmp_path, out, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown shared data set"):
        prepare_shared("tcga-brca", SHARED_DATA, out, progress=False)


def test_shared_data_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_data() == tmp_path
    monkeypatch.delenv(ENV_VAR)
    assert find_shared_data() == MANIFESTS.parent.parent / "shared" / "data"


def test_manifest_roots_follow_the_convention(tmp_path):
    # expression-only manifests point at ../shared/data beside the repo; image ones at prepared/
    repo = MANIFESTS.parent
    for manifest, folder in [("tcga_gbm", "tcga-gbm"), ("nsclc", "nsclc-radiogenomics")]:
        _, root = load_manifest(MANIFESTS / f"{manifest}.yaml")
        assert root == (repo.parent / "shared" / "data" / folder).resolve()
    images = [
        ("tcga_lgg_paired", "tcga-lgg"),
        ("tcga_lgg_110", "tcga-lgg"),
        ("tcga_lgg_slices", "tcga-lgg-slices"),
        ("mini_mias", "mini-mias"),
        ("mini_mias_normal", "mini-mias-normal"),
    ]
    for manifest, folder in images:
        _, root = load_manifest(MANIFESTS / f"{manifest}.yaml")
        assert root == (repo / "prepared" / folder).resolve()
    with pytest.raises(FileNotFoundError, match="root folder not found"):
        build_cohort(MANIFESTS / "tcga_gbm.yaml", root=tmp_path / "absent")


# --------------------------------------------------------------------------------------------
# cohorts


def test_tcga_lgg_paired(prepared, tmp_path):
    adata, back, summary = build_and_check("tcga_lgg_paired.yaml", tmp_path, prepared["tcga-lgg"])
    assert (summary["patients"], summary["genes"], summary["paired"]) == (59, 24, 59)
    assert summary["with_expression"] == summary["with_mask"] == 59
    listed = pd.read_csv(SHARED_DATA / "tcga-lgg" / "paired_patients_image_mask_expression.csv")
    assert set(adata.obs_names) == set(listed["patient"])
    assert np.isfinite(adata.X).all()
    assert {"IDH1", "TP53", "ATRX", "EGFR"} <= set(adata.var_names)
    assert list(back.uns[K.UNS][K.IMAGE_SIZE]) == [256, 256]
    assert back.uns[K.UNS][K.CHANNELS] == 3
    names = [str(n) for n in back.uns[K.UNS][K.CHANNEL_NAMES]]  # the figures' panel titles
    assert names == ["pre-contrast", "FLAIR", "post-contrast"]
    assert vocab(adata, "sex") == ["female", "male"]
    assert vocab(adata, "grade") == ["G2", "G3"]
    assert vocab(adata, "coc_cluster") == ["coc1", "coc2", "coc3"]
    assert adata.obs["sex"].value_counts().to_dict() == {"female": 34, "male": 25}
    assert adata.obs["age"].notna().all()
    # image paths were rewritten relative to the h5ad's folder (and resolved in validation)
    image = adata.obs[K.IMAGE].iloc[0]
    assert image == f"images/{adata.obs_names[0]}.png"
    moved = tmp_path / back.obs[K.IMAGE].iloc[0]
    assert moved.resolve() == (prepared["tcga-lgg"] / image).resolve()


def test_tcga_lgg_110(prepared, tmp_path):
    adata, back, summary = build_and_check("tcga_lgg_110.yaml", tmp_path, prepared["tcga-lgg"])
    assert (summary["patients"], summary["genes"]) == (110, 24)
    assert summary["with_image"] == summary["with_mask"] == 110
    assert summary["with_expression"] == summary["paired"] == 59
    assert (~adata.obs[K.HAS_EXPRESSION]).sum() == 51
    assert np.isnan(adata.X[~adata.obs[K.HAS_EXPRESSION].to_numpy()]).all()
    assert list(back.uns[K.UNS][K.IMAGE_SIZE]) == [256, 256] and back.uns[K.UNS][K.CHANNELS] == 3
    # TCGA-HT-A61B has no clinical values in data.csv: filled, not dropped
    assert adata.obs.loc["TCGA-HT-A61B", "sex"] == "unknown"
    assert vocab(adata, "sex") == ["female", "male", "unknown"]
    assert adata.obs["coc_cluster"].value_counts().to_dict() == {"coc1": 56, "coc3": 30, "coc2": 24}


def test_tcga_lgg_slices(tmp_path_factory):
    # every tumour slice: one NIfTI stack per patient, still one obs row per patient
    out = prepare_shared(
        "tcga-lgg", SHARED_DATA, tmp_path_factory.mktemp("slices"), progress=False, slices="all"
    )
    table = pd.read_csv(out / IMAGE_TABLE)
    assert list(table.columns) == ["id", "image", "mask", "n_slices", "slice_index"]
    assert len(table) == 110 and table["n_slices"].sum() == 1373
    adata, back, summary = build_and_check(
        "tcga_lgg_slices.yaml", tmp_path_factory.mktemp("c"), out
    )
    assert (summary["patients"], summary["paired"], summary["slices"]) == (110, 59, 1373)
    assert summary["slices_per_patient"] == {"min": 3, "median": 11.0, "max": 37}
    assert list(back.uns[K.UNS][K.IMAGE_SIZE]) == [128, 128] and back.uns[K.UNS][K.CHANNELS] == 3
    assert back.uns[K.UNS][K.SLICE_AXIS] == 2
    assert (
        back.obs[K.N_SLICES].tolist()
        == table.set_index("id").loc[back.obs_names, "n_slices"].tolist()
    )
    # the stack is the npz's slices in scan order, channels and all
    raw = np.load(SHARED_DATA / "tcga-lgg" / "lgg_tumour_slices_128.npz")
    at = np.flatnonzero(raw["patient"] == "TCGA-CS-4941")
    stack, _ = read_slices(out / "images" / "TCGA-CS-4941.nii.gz", 2)
    masks, _ = read_slices(out / "masks" / "TCGA-CS-4941.nii.gz", 2)
    np.testing.assert_array_equal(stack, np.moveaxis(raw["images"][at], -1, 1))
    np.testing.assert_array_equal(masks[:, 0], raw["masks"][at])
    with pytest.raises(ValueError, match="only \\['tcga-lgg'\\] has stacks"):
        prepare_shared("mini-mias", SHARED_DATA, out / "no", progress=False, slices="all")


CLUSTERS = [
    "RNASeqCluster",
    "MethylationCluster",
    "miRNACluster",
    "CNCluster",
    "RPPACluster",
    "OncosignCluster",
    "COCCluster",
]


@pytest.mark.parametrize("manifest", ["tcga_lgg_110.yaml", "tcga_lgg_paired.yaml"])
def test_tcga_lgg_carries_every_genomic_cluster_as_an_annotation(prepared, tmp_path, manifest):
    adata, back, _ = build_and_check(manifest, tmp_path, prepared["tcga-lgg"])
    covariates = back.uns[K.UNS][K.COVARIATES]
    declared = set(covariates[K.CATEGORICAL]) | set(covariates[K.NUMERIC])
    raw = pd.read_csv(SHARED_DATA / "tcga-lgg" / "data.csv", index_col="Patient")
    raw.index = raw.index.str.replace("_", "-")
    for col in CLUSTERS:
        assert col in back.obs.columns and col not in declared
        assert isinstance(back.obs[col].dtype, pd.CategoricalDtype)
        if col != "COCCluster":  # the others keep data.csv's codes, as text
            expected = raw.loc[back.obs_names, col].map(
                lambda v: np.nan if pd.isna(v) else str(int(v))
            )
            got = back.obs[col].astype(object).where(back.obs[col].notna(), np.nan)
            pd.testing.assert_series_equal(got, expected, check_names=False, check_index=False)
    assert set(back.obs["COCCluster"].dropna()) == {"coc1", "coc2", "coc3"}
    assert "coc_cluster" in covariates[K.CATEGORICAL]  # still the model covariate


def test_mini_mias(prepared, tmp_path):
    adata, back, summary = build_and_check("mini_mias.yaml", tmp_path, prepared["mini-mias"])
    assert (summary["patients"], summary["genes"], summary["with_mask"]) == (119, 0, 119)
    assert summary["with_expression"] == summary["paired"] == 0
    assert list(back.uns[K.UNS][K.IMAGE_SIZE]) == [128, 128] and back.uns[K.UNS][K.CHANNELS] == 1
    assert vocab(adata, "abnormality") == ["ARCH", "ASYM", "CALC", "CIRC", "MISC", "SPIC"]
    assert adata.obs["severity"].value_counts().to_dict() == {"benign": 68, "malignant": 51}
    assert vocab(adata, "tissue") == ["dense-glandular", "fatty", "fatty-glandular"]
    assert adata.obs["subject"].nunique() == 104  # women; left and right films share one
    assert "radius" in adata.uns[K.UNS][K.COVARIATES][K.NUMERIC]


def test_mini_mias_normal_tissue(prepared, tmp_path):
    adata, back, summary = build_and_check(
        "mini_mias_normal.yaml", tmp_path, prepared["mini-mias-normal"]
    )
    # two distinct windows from each of the 207 NORM films
    assert summary["patients"] == 414 and summary["mask_labels"] == [0]
    assert list(back.uns[K.UNS][K.IMAGE_SIZE]) == [64, 64]
    assert adata.obs["refnum"].nunique() == 207
    lesions = build_cohort(MANIFESTS / "mini_mias.yaml", root=prepared["mini-mias"])
    assert not set(adata.obs["refnum"]) & set(lesions.obs["refnum"])
    assert "mdb059" not in set(adata.obs["refnum"])  # a lesion without coordinates

    def dark(cohort, root):  # share of air and zero padding in each crop
        return np.array([(load_image(root / p, 2) <= 20).mean() for p in cohort.obs[K.IMAGE]])

    normal = dark(adata, prepared["mini-mias-normal"])
    lesion = dark(lesions, prepared["mini-mias"])
    # where a crop was taken does not tell the classes apart (both about 0.09)
    assert abs(normal.mean() - lesion.mean()) < 0.03
    assert len({load_image(prepared["mini-mias-normal"] / p, 2).tobytes()
                for p in adata.obs[K.IMAGE]}) == 414  # fmt: skip


def test_grouped_split_keeps_women_together(prepared):
    lesions = build_cohort(MANIFESTS / "mini_mias.yaml", root=prepared["mini-mias"])
    train, test = split_cohort(lesions, 0.25, group="subject", stratify="severity", seed=1)
    assert not set(train.obs["subject"]) & set(test.obs["subject"])
    assert train.n_obs + test.n_obs == 119 and 0.15 < test.n_obs / 119 < 0.35
    assert set(test.obs["severity"]) == {"benign", "malignant"}


def test_tcga_gbm(tmp_path):
    adata, _, summary = build_and_check("tcga_gbm.yaml", tmp_path, SHARED_DATA / "tcga-gbm")
    # 173 expression samples, 17 without a clinical row are dropped
    assert (summary["patients"], summary["genes"], summary["with_image"]) == (156, 840, 0)
    assert "dropped 17" in adata.uns[K.UNS][K.PROVENANCE]["covariates_missing"]
    assert vocab(adata, "subtype") == ["Classical", "Mesenchymal", "Neural", "Proneural"]
    counts = adata.obs["subtype"].value_counts().to_dict()
    assert counts == {"Mesenchymal": 50, "Proneural": 49, "Classical": 37, "Neural": 20}
    assert vocab(adata, "sex") == ["female", "male"]
    assert adata.obs["sex"].value_counts().to_dict() == {"male": 98, "female": 58}
    assert adata.obs_names.str.fullmatch(r"TCGA-\w\w-\w{4}").all()
    assert np.isfinite(adata.X).all() and adata.X.dtype == np.float32


def test_nsclc(tmp_path):
    root = SHARED_DATA / "nsclc-radiogenomics"
    adata, _, summary = build_and_check("nsclc.yaml", tmp_path, root)
    assert (summary["patients"], summary["genes"], summary["with_expression"]) == (130, 1000, 130)
    assert "imputed 4519" in adata.uns[K.UNS][K.PROVENANCE]["expression_missing"]
    assert np.isfinite(adata.X).all()
    assert adata.obs["sex"].value_counts().to_dict() == {"male": 96, "female": 34}
    assert vocab(adata, "histology") == [
        "Adenocarcinoma", "NSCLC NOS (not otherwise specified)", "Squamous cell carcinoma"
    ]  # fmt: skip
    assert vocab(adata, "stage") == ["T1a", "T1b", "T2a", "T2b", "T3", "T4", "Tis"]
    assert adata.obs["age"].between(40, 90).all()
