"""`merge_cohorts` and `radiogenomics cohort merge`: one cohort from a gene-only and an
image-only one (the combined-GANs setting), and the errors of inputs that do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radiogenomics import _keys as K
from radiogenomics.cli import main
from radiogenomics.config import load_config
from radiogenomics.data.cohort import CohortError, setup_cohort, validate_cohort
from radiogenomics.data.h5ad import read_cohort, read_valid_cohort, write_cohort
from radiogenomics.data.merge import merge_cohorts, relative_paths
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models.joint_gan import JointGAN


def _gene_only(tmp_path, n=24, seed=1):
    phantom = make_phantom(
        n, 2, size=16, n_genes=128, seed=seed, frac_expression_only=1.0, progress=False
    )
    return write_phantom(phantom, tmp_path / f"genes{seed}", progress=False)


def _image_only(tmp_path, n=20, seed=2, size=16):
    """An image-only cohort: a phantom's images and masks, its expression dropped, ids renamed
    and a lesion covariate of its own (as mini-MIAS has)."""
    phantom = make_phantom(n, 2, size=size, n_genes=128, seed=seed, progress=False)
    path = write_phantom(phantom, tmp_path / f"images{seed}", progress=False)
    adata = read_cohort(path)
    adata = adata[:, []].copy()
    adata.obs[K.HAS_EXPRESSION] = False
    adata.obs_names = [f"IM{i:03d}" for i in range(adata.n_obs)]
    adata.obs["severity"] = np.where(np.arange(adata.n_obs) % 2, "benign", "malignant")
    adata.obs = adata.obs.drop(columns=["sex", "age", "subtype"])
    adata.obsm.clear()
    rg = adata.uns[K.UNS]
    rg.pop(K.PHANTOM)
    rg[K.COVARIATES] = {K.CATEGORICAL: {}, K.NUMERIC: {}}
    setup_cohort(adata, categorical=["severity"], numeric=[])
    validate_cohort(adata, progress=False)
    return write_cohort(adata, tmp_path / f"images{seed}" / "images_only.h5ad")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merge")
    return tmp, _gene_only(tmp), _image_only(tmp)


def test_merge_gene_only_and_image_only(inputs):
    tmp, genes, images = inputs
    a, b = read_valid_cohort(genes), read_valid_cohort(images)
    merged = merge_cohorts([a, b], names=["genes", "images"])
    summary = validate_cohort(merged, progress=False)
    assert summary["patients"] == a.n_obs + b.n_obs
    assert summary["with_expression"] == a.n_obs and summary["with_image"] == b.n_obs
    assert summary["paired"] == 0 and summary["genes"] == a.n_vars
    assert summary["image_size"] == [16, 16]
    assert np.isnan(merged[b.obs_names].X).all()
    np.testing.assert_array_equal(merged[a.obs_names].X, a.X)
    cov = merged.uns[K.UNS][K.COVARIATES]
    # the gene cohort's covariates condition expression and stay; the image cohort's severity,
    # which the expression patients lack, stays an obs column only
    assert cov[K.CATEGORICAL] == {"sex": ["F", "M"], "subtype": ["A", "B", "C"]}
    assert list(cov[K.NUMERIC]) == ["age"]
    assert set(merged.obs["severity"].dropna()) == {"benign", "malignant"}
    assert K.PHANTOM not in merged.uns[K.UNS]  # the images are not the phantom's
    assert all(p.startswith("/") for p in merged.obs[K.IMAGE] if p)
    # written next to the inputs, its paths are relative to its folder and read back
    path = write_cohort(relative_paths(merged, tmp / "out"), tmp / "out" / "merged.h5ad")
    back = read_valid_cohort(path)
    assert not any(str(p).startswith("/") for p in back.obs[K.IMAGE] if p)
    assert back.obs[K.HAS_IMAGE].sum() == b.n_obs


def test_separate_joint_gan_trains_on_a_merged_cohort(inputs, tmp_path):
    tmp, genes, images = inputs
    merged = merge_cohorts([read_valid_cohort(genes), read_valid_cohort(images)])
    validate_cohort(merged, progress=False)
    cfg = load_config(
        None,
        [
            "model=joint_gan", "joint.mode=separate", "joint.gene_steps=1", "image.use_genes=false",
            "data.spatial_dims=2", "image.channels=[16,8]", "image.critic_channels=[8,16]",
            "image.n_noise=8", "image.n_code=8", "image.n_hidden=32", "gene.n_hidden=32",
            "gene.n_noise=8", "train.batch_size=8", "train.n_critic=1", "train.steps=2",
            "train.eval_every=2", "train.select_after=0", "train.val_fraction=0.3",
        ],
    )  # fmt: skip
    model = JointGAN(merged, cfg, progress=False)
    model.train(run_dir=tmp_path / "run", progress=False)
    synth = model.sample(6, seed=0)
    assert synth.images.shape == (6, 1, 16, 16) and synth.masks.shape == (6, 1, 16, 16)
    assert np.isfinite(synth.adata.X).all() and synth.adata.n_vars == 128
    assert set(synth.adata.obs["subtype"]) <= {"A", "B", "C"}
    path = synth.write(tmp_path / "synth", progress=False)
    summary = validate_cohort(read_cohort(path), progress=False)
    assert summary["paired"] == 6


def test_duplicate_ids_are_named_or_prefixed(inputs):
    tmp, genes, _ = inputs
    a = read_valid_cohort(genes)
    with pytest.raises(CohortError, match=r"'PH00000' \(genes and again\)"):
        merge_cohorts([a, a.copy()], names=["genes", "again"])
    merged = merge_cohorts([a, a.copy()], names=["genes", "again"], prefix=True)
    assert "genes-PH00000" in merged.obs_names and "again-PH00000" in merged.obs_names
    validate_cohort(merged, progress=False)


def test_mismatches_are_refused(inputs, tmp_path):
    tmp, genes, images = inputs
    a, b = read_valid_cohort(genes), read_valid_cohort(images)
    other = read_valid_cohort(_gene_only(tmp_path, seed=3))
    other = other[:, :100].copy()
    other.obs_names = [f"X{i}" for i in range(other.n_obs)]
    with pytest.raises(CohortError, match=r"not the same genes \(28 only in genes"):
        merge_cohorts([a, other], names=["genes", "other"])
    big = read_valid_cohort(_image_only(tmp_path, seed=4, size=32))
    big.obs_names = [f"B{i}" for i in range(big.n_obs)]
    with pytest.raises(CohortError, match=r"differ in image_size: .*\[16, 16\].*\[32, 32\]"):
        merge_cohorts([b, big], names=["small", "big"])
    flat = b.copy()
    flat.obs_names = [f"F{i}" for i in range(flat.n_obs)]
    flat.uns[K.UNS][K.SPATIAL_DIMS] = 3
    with pytest.raises(CohortError, match=r"differ in spatial_dims"):
        merge_cohorts([b, flat], names=["b", "flat"])
    renamed = b.copy()
    renamed.obs_names = [f"R{i}" for i in range(renamed.n_obs)]
    renamed.uns[K.UNS][K.COVARIATES] = {K.CATEGORICAL: {}, K.NUMERIC: {"severity": {}}}
    with pytest.raises(CohortError, match=r"'severity' is categorical in b but numeric in r"):
        merge_cohorts([b, renamed], names=["b", "r"])


def test_cli_merge(inputs, tmp_path, capsys):
    _, genes, images = inputs
    out = tmp_path / "merged.h5ad"
    assert main(["-q", "cohort", "merge", str(genes), str(images), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["with_expression"] == 24 and summary["with_image"] == 20
    assert main(["-q", "cohort", "validate", str(out)]) == 0
    # an existing output is replaced only with --overwrite
    assert main(["-q", "cohort", "merge", str(genes), str(images), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    args = ["-q", "cohort", "merge", str(genes), str(images), "--out", str(out), "--overwrite"]
    assert main(args) == 0
    # duplicates: a one-line error naming them, or --prefix
    capsys.readouterr()
    fresh = tmp_path / "fresh.h5ad"
    assert main(["-q", "cohort", "merge", str(genes), str(genes), "--out", str(fresh)]) == 2
    assert "more than once" in capsys.readouterr().err
    split = tmp_path / "split"
    assert main(["-q", "cohort", "split", str(genes), "--out", str(split)]) == 0
    train, test = split / "train.h5ad", split / "test.h5ad"
    again = tmp_path / "again.h5ad"
    assert main(["-q", "cohort", "merge", str(genes), str(test), "--out", str(again)]) == 2
    err = capsys.readouterr().err
    assert "in more than one input" in err and "--prefix" in err and len(err.splitlines()) == 1
    args = ["-q", "cohort", "merge", str(genes), str(test), "--out", str(again), "--prefix"]
    assert main(args) == 0
    assert read_cohort(again).obs_names[0].startswith("genes1-")
    assert main(["-q", "cohort", "merge", str(train), "--out", str(fresh)]) == 2
    assert "at least two" in capsys.readouterr().err
