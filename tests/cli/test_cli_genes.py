"""The gene-side CLI contract end to end on a gene-only cohort: split, select-genes, train,
sample, evaluate (and its k-fold form)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics.cli import main
from radiogenomics.data.cohort import make_cohort
from radiogenomics.data.h5ad import read_cohort, write_cohort

FAST = [
    "--set", "train.steps=40", "--set", "train.eval_every=20", "--set", "train.checkpoint_every=20",
    "--set", "gene.n_hidden=32", "--set", "gene.n_noise=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def gene_cohort(tmp_path_factory):
    """Gene-only cohort: 90 patients, 40 genes in 4 correlated blocks, subtype shifts block 0."""
    rng = np.random.default_rng(0)
    n, blocks = 90, 4
    subtype = np.array(["X", "Y", "Z"])[np.arange(n) % 3]
    factors = rng.normal(size=(n, blocks)) + (subtype == "X")[:, None] * [2, 0, 0, 0]
    X = np.repeat(factors, 10, axis=1) + 0.5 * rng.normal(size=(n, 40)) + 8
    ids = [f"TCGA-{i:04d}" for i in range(n)]
    expr = pd.DataFrame(X, index=ids, columns=[f"GENE{j}" for j in range(40)])
    obs = pd.DataFrame({"subtype": subtype, "age": rng.uniform(30, 80, n)}, index=ids)
    out = tmp_path_factory.mktemp("genes")
    return write_cohort(
        make_cohort(expr, obs, categorical=["subtype"], numeric=["age"]), out / "cohort.h5ad"
    )


def test_split_train_sample_evaluate(gene_cohort, tmp_path, capsys):
    split = tmp_path / "split"
    assert main(["-q", "cohort", "split", str(gene_cohort), "--out", str(split),
                 "--stratify", "subtype", "--test-fraction", "0.3"]) == 0  # fmt: skip
    train, test = read_cohort(split / "train.h5ad"), read_cohort(split / "test.h5ad")
    assert (train.n_obs, test.n_obs) == (63, 27)
    assert not set(train.obs_names) & set(test.obs_names)

    run = tmp_path / "run"
    argv = ["-q", "train", "configs/gene_wgan.yaml", "--data", str(split / "train.h5ad"),
            "--out", str(run), *FAST]  # fmt: skip
    assert main(argv) == 0
    for name in ("model.safetensors", "model.json", "config.yaml", "log.csv", "loss_curves.png"):
        assert (run / name).is_file(), name
    capsys.readouterr()
    assert main(argv) == 0  # a finished run resumes to the same end and does not retrain
    assert '"steps": 40' in capsys.readouterr().out

    synth_dir = tmp_path / "synth"
    assert main(["-q", "sample", str(run), "--n", "60", "--out", str(synth_dir),
                 "--covariate", "subtype=X", "--seed", "3"]) == 0  # fmt: skip
    synth = read_cohort(synth_dir / "cohort.h5ad")
    assert synth.shape == (60, 40) and (synth.obs["subtype"] == "X").all()
    assert list(synth.obs["subtype"].cat.categories) == ["X", "Y", "Z"]
    assert synth.uns["rg"]["synthetic"]["seed"] == 3
    assert abs(float(synth.X.mean()) - 8.3) < 2  # the user's scale (real mean ~8.2)

    capsys.readouterr()
    # a second sample into the same folder replaces the first only when asked, and whole
    assert main(["-q", "sample", str(run), "--n", "90", "--out", str(synth_dir)]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert read_cohort(synth_dir / "cohort.h5ad").n_obs == 60
    assert main(["-q", "sample", str(run), "--n", "90", "--out", str(synth_dir),
                 "--overwrite"]) == 0  # fmt: skip
    assert main(["-q", "cohort", "validate", str(synth_dir / "cohort.h5ad")]) == 0
    out = tmp_path / "eval"
    assert main(["-q", "evaluate", "--train", str(split / "train.h5ad"), "--real",
                 str(split / "test.h5ad"), "--synthetic", str(synth_dir / "cohort.h5ad"),
                 "--covariate", "subtype", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out  # per score, beaten or not by the Gaussian
    assert "the multivariate Gaussian" in printed and "beats" in printed
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    assert list(metrics.index) == [
        "real (ceiling)", "synthetic", "independent Gaussian", "multivariate Gaussian"
    ]  # fmt: skip
    assert metrics.loc["real (ceiling)", "distance_ratio"] == pytest.approx(1.0)
    # the multivariate baseline recovers the blocks; the independent one only the part of
    # block 0's correlation that the subtype shift explains
    assert metrics.loc["multivariate Gaussian", "distance_ratio"] > 0.9
    assert metrics.loc["independent Gaussian", "distance_ratio"] < 0.7
    report = (out / "report.md").read_text()
    assert "distance_ratio" in report and "embedding.png" in report
    for name in ("distance_matrices", "dendrograms", "gene_distributions", "embedding"):
        assert (out / f"{name}.png").stat().st_size > 5_000


def test_kfold_evaluation(gene_cohort, tmp_path, capsys):
    out = tmp_path / "kfold"
    argv = ["-q", "evaluate", "--data", str(gene_cohort), "--kfold", "3", "--config",
            "configs/gene_wgan.yaml", "--stratify", "subtype", "--out", str(out), *FAST]  # fmt: skip
    assert main(argv) == 0
    scores = pd.read_csv(out / "kfold.csv", index_col=0)
    assert sorted(scores["fold"].unique()) == [0, 1, 2]
    assert (scores.index == "GeneGAN").sum() == 3
    assert "distance_ratio" in capsys.readouterr().out
    report = (out / "report.md").read_text()  # the folds summarised for a reader
    assert report.startswith("# Gene realism: 3-fold cross-validation of 90 patients")
    assert "| GeneGAN |" in report and " ± " in report and "## Fold by fold" in report
    assert "## Against the multivariate Gaussian" in report and "'GeneGAN', mean" in report


def test_gene_cli_errors(gene_cohort, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nowhere"), "--n", "5", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--real", "x.h5ad", "--out", str(tmp_path)]) == 2
    assert "--train, --synthetic" in capsys.readouterr().err
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("KEGG_hsa05214_GLIOMA\tglioma\tEGFR\tPDGFRA\tTP53\n")
    assert main(["select-genes", "--data", str(gene_cohort), "--out", str(tmp_path / "s.h5ad"),
                 "--set", f"select.gmt={gmt}", "--set", "select.pathways=[glioma]"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "sets.gmt" in err and "EGFR" in err and "GENE0" in err
    # (tmp_path holds the user's sets.gmt now: an evaluation would refuse it as --out)
    assert main(["-q", "evaluate", "--data", str(gene_cohort), "--out", str(tmp_path / "e")]) == 2
    assert "evaluate needs" in capsys.readouterr().err


def test_select_genes_by_variance_and_de(gene_cohort, tmp_path):
    out = tmp_path / "top.h5ad"
    assert main(["-q", "select-genes", "--data", str(gene_cohort), "--out", str(out),
                 "--set", "select.method=variance", "--set", "select.n_top=10"]) == 0  # fmt: skip
    assert read_cohort(out).n_vars == 10
    out = tmp_path / "de.h5ad"
    assert main(["-q", "select-genes", "--data", str(gene_cohort), "--out", str(out),
                 "--set", "select.method=de", "--set", "select.groupby=subtype",
                 "--set", "select.group=X", "--set", "select.log_base=2",
                 "--set", "select.min_log2fc=1"]) == 0  # fmt: skip
    selected = read_cohort(out)
    # subtype X shifts block 0 (GENE0-9) by 2 on a log2 scale: those genes and no others
    assert set(selected.var_names) == {f"GENE{j}" for j in range(10)}
    assert (tmp_path / "de_volcano.png").is_file() and (tmp_path / "de_de.csv").is_file()


def test_select_gmt_resolves_against_the_config_folder(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    genes = ["EGFR", "TP53", "PDGFRA", "MYC", "KRAS"]
    expr = pd.DataFrame(rng.normal(5, 1, (6, 5)), index=[f"P{i}" for i in range(6)], columns=genes)
    cohort = write_cohort(make_cohort(expr, pd.DataFrame(index=expr.index)), tmp_path / "c.h5ad")
    (tmp_path / "configs" / "sets").mkdir(parents=True)
    (tmp_path / "configs" / "sets" / "s.gmt").write_text("GLIOMA\tglioma\tEGFR\tTP53\n")
    config = tmp_path / "configs" / "select.yaml"
    config.write_text("select:\n  method: pathway\n  gmt: sets/s.gmt\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not the config's folder
    out = tmp_path / "sel.h5ad"
    assert main(["-q", "select-genes", "--config", str(config), "--data", str(cohort),
                 "--out", str(out)]) == 0  # fmt: skip
    assert sorted(read_cohort(out).var_names) == ["EGFR", "TP53"]
    # with --set it is a command-line path: relative to the working folder
    argv = ["-q", "select-genes", "--config", str(config), "--data", str(cohort),
            "--out", str(out), "--overwrite", "--set", "select.gmt=sets/s.gmt"]  # fmt: skip
    assert main(argv) == 2
    assert "sets/s.gmt" in capsys.readouterr().err


def test_shipped_gene_config_finds_the_shared_gmt():
    from pathlib import Path

    from radiogenomics.config import load_config

    repo = Path(__file__).resolve().parents[2]
    if not (repo.parent / "shared" / "data" / "genesets").is_dir():
        pytest.skip("../shared/data/genesets is absent")
    gmt = load_config(repo / "configs" / "gene_wgan.yaml").select.gmt
    assert (repo / "configs" / gmt).is_file()  # relative to the config's folder
