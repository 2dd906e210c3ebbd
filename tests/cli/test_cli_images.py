"""The image-side CLI contract end to end on a small 2D phantom: segmentation net, image GAN,
sampling to disk, image evaluation with the segmentation net."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiogenomics.cli import main
from radiogenomics.data.cohort import make_cohort
from radiogenomics.data.h5ad import read_cohort, write_patients
from radiogenomics.models.segmenter import Segmenter

TINY_GAN = [
    "--set", "image.channels=[16,8,4]", "--set", "image.critic_channels=[4,8]",
    "--set", "image.n_noise=8", "--set", "image.n_code=4", "--set", "image.n_hidden=16",
    "--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "train.n_critic=1",
    "--set", "train.eval_every=2", "--set", "train.select_after=0",
]  # fmt: skip
TINY_SEG = [
    "--set", "model=segmentation", "--set", "segment.channels=[4,8,16]",
    "--set", "segment.strides=[2,2]", "--set", "segment.steps=6", "--set", "segment.batch_size=4",
    "--set", "segment.eval_every=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_images")
    assert main(["-q", "cohort", "phantom", "--n", "40", "--size", "32", "--out",
                 str(out / "phantom")]) == 0  # fmt: skip
    assert main(["-q", "cohort", "split", str(out / "phantom" / "cohort.h5ad"), "--out",
                 str(out / "split"), "--test-fraction", "0.25"]) == 0  # fmt: skip
    return out / "split"


def test_train_sample_evaluate_images(split, tmp_path, capsys):
    train = str(split / "train.h5ad")
    seg, gan, synth, report = (tmp_path / n for n in ("seg", "gan", "synth", "report"))
    assert main(["-q", "train", "configs/joint_phantom_2d.yaml", "--data", train, "--out", str(seg),
                 *TINY_SEG]) == 0  # fmt: skip
    assert (seg / "model.safetensors").is_file()
    assert main(["-q", "train", "configs/joint_phantom_2d.yaml", "--data", train, "--out", str(gan),
                 "--set", "model=image_gan", "--set", "train.val_fraction=0.3",
                 *TINY_GAN]) == 0  # fmt: skip
    for name in ("model.safetensors", "model.json", "config.yaml", "log.csv"):
        assert (gan / name).is_file(), name

    checks = tmp_path / "checks"
    assert main(["-q", "evaluate", "--image-run", str(gan), "--data", train, "--segmenter",
                 str(seg), "--out", str(checks)]) == 0  # fmt: skip
    planted = pd.read_csv(checks / "planted_features.csv", index_col=0)
    assert list(planted.columns) == ["real", "synthetic", "fully_synthetic"]
    assert (checks / "partner_swap.csv").is_file()
    fidelity = pd.read_csv(checks / "mask_fidelity.csv", index_col=0)
    assert list(fidelity.index) == ["real", "synthetic"] and fidelity["dice"].between(0, 1).all()
    assert (fidelity["n"] == 9).all()  # the GAN's validation patients (0.3 of 30)

    capsys.readouterr()
    assert main(["-q", "sample", str(gan), "--n", "5", "--out", str(synth)]) == 2
    assert "--data" in capsys.readouterr().err  # an image run needs expression from somewhere
    assert main(["-q", "sample", str(gan), "--data", train, "--n", "6", "--out", str(synth)]) == 0
    cohort = read_cohort(synth / "cohort.h5ad")
    assert cohort.n_obs == 6 and cohort.obs["has_image"].all()
    assert (synth / "samples.png").is_file()
    assert sorted(p.name for p in (synth / "images").iterdir())[0].endswith(".nii.gz")

    like = tmp_path / "like"
    assert main(["-q", "sample", str(gan), "--like", str(split / "test.h5ad"), "--out",
                 str(like)]) == 0  # fmt: skip
    twins, test = read_cohort(like / "cohort.h5ad"), read_cohort(split / "test.h5ad")
    assert list(twins.obs_names) == [f"{p}-syn" for p in test.obs_names]
    np.testing.assert_array_equal(twins.X, test.X)  # the real genes condition the images

    assert main(["-q", "evaluate", "--real", str(split / "test.h5ad"), "--synthetic",
                 str(synth / "cohort.h5ad"), "--segmenter", str(seg), "--out",
                 str(report)]) == 0  # fmt: skip
    table = pd.read_csv(report / "metrics.csv", index_col=0)
    assert list(table.index) == ["synthetic", "region-mean baseline", "real (reference)"]
    assert {"frd", "dice", "detection_auc", "ms_ssim_diversity", "encoder_fd"} <= set(table)
    assert table["dice"].between(0, 1).all()
    assert (report / "report.md").is_file() and (report / "synthetic_samples.png").is_file()
    # the segmentation run loads and predicts the held-out patients' masks
    assert Segmenter.load(seg).predict(test).shape[0] == test.n_obs

    # augmentation experiment: lesion classifier with and without the synthetic lesions
    normal = tmp_path / "normal"
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"subject": [f"w{i // 2}" for i in range(12)]},
                       index=[f"n{i}" for i in range(12)])  # fmt: skip
    tissue = make_cohort(None, obs)
    tissue.obs["has_image"] = tissue.obs["has_mask"] = True
    write_patients(tissue, rng.uniform(0, 1, (12, 1, 32, 32)).astype(np.float32),
                   np.zeros((12, 1, 32, 32), np.uint8), normal, progress=False)  # fmt: skip
    aug = tmp_path / "aug"
    assert main(["-q", "evaluate", "--train", train, "--real", str(split / "test.h5ad"),
                 "--synthetic", str(synth / "cohort.h5ad"), "--negatives",
                 str(normal / "cohort.h5ad"), "--repeats", "1", "--classifier-steps", "3",
                 "--out", str(aug)]) == 0  # fmt: skip
    runs = pd.read_csv(aug / "augmentation.csv")
    assert list(runs.setting) == ["real", "real+synthetic", "synthetic", "first-order baseline"]
    assert runs.n_lesions.tolist() == [30, 36, 6, 30] and runs.f1.between(0, 1).all()
    assert (aug / "augmentation_summary.csv").is_file()


def test_gene_samples_condition_an_image_run(split, tmp_path):
    """GeneGAN -> ImageGAN through files: a gene run's synthetic expression, given to an image
    run with `sample --expression`, gets one image per patient, and the result validates."""
    train = str(split / "train.h5ad")
    genes, gan = tmp_path / "genes", tmp_path / "gan"
    assert main(["-q", "train", "configs/gene_wgan.yaml", "--data", train, "--out", str(genes),
                 "--set", "train.steps=5", "--set", "gene.n_hidden=16",
                 "--set", "train.val_fraction=0"]) == 0  # fmt: skip
    assert main(["-q", "sample", str(genes), "--n", "5", "--out", str(tmp_path / "expr")]) == 0
    assert main(["-q", "train", "configs/joint_phantom_2d.yaml", "--data", train, "--out", str(gan),
                 "--set", "model=image_gan", *TINY_GAN]) == 0  # fmt: skip
    out = tmp_path / "paired"
    assert main(["-q", "sample", str(gan), "--expression", str(tmp_path / "expr" / "cohort.h5ad"),
                 "--out", str(out)]) == 0  # fmt: skip
    expression = read_cohort(tmp_path / "expr" / "cohort.h5ad")
    paired = read_cohort(out / "cohort.h5ad")
    assert list(paired.obs_names) == [f"{p}-syn" for p in expression.obs_names]
    np.testing.assert_array_equal(paired.X, expression.X)  # the genes the images were made for
    assert paired.obs["has_image"].all() and paired.obs["has_expression"].all()
    assert main(["-q", "cohort", "validate", str(out / "cohort.h5ad")]) == 0
