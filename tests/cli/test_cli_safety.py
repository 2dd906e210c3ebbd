"""What a new user hit on the command line: outputs that replaced the user's files, inputs
checked late or not at all, flags ignored, messages that named the wrong thing. One test per
problem; each fails on the code before its fix."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from radiogenomics.cli import main
from radiogenomics.data.h5ad import read_cohort, write_cohort
from radiogenomics.data.io import load_image, save_image
from radiogenomics.data.phantom import make_phantom, write_phantom

ROOT = Path(__file__).resolve().parents[2]
TINY_GENE = ["--set", "train.steps=3", "--set", "gene.n_hidden=16", "--set", "train.val_fraction=0"]
TINY_JOINT = [
    "--set", "image.channels=[16,8]", "--set", "image.critic_channels=[8,16]",
    "--set", "image.n_noise=8", "--set", "image.n_code=8", "--set", "image.n_hidden=32",
    "--set", "image.gene_aux_components=4", "--set", "gene.n_hidden=32", "--set", "gene.n_noise=8",
    "--set", "train.batch_size=8", "--set", "train.n_critic=1", "--set", "train.steps=2",
    "--set", "train.eval_every=2", "--set", "train.select_after=0",
    "--set", "train.val_fraction=0.3", "--set", "data.image_size=[16,16]",
]  # fmt: skip


def _phantom(path, n=12, **kw):
    return write_phantom(
        make_phantom(n, 2, size=16, n_genes=128, progress=False, **kw), path, progress=False
    )


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.split(": error: ", 1)[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small 2D phantom with image-only and expression-only patients."""
    out = tmp_path_factory.mktemp("safety")
    return _phantom(out / "ph", n=24, frac_image_only=0.15, frac_expression_only=0.1)


@pytest.fixture(scope="module")
def gene_run(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("gene_run") / "run"
    argv = ["-q", "train", "configs/gene_wgan.yaml", "--data", str(cohort), "--out", str(run)]
    assert main([*argv, *TINY_GENE]) == 0
    return run


def _fake_run(folder: Path, **meta) -> Path:
    """A run folder as far as the checks before loading a model read it (model.json)."""
    folder.mkdir(parents=True)
    meta = {"model": "image_gan", "format": 1, "genes": ["G1", "G2"], "image_size": [16, 16],
            "held_out": [], **meta}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


# 1 ------------------------------------------------------------------------------------------
def test_train_refuses_a_folder_it_did_not_write_and_a_cohort_folder(cohort, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.yaml", "log.csv", "model.json"):
        (mine / name).write_text(f"my {name}")
    argv = ["-q", "train", "configs/gene_wgan.yaml", "--data", str(cohort), *TINY_GENE, "--out"]
    assert main([*argv, str(mine)]) == 2
    assert str(mine) in _error(capsys)
    assert all(
        (mine / n).read_text() == f"my {n}" for n in ("config.yaml", "log.csv", "model.json")
    )
    assert main([*argv, str(cohort.parent)]) == 2
    err = _error(capsys)
    assert str(cohort.parent) in err and "cohort folder" in err
    # the library's own run folder: resumed (extended) without a word
    run = tmp_path / "run"
    assert main([*argv, str(run)]) == 0
    assert main([*argv, str(run), "--set", "train.steps=4"]) == 0


# 2 ------------------------------------------------------------------------------------------
def test_evaluate_refuses_a_folder_it_did_not_write(cohort, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("mine")
    (mine / "report.html").write_text("mine")
    argv = ["-q", "evaluate", "--real", str(cohort), "--synthetic", str(cohort), "--out", str(mine)]
    assert main(argv) == 2
    err = _error(capsys)
    assert str(mine) in err and "--overwrite" in err
    assert (mine / "metrics.csv").read_text() == "mine" and (
        mine / "report.html"
    ).read_text() == "mine"
    # with --overwrite the folder is accepted (here the run stops at its missing --log)
    assert main([*argv, "--overwrite", "--log", str(tmp_path / "nolog.csv")]) == 2
    assert "--log" in _error(capsys)


# 3 ------------------------------------------------------------------------------------------
def _own_files(folder: Path) -> None:
    (folder / "NOTES.txt").write_text("mine")
    (folder / "analysis").mkdir()
    (folder / "analysis" / "table.csv").write_text("mine")


def _kept(folder: Path) -> bool:
    return (folder / "NOTES.txt").read_text() == "mine" and (
        folder / "analysis" / "table.csv"
    ).read_text() == "mine"


def test_overwrite_replaces_only_the_library_s_own_files(gene_run, tmp_path):
    out = tmp_path / "ph"
    argv = ["-q", "cohort", "phantom", "--size", "16", "--out", str(out)]
    assert main([*argv, "--n", "4"]) == 0
    _own_files(out)
    assert main([*argv, "--n", "5", "--overwrite"]) == 0
    assert _kept(out) and read_cohort(out / "cohort.h5ad").n_obs == 5
    assert len(list((out / "images").iterdir())) == 5  # the old images went with the old h5ad
    synth = tmp_path / "synth"
    assert main(["-q", "sample", str(gene_run), "--n", "3", "--out", str(synth)]) == 0
    _own_files(synth)
    (synth / "samples.png").write_bytes(b"an earlier image sample's grid")
    assert (
        main(["-q", "sample", str(gene_run), "--n", "4", "--out", str(synth), "--overwrite"]) == 0
    )
    assert _kept(synth) and read_cohort(synth / "cohort.h5ad").n_obs == 4
    assert not (synth / "samples.png").exists()  # the library's own, of the replaced sample
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no working folder


# 4 ------------------------------------------------------------------------------------------
def test_evaluate_checks_its_inputs_first(cohort, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["-q", "evaluate", "--train", str(cohort), "--real", str(cohort), "--synthetic",
            str(cohort), "--out", str(out)]  # fmt: skip
    assert main([*argv, "--log", str(tmp_path / "nosuch.csv")]) == 2
    err = _error(capsys)
    assert "--log" in err and "nosuch.csv" in err and "Errno" not in err
    assert not out.exists()
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert main([*argv, "--log", str(tmp_path / "table.csv")]) == 2
    assert "--log" in _error(capsys) and not out.exists()
    assert main([*argv, "--log", str(tmp_path / "table.csv"), "--segmenter", "nosuchrun"]) == 2
    assert "--segmenter nosuchrun does not exist" in _error(capsys) and not out.exists()


# 5 ------------------------------------------------------------------------------------------
def test_cohort_setup_writes_as_build_does(tmp_path, capsys):
    X = np.random.default_rng(0).poisson(2.0, (4, 3)).astype(np.float32)
    obs = pd.DataFrame({"grade": ["G2", "G3"] * 2}, index=[f"P{i}" for i in range(4)])
    ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["A", "B", "C"])).write_h5ad(tmp_path / "p.h5ad")
    argv = ["-q", "cohort", "setup", str(tmp_path / "p.h5ad"), "--categorical", "grade", "--out"]
    (tmp_path / "folder").mkdir()
    assert main([*argv, str(tmp_path / "folder")]) == 2
    assert "is a folder" in _error(capsys)
    assert main([*argv, str(tmp_path / "x.txt")]) == 2
    assert ".h5ad" in _error(capsys) and not (tmp_path / "x.txt").exists()
    assert main([*argv, str(tmp_path / "c.h5ad")]) == 0
    assert main([*argv, str(tmp_path / "c.h5ad")]) == 2
    assert "--overwrite" in _error(capsys)
    assert main([*argv, str(tmp_path / "c.h5ad"), "--overwrite"]) == 0


# 6 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["[0,-3]", "[32]", "[32,32,32]"])
def test_config_refuses_bad_image_sizes(size, capsys):
    assert main(["demo", "--dry-run", "--set", f"data.image_size={size}"]) == 2
    assert "data.image_size" in _error(capsys)


# 7 ------------------------------------------------------------------------------------------
def test_a_nan_voxel_is_refused_by_validate_and_by_map(tmp_path, capsys):
    path = _phantom(tmp_path / "ph")
    adata = read_cohort(path)
    pid, rel = adata.obs_names[0], adata.obs["image"].iat[0]
    image = load_image(path.parent / rel)
    image[0, 3, 3] = np.nan
    save_image(image, path.parent / rel)
    assert main(["-q", "cohort", "validate", str(path)]) == 2
    err = _error(capsys)
    assert pid in err and Path(rel).name in err and "non-finite" in err
    assert main(["-q", "map", str(path), "--out", str(tmp_path / "map")]) == 2
    assert _error(capsys) == err and not (tmp_path / "map").exists()


# 8 ------------------------------------------------------------------------------------------
def test_map_refuses_a_numeric_subtype_column(cohort, tmp_path, capsys):
    argv = ["-q", "map", str(cohort), "--out", str(tmp_path / "m"), "--subtypes", "age"]
    assert main(argv) == 2
    err = _error(capsys)
    assert "'age'" in err and "numeric" in err


# 9 ------------------------------------------------------------------------------------------
def test_verbose_keeps_the_input_error_exit_code(tmp_path, capsys):
    assert main(["-v", "cohort", "validate", str(tmp_path / "nosuch.h5ad")]) == 2
    assert "nosuch.h5ad" in capsys.readouterr().err


# 10 -----------------------------------------------------------------------------------------
def test_sample_refuses_flags_it_would_ignore(cohort, gene_run, tmp_path, capsys):
    image_run = _fake_run(tmp_path / "image_run")
    out = str(tmp_path / "out")
    cases = [
        ([str(image_run), "--expression", str(cohort), "--n", "2"], ["--n 2", "24 patients"]),
        ([str(image_run), "--expression", str(cohort), "--like", str(cohort)], ["--expression", "--like"]),
        ([str(image_run), "--like", str(cohort), "--n", "2"], ["--n", "--like"]),
        ([str(image_run), "--expression", str(cohort), "--data", str(cohort)], ["--data", "--expression"]),
        ([str(gene_run), "--n", "2", "--data", str(cohort)], ["--data", "gene run"]),
        ([str(gene_run), "--n", "2", "--expression", str(cohort)], ["--expression"]),
        ([str(gene_run), "--like", str(cohort)], ["--like", "gene run"]),
        ([str(gene_run)], ["--n"]),
    ]  # fmt: skip
    for argv, words in cases:
        assert main(["-q", "sample", *argv, "--out", out]) == 2, argv
        err = _error(capsys)
        assert all(w in err for w in words), (argv, err)
        assert not Path(out).exists()


def test_sample_like_says_which_patients_it_drops(cohort, tmp_path, caplog):
    run = tmp_path / "joint"
    argv = [
        "-q",
        "train",
        "configs/joint_phantom_2d.yaml",
        "--data",
        str(cohort),
        "--out",
        str(run),
    ]
    assert main([*argv, *TINY_JOINT]) == 0
    image_only = int((~read_cohort(cohort).obs["has_expression"]).sum())
    assert image_only > 0
    with caplog.at_level(logging.WARNING):
        assert (
            main(["-q", "sample", str(run), "--like", str(cohort), "--out", str(tmp_path / "s")])
            == 0
        )
    assert f"{image_only} of the 24 patients have no expression and get no image" in caplog.text


def test_an_image_run_without_genes_samples_without_its_cohort(cohort, tmp_path):
    # nothing to draw from the cohort: no genes, and a mask generator draws the masks
    run = tmp_path / "image"
    sets = ["model=image_gan", "image.use_genes=false", "image.train_masks=true",
            "image.shape_association_weight=0", "image.appearance_association_weight=0",
            "image.mask_consistency_weight=0"]  # fmt: skip
    argv = ["-q", "train", "configs/joint_phantom_2d.yaml", "--data", str(cohort), "--out",
            str(run), *(a for s in sets for a in ("--set", s)), *TINY_JOINT]  # fmt: skip
    assert main(argv) == 0
    assert main(["-q", "sample", str(run), "--n", "3", "--out", str(tmp_path / "s")]) == 0
    assert read_cohort(tmp_path / "s" / "cohort.h5ad").n_obs == 3


# 11 -----------------------------------------------------------------------------------------
def test_a_killed_write_s_working_folder_is_removed_by_the_next(tmp_path):
    out = tmp_path / "ph"
    killed = textwrap.dedent(f"""
        import os, signal
        from radiogenomics.data.folders import cohort_folder
        with cohort_folder({str(out)!r}) as tmp:
            (tmp / "half.h5ad").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", killed], env=env).returncode == -9
    (tmp_path / ".ph.keep").mkdir()  # not a working folder's name: stays
    (tmp_path / ".other.abcdefgh.tmp").mkdir()  # another output's: stays
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".ph.") and p.name.endswith(".tmp")]
    assert len(left) == 1
    assert main(["-q", "cohort", "phantom", "--n", "4", "--size", "16", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abcdefgh.tmp", ".ph.keep", "ph"]


# 12 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "other, differs",
    [
        ({"model": "joint_gan"}, "model kind"),
        ({"genes": ["G1", "G3"]}, "genes"),
        ({"numeric": {"age": {"mean": 50.0, "std": 9.0}}}, "numeric covariate"),
        ({"held_out": ["P1"]}, "hold out different patients"),
    ],
)
def test_an_averaged_map_refuses_runs_of_other_designs_or_cohorts(tmp_path, capsys, other, differs):
    base = {"numeric": {"age": {"mean": 60.0, "std": 8.0}}}
    one = _fake_run(tmp_path / "one", **base)
    two = _fake_run(tmp_path / "two", **{**base, **other})
    argv = ["-q", "map", str(one), str(two), "--genomic", "genes", "--data", "x.h5ad"]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 2
    err = _error(capsys)
    assert differs in err and str(one) in err and str(two) in err


# 13 -----------------------------------------------------------------------------------------
def test_messages_name_the_right_thing(tmp_path, capsys):
    # an override's mistake is the override's, not the config file's
    argv = ["demo", "--dry-run", "--config", "configs/joint_phantom_2d.yaml"]
    assert main([*argv, "--set", "phantom.nn=3"]) == 2
    err = _error(capsys)
    assert err.startswith("--set phantom.nn=3:") and "joint_phantom_2d" not in err
    (tmp_path / "bad.yaml").write_text("phantom:\n  nn: 3\n")
    assert main(["demo", "--dry-run", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml" in _error(capsys)
    # a run path that does not exist is not "a folder without a model"
    assert main(["sample", "nosuchrun", "--n", "2", "--out", str(tmp_path / "o")]) == 2
    assert "nosuchrun does not exist" in _error(capsys)
    assert main(["map", "nosuchrun", "--out", str(tmp_path / "o")]) == 2
    assert "nosuchrun does not exist" in _error(capsys)
    # an empty cohort is no valid cohort
    empty = read_cohort(_phantom(tmp_path / "ph", n=4))[:0].copy()
    write_cohort(empty, tmp_path / "empty.h5ad")
    assert main(["-q", "cohort", "validate", str(tmp_path / "empty.h5ad")]) == 2
    assert "no patients" in _error(capsys)


def test_library_warnings_stay_off_the_cli_s_stderr(tmp_path):
    path = _phantom(tmp_path / "ph", n=4)
    adata = read_cohort(path)
    adata.obs_names = ["PH00000"] * 4  # anndata warns on reading non-unique names
    write_cohort(adata, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default"}
    command = [sys.executable, "-m", "radiogenomics", "-q", "cohort", "validate", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "duplicate patient ids" in done.stderr
    assert "Warning" not in done.stderr, done.stderr
