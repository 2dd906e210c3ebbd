"""The CLI: demo end to end, cohort verbs, overrides, dry runs and plain errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from radiogenomics.cli import main
from radiogenomics.data.cohort import make_cohort
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.io import load_image, save_image
from radiogenomics.data.phantom import make_phantom, write_phantom


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


# the demo at a test's budget: a small phantom, tiny networks, a few steps
SHORT_DEMO = [
    "--set", "phantom.n=48", "--set", "phantom.frac_image_only=0.1", "--set", "train.steps=4",
    "--set", "train.eval_every=2", "--set", "train.select_after=0", "--set", "train.batch_size=4",
    "--set", "image.channels=[8,4]", "--set", "image.critic_channels=[4,8]",
    "--set", "image.n_hidden=16", "--set", "image.n_code=4", "--set", "gene.n_hidden=16",
    "--n-samples", "12",
]  # fmt: skip


def test_demo_trains_samples_and_reports(tmp_path, capsys):
    from radiogenomics.data.h5ad import validate_cohort_file

    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), *SHORT_DEMO]) == 0
    printed = capsys.readouterr().out
    for what, path in (
        ("phantom cohort", out / "cohort" / "cohort.h5ad"),
        ("12 synthetic patients", out / "synthetic" / "cohort.h5ad"),
        ("report", out / "report" / "report.html"),
    ):
        assert f"{what}: {path}" in printed
        assert path.is_file()
    summary = _last_json(printed)
    assert summary["cohort"]["patients"] == 48
    for key in ("phantom_size_real", "phantom_size_synthetic", "phantom_contrast_synthetic"):
        assert key in summary, key
    synth, info = validate_cohort_file(out / "synthetic" / "cohort.h5ad", progress=False)
    assert info["patients"] == 12 and synth.obs["has_expression"].all()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"gene_distance_ratio", "pair_spearman", "phantom_size_synthetic"} <= set(metrics)
    html = (out / "report" / "report.html").read_text()
    assert "<img" in html and "loss" in html.lower()
    for name in ("patients.png", "truth_map.png", "run/loss_curves.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert read_cohort(out / "split" / "test.h5ad").n_obs == 12
    # a rerun replaces its own output; a folder the demo did not write is refused
    assert main(["-q", "demo", "--out", str(out), *SHORT_DEMO]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["-q", "demo", "--out", str(other), *SHORT_DEMO]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize("dims", [2, 3])
def test_cohort_phantom_then_validate(tmp_path, capsys, dims):
    out = tmp_path / "ph"
    assert (
        main(
            ["-q", "cohort", "phantom", "--n", "6", "--spatial-dims", str(dims), "--out", str(out)]
        )
        == 0
    )
    assert main(["-q", "cohort", "validate", str(out / "cohort.h5ad")]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert (
        summary["spatial_dims"] == dims
        and summary["image_size"] == [64 if dims == 2 else 32] * dims
    )


def test_cohort_build_from_csv_manifest(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        save_image(rng.random((1, 16, 16)).astype(np.float32), tmp_path / f"img{i}.nii.gz")
        save_image((rng.random((1, 16, 16)) > 0.5).astype(np.uint8), tmp_path / f"msk{i}.nii.gz")
        rows.append(
            {
                "id": f"P{i}",
                "image": f"img{i}.nii.gz",
                "mask": f"msk{i}.nii.gz",
                "grade": "G2" if i % 2 else "G3",
                "age": 40 + i,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "elsewhere" / "cohort.h5ad"
    assert main(["-q", "cohort", "build", str(tmp_path / "manifest.csv"), "--out", str(out)]) == 0
    adata = read_cohort(out)
    assert adata.uns["rg"]["covariates"]["categorical"] == {"grade": ["G2", "G3"]}
    assert list(adata.uns["rg"]["covariates"]["numeric"]) == ["age"]
    assert adata.obs["image"].iat[0] == "../img0.nii.gz"  # relative to the h5ad's folder
    assert main(["-q", "cohort", "validate", str(out)]) == 0


def test_build_reports_the_bad_file(tmp_path, capsys):
    pd.DataFrame([{"id": "P0", "image": "missing.nii.gz"}]).to_csv(tmp_path / "m.csv", index=False)
    save_image(np.zeros((1, 8, 8), np.float32), tmp_path / "x.nii.gz")
    rc = main(
        [
            "-q",
            "cohort",
            "build",
            str(tmp_path / "m.csv"),
            "--spatial-dims",
            "2",
            "--out",
            str(tmp_path / "c.h5ad"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "patient 'P0'" in err and "missing.nii.gz" in err
    assert not (tmp_path / "c.h5ad").exists()


def test_overrides_dry_run_and_bad_keys(tmp_path, capsys):
    assert (
        main(["demo", "--dry-run", "--set", "phantom.n=7", "--set", "data.image_size=[32,32]"]) == 0
    )
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["phantom"]["n"] == 7 and cfg["data"]["image_size"] == [32, 32]
    assert main(["demo", "--set", "phantom.nn=3"]) == 2
    err = capsys.readouterr().err
    assert "phantom.nn" in err and "did you mean 'n'" in err
    assert main(["demo", "--set", "data.spatial_dims=4"]) == 2
    assert "data.spatial_dims" in capsys.readouterr().err
    assert main(["demo", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_map_writes_the_table_and_heatmap(phantom_cohort, tmp_path, capsys):
    cohort = next(Path(phantom_cohort.uns["rg"]["root"]).glob("*.h5ad"))
    out = tmp_path / "map"
    argv = ["-q", "map", str(cohort), "--out", str(out), "--subtypes", "subtype,sex"]
    assert main(argv + ["--genomic", "genes"]) == 0
    table = pd.read_csv(out / "map.csv")
    assert list(table.columns) == ["genomic", "feature", "effect", "p", "p_adj"]
    n_features = table["feature"].nunique()
    assert len(table) == (phantom_cohort.n_vars + 2) * n_features  # one row per pair
    assert {"subtype", "sex"} <= set(table["genomic"])
    assert (out / "map_heatmap.png").stat().st_size > 1000
    assert "map.csv" in capsys.readouterr().out
    # a second map into the same folder needs --overwrite, and leaves the first untouched
    before = (out / "map.csv").read_bytes()
    assert main(argv + ["--genomic", "genes", "--method", "nmf"]) == 2
    assert "already holds a map" in capsys.readouterr().err
    assert (out / "map.csv").read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0  # metagenes now
    assert (out / "metagenes.csv").is_file()
    # back to genes: the metagenes map's metagenes.csv goes with it; other files stay
    (out / "notes.txt").write_text("mine")
    assert main(argv + ["--genomic", "genes", "--overwrite"]) == 0
    assert not (out / "metagenes.csv").exists() and (out / "notes.txt").read_text() == "mine"
    # metagenes (the default) add each gene's metagene
    assert main(["-q", "map", str(cohort), "--out", str(tmp_path / "mg")]) == 0
    metagenes = pd.read_csv(tmp_path / "mg" / "metagenes.csv", index_col=0)
    assert len(metagenes) == phantom_cohort.n_vars
    assert set(pd.read_csv(tmp_path / "mg" / "map.csv")["genomic"]) == set(
        metagenes["rg_metagene"].dropna()
    )


def test_map_refuses_a_file_out_a_run_folder_and_unknown_subtypes(phantom_cohort, tmp_path, capsys):
    cohort = next(Path(phantom_cohort.uns["rg"]["root"]).glob("*.h5ad"))
    (tmp_path / "file").write_text("x")
    assert main(["map", str(cohort), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["map", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # no run there
    assert "holds no trained model" in capsys.readouterr().err
    assert main(["-q", "map", str(cohort), "--out", str(tmp_path / "o"), "--subtypes", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    # the learned map's options on a cohort are a mistake, named
    assert main(["-q", "map", str(cohort), "--out", str(tmp_path / "o"), "--delta", "2"]) == 2
    assert "learned-map options given for a cohort: --delta" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _plain_h5ad(tmp_path):
    """What a scanpy user has: categorical obs, sparse X, image paths in a column of its own,
    no uns['rg']."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    for i in range(4):
        save_image(rng.random((1, 16, 16)).astype(np.float32), tmp_path / f"img{i}.nii.gz")
    obs = pd.DataFrame(
        {
            "grade": pd.Categorical(["G2", "G3"] * 2),
            "age": [40.0, 50.0, 60.0, 70.0],
            "scan": [f"img{i}.nii.gz" for i in range(4)],
        },
        index=[f"P{i}" for i in range(4)],
    )
    X = sp.csr_matrix(rng.poisson(2.0, (4, 5)).astype(np.float64))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(5)]))
    adata.write_h5ad(tmp_path / "plain.h5ad")
    return tmp_path / "plain.h5ad"


def test_cohort_setup_from_a_plain_h5ad(tmp_path, capsys):
    plain = _plain_h5ad(tmp_path)
    out = tmp_path / "out" / "cohort.h5ad"
    argv = ["-q", "cohort", "setup", str(plain), "--categorical", "grade", "--numeric", "age",
            "--image-key", "scan", "--spatial-dims", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["with_image"] == 4 and summary["image_size"] == [16, 16]
    adata = read_cohort(out)
    assert adata.uns["rg"]["covariates"]["categorical"] == {"grade": ["G2", "G3"]}
    assert list(adata.uns["rg"]["covariates"]["numeric"]) == ["age"]
    assert adata.obs["image"].iat[0] == "../img0.nii.gz"  # relative to the new h5ad's folder
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.float32
    # a missing column is one line naming it
    assert main(["-q", "cohort", "setup", str(plain), "--categorical", "grad",
                 "--out", str(tmp_path / "x.h5ad")]) == 2  # fmt: skip
    assert "covariate column 'grad' not found in obs" in capsys.readouterr().err


def test_plain_h5ad_errors_say_the_setup_command(tmp_path, capsys):
    plain = _plain_h5ad(tmp_path)
    command = (
        f"radiogenomics cohort setup {plain} --categorical grade --numeric age "
        f"--out {tmp_path / 'plain_cohort.h5ad'}"
    )
    # training reads the cohort, and build is what an older message advised
    assert main(["train", "configs/gene_wgan.yaml", "--data", str(plain),
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert command in err and len(err.strip().splitlines()) == 1
    assert main(["-q", "cohort", "build", str(plain), "--out", str(tmp_path / "c.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "is an AnnData .h5ad, not a manifest" in err and command in err
    assert "codec" not in err
    # a binary file that is not an h5ad is not a manifest either
    (tmp_path / "scan.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 8)
    assert main(["-q", "cohort", "build", str(tmp_path / "scan.yaml"),
                 "--out", str(tmp_path / "c.h5ad")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "scan.yaml is not a text file" in err and "codec" not in err


# ------------------------------------------------------------------------------------------
# every verb reads its cohorts as `cohort validate` does, and writes only what it may


def _small_phantom(path, n=6):
    return write_phantom(
        make_phantom(n, 2, size=16, n_genes=128, progress=False), path, progress=False
    )


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "applying transform" not in err
    return err.split(": error: ", 1)[1]


def _break(cohort_path, how: str) -> None:
    root = cohort_path.parent
    adata = read_cohort(cohort_path)
    mask = root / adata.obs["mask"].iat[0]
    if how == "mask shape":
        save_image(np.zeros((1, 8, 8), np.uint8), mask)
    elif how == "mask 0.5":
        save_image(load_image(mask) * 0.5, mask)
    elif how == "mask labels":
        labels = load_image(mask)
        labels[0, :2, :2] = 2
        save_image(labels, mask)
    elif how == "duplicate ids":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.obs_names = ["PH00000", "PH00000", *adata.obs_names[2:]]
            write_cohort(adata, cohort_path)
    elif how == "corrupt image":
        (root / adata.obs["image"].iat[1]).write_bytes(b"not a nifti")
    elif how == "missing image":
        (root / adata.obs["image"].iat[1]).unlink()


@pytest.mark.parametrize(
    "how",
    ["mask shape", "mask 0.5", "mask labels", "duplicate ids", "corrupt image", "missing image"],
)
def test_every_verb_refuses_what_validate_refuses(tmp_path, capsys, how):
    cohort = _small_phantom(tmp_path / "ph")
    _break(cohort, how)
    assert main(["-q", "cohort", "validate", str(cohort)]) == 2
    expected = _error(capsys)
    assert expected.startswith(f"{cohort}: cohort validation failed")
    assert ("PH0000" in expected) and ("duplicate" in how or "nii.gz" in expected)
    run = tmp_path / "image_run"  # `sample` checks its cohorts before it loads the model
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"model": "image_gan"}))
    out = str(tmp_path / "out")
    for argv in (
        ["train", "configs/joint_phantom_2d.yaml", "--data", str(cohort), "--out", out],
        ["train", "configs/joint_phantom_2d.yaml", "--set", "model=segmentation", "--data", str(cohort),
         "--out", out],
        ["sample", str(run), "--like", str(cohort), "--out", out],
        ["sample", str(run), "--data", str(cohort), "--out", out],
        ["sample", str(run), "--expression", str(cohort), "--out", out],
        ["evaluate", "--train", str(cohort), "--real", str(cohort), "--synthetic", str(cohort),
         "--out", out],
        ["evaluate", "--data", str(cohort), "--kfold", "2", "--out", out],
        ["cohort", "split", str(cohort), "--out", out],
        ["select-genes", "--data", str(cohort), "--out", out + ".h5ad"],
    ):  # fmt: skip
        assert main(["-q", *argv]) == 2, argv
        assert _error(capsys) == expected, argv
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.h5ad").exists(), argv


def test_out_naming_an_existing_file_is_refused(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    cohort = str(_small_phantom(tmp_path / "ph"))
    for argv in (
        ["demo"],
        ["cohort", "phantom", "--n", "4"],
        ["cohort", "build", str(tmp_path / "m.csv")],
        ["cohort", "build", str(tmp_path / "m.csv"), "--overwrite"],
        ["cohort", "split", cohort],
        ["cohort", "prepare-shared", "tcga-lgg"],
        ["select-genes", "--data", cohort],
        ["train", "configs/gene_wgan.yaml", "--data", cohort],
        ["sample", str(tmp_path), "--n", "3"],
        ["sample", str(tmp_path), "--n", "3", "--overwrite"],
        ["evaluate", "--train", cohort, "--real", cohort, "--synthetic", cohort],
    ):
        assert main(["-q", *argv, "--out", str(notes)]) == 2, argv
        assert str(notes) in _error(capsys), argv
        assert notes.read_text() == "my notes"


def test_cohort_outputs_are_replaced_only_when_asked(tmp_path, capsys):
    cohort = _small_phantom(tmp_path / "ph")
    out = tmp_path / "ph2"
    assert main(["-q", "cohort", "phantom", "--n", "4", "--size", "16", "--out", str(out)]) == 0
    assert main(["-q", "cohort", "phantom", "--n", "5", "--size", "16", "--out", str(out)]) == 2
    assert "--overwrite" in _error(capsys)
    argv = ["-q", "cohort", "phantom", "--n", "5", "--size", "16", "--out", str(out), "--overwrite"]
    assert main(argv) == 0 and read_cohort(out / "cohort.h5ad").n_obs == 5
    assert len(list((out / "images").iterdir())) == 5  # the old images went with the old h5ad
    # a folder that is no cohort is not replaced, even when asked
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    assert main([*argv[:-2], str(mine), "--overwrite"]) == 2
    assert "not a cohort folder" in _error(capsys) and (mine / "keep.txt").is_file()
    # single-file cohorts: an existing one only with --overwrite, a non-cohort h5ad never
    split = ["-q", "cohort", "split", str(cohort), "--test-fraction", "0.5", "--out"]
    assert main([*split, str(tmp_path / "split")]) == 0
    assert main([*split, str(tmp_path / "split")]) == 2
    assert "train.h5ad exists; pass --overwrite" in _error(capsys)
    assert main([*split, str(tmp_path / "split"), "--overwrite"]) == 0
    import anndata as ad

    ad.AnnData(np.zeros((2, 2), np.float32)).write_h5ad(tmp_path / "other.h5ad")
    select = ["-q", "select-genes", "--data", str(cohort), "--set", "select.method=variance",
              "--set", "select.n_top=4", "--overwrite", "--out"]  # fmt: skip
    assert main([*select, str(tmp_path / "other.h5ad")]) == 2
    assert "is not a radiogenomics cohort" in _error(capsys)
    assert main([*select, str(tmp_path / "split" / "train.h5ad")]) == 0
    assert read_cohort(tmp_path / "split" / "train.h5ad").n_vars == 4


def test_failed_evaluate_leaves_no_output_folder(tmp_path, capsys):
    images = _small_phantom(tmp_path / "ph")
    genes = tmp_path / "genes.h5ad"
    expr = pd.DataFrame(np.ones((3, 2)), index=["a", "b", "c"], columns=["G1", "G2"])
    write_cohort(make_cohort(expr, pd.DataFrame(index=expr.index)), genes)
    out = tmp_path / "eval"
    argv = ["-q", "evaluate", "--real", str(genes), "--synthetic", str(images), "--out", str(out)]
    assert main(argv) == 2  # expression-only real patients: the gene route, which needs --train
    assert "evaluate needs --train" in _error(capsys)
    assert not out.exists()


def test_everything_the_library_writes_validates_and_reads_back(tmp_path, capsys):
    from radiogenomics.data.dataset import load_images
    from radiogenomics.data.h5ad import SyntheticCohort, read_valid_cohort

    written = {"phantom": _small_phantom(tmp_path / "ph", n=12)}
    ph = read_cohort(written["phantom"])
    rows = []
    for pid in ph.obs_names[:4]:
        rows.append({"id": pid, "image": f"ph/{ph.obs['image'][pid]}",
                     "mask": f"ph/{ph.obs['mask'][pid]}", "subtype": ph.obs["subtype"][pid]})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    written["build"] = tmp_path / "built.h5ad"
    assert main(["-q", "cohort", "build", str(tmp_path / "m.csv"), "--out",
                 str(written["build"])]) == 0  # fmt: skip
    assert main(["-q", "cohort", "split", str(written["phantom"]), "--test-fraction", "0.25",
                 "--out", str(tmp_path / "split")]) == 0  # fmt: skip
    written["split"] = tmp_path / "split" / "train.h5ad"
    written["select-genes"] = tmp_path / "top.h5ad"
    assert main(["-q", "select-genes", "--data", str(written["split"]), "--set",
                 "select.method=variance", "--set", "select.n_top=6", "--out",
                 str(written["select-genes"])]) == 0  # fmt: skip
    run = tmp_path / "gene_run"
    assert main(["-q", "train", "configs/gene_wgan.yaml", "--data", str(written["split"]),
                 "--out", str(run), "--set", "train.steps=5", "--set", "gene.n_hidden=16"]) == 0  # fmt: skip
    assert main(["-q", "sample", str(run), "--n", "7", "--out", str(tmp_path / "gsyn")]) == 0
    written["gene sample"] = tmp_path / "gsyn" / "cohort.h5ad"
    synth = SyntheticCohort(
        ph[:3].copy(),
        np.zeros((3, 1, 16, 16), np.float32),
        np.ones((3, 1, 16, 16), np.uint8),
    )
    written["image sample"] = synth.write(tmp_path / "isyn", progress=False)
    for what, path in written.items():
        assert main(["-q", "cohort", "validate", str(path)]) == 0, (what, capsys.readouterr())
        adata = read_valid_cohort(path)
        flags = adata.obs[["has_expression", "has_image", "has_mask"]]
        assert flags.dtypes.eq(bool).all(), what
        if flags["has_image"].any():
            images, masks = load_images(adata)
            assert images.shape[0] == masks.shape[0] == flags["has_image"].sum(), what
