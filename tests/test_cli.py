"""The CLI: demo end to end, cohort verbs, overrides, dry runs and plain errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from radiogenomics.cli import PENDING, main
from radiogenomics.data.cohort import read_cohort
from radiogenomics.data.io import save_image


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_demo_writes_cohort_and_figures(tmp_path, capsys):
    rc = main(
        [
            "-q",
            "demo",
            "--out",
            str(tmp_path),
            "--set",
            "phantom.n=24",
            "--set",
            "phantom.frac_image_only=0",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert f"phantom cohort: {tmp_path / 'cohort' / 'cohort.h5ad'}" in out
    summary = _last_json(out)
    assert summary["patients"] == 24 and summary["with_expression"] == 24
    for name in ("patients.png", "truth_map.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert read_cohort(tmp_path / "cohort" / "cohort.h5ad").n_obs == 24


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


@pytest.mark.parametrize("verb", sorted(PENDING))
def test_pending_verbs_say_so(verb, tmp_path, capsys):
    argv = {
        "select-genes": ["select-genes", "--data", "x.h5ad", "--out", "o"],
        "train": ["train", "configs/demo.yaml", "--data", "x.h5ad", "--out", "run"],
        "sample": ["sample", "run", "--n", "5", "--out", "o"],
        "evaluate": ["evaluate", "--real", "x.h5ad", "--synthetic", "s", "--out", "o"],
        "map": ["map", "--data", "x.h5ad", "--out", "o"],
    }[verb]
    assert main(argv) == 3
    assert f"radiogenomics {verb}: not available yet" in capsys.readouterr().err


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
