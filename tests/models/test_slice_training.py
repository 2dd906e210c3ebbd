"""The image models on a cohort of slice stacks: every slice trains, paired with its patient's
expression; the split, the held-out scores and sampling stay per patient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import STACK_SLICES, TINY_JOINT

from radiogenomics import _keys as K
from radiogenomics.config import Config, load_config
from radiogenomics.data.cohort import validate_cohort
from radiogenomics.data.dataset import evaluation_slice
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.models.data import ImageData
from radiogenomics.models.image_gan import ImageGAN
from radiogenomics.models.image_training import batch_sampler
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.models.segmenter import Segmenter

# fixed intensities keep the marker in pixel (0, 0): (10 * patient + slice) / 1000
FIXED = ["data.spatial_dims=2", "data.intensity=fixed", "data.a_min=0", "data.a_max=1"]
TINY_IMAGE = [
    *FIXED,
    "image.channels=[16,8,4]",
    "image.critic_channels=[4,8]",
    "image.n_noise=8",
    "image.n_code=4",
    "image.n_hidden=16",
    "image.n_layers=1",
    "train.steps=2",
    "train.batch_size=4",
    "train.n_critic=1",
    "train.val_fraction=0.3",
    "train.eval_every=2",
    "train.select_after=0",
]


def marker(images: torch.Tensor) -> np.ndarray:
    """(patient number, slice) of each image."""
    code = np.rint((images[:, 0, 0, 0].numpy() + 1) / 2 * 1000).astype(int)
    return np.c_[code // 10, code % 10]


@pytest.fixture(scope="module")
def image_gan(stacked_cohort):
    return ImageGAN(stacked_cohort, load_config(None, TINY_IMAGE), progress=False)


def test_image_data_expands_every_slice_with_its_patient(image_gan):
    data = image_gan.image_data
    assert data.stacked and data.patients == [f"P{i:03d}" for i in range(12)]
    np.testing.assert_array_equal(data.n_slices, STACK_SLICES)
    assert data.slice_images.shape == (31, 3, 16, 16) and data.slice_masks.shape == (31, 1, 16, 16)
    np.testing.assert_array_equal(data.slice_owner, np.repeat(np.arange(12), STACK_SLICES))
    # each slice is its owner's: the marker's patient number is the owner
    np.testing.assert_array_equal(marker(data.slice_images)[:, 0], data.slice_owner)
    # one entry per patient: expression (gene G0 = the patient's number, standardised)
    assert data.expression.shape[0] == len(data.images) == 12
    g0 = data.expression[:, 0].numpy()
    assert np.all(np.diff(g0) > 0)  # patient i's own profile, in order
    picks = [evaluation_slice(p, n) for p, n in zip(data.patients, STACK_SLICES, strict=True)]
    np.testing.assert_array_equal(marker(data.images), np.c_[np.arange(12), picks])


def test_the_split_keeps_every_slice_of_a_patient_on_its_side(image_gan):
    data = image_gan.image_data
    assert not set(data.train) & set(data.held_out)
    assert len(data.train) + len(data.held_out) == 12
    for side in (data.train, data.held_out):
        slices = data.slices(side)
        owners = marker(slices.images)[:, 0]
        assert set(owners) == set(side)  # all of these patients' slices, and no other's
        assert len(owners) == data.n_slices[side].sum()
    assert image_gan.meta["held_out"] == [data.patients[i] for i in data.held_out]


def test_batches_draw_patients_uniformly_then_one_of_their_slices(image_gan):
    img, data = image_gan.config.image, image_gan.image_data
    draw = batch_sampler(data, img, 512, image_gan.generator, image_gan.critic, torch.device("cpu"))
    batch = draw(torch.Generator().manual_seed(0))
    train = np.asarray(data.train)
    # a left-right flip moves the marker to the other top corner; it is darker than any pixel
    corner = torch.minimum(batch.images[:, :1, :1, :1], batch.images[:, :1, :1, -1:])
    owner, slice_ = marker(corner).T
    assert set(owner) <= set(train)  # training patients only
    # each image's expression is its patient's (G0 = the patient's number, standardised)
    np.testing.assert_array_equal(batch.expression[:, 0].numpy(), data.expression[owner, 0].numpy())
    assert (slice_ < np.asarray(STACK_SLICES)[owner]).all()
    # and its mask is that slice's (the discs differ in size from slice to slice)
    first = np.cumsum(STACK_SLICES) - STACK_SLICES
    areas = data.slice_masks.sum((1, 2, 3))[first[owner] + slice_]
    torch.testing.assert_close(batch.masks[:, 0].sum((1, 2)), areas)
    # patients uniformly (each about 1/8), not slices (a 5-slice patient would be 5 x a 1-slice one)
    share = np.bincount(owner, minlength=12)[train] / len(owner)
    assert share.min() > 0.07 and share.max() < 0.19
    # and within a patient every slice
    many = train[np.asarray(STACK_SLICES)[train] >= 3][0]
    assert set(slice_[owner == many]) == set(range(STACK_SLICES[many]))


def test_train_sample_and_generate_for_give_one_image_per_patient(
    image_gan, stacked_cohort, tmp_path
):
    summary = image_gan.train(progress=False)
    assert summary["steps"] == 2
    assert image_gan.meta["summary"]["n_train"] == len(image_gan.image_data.train)  # patients
    synth = image_gan.sample(5, seed=0)
    assert synth.images.shape == (5, 3, 16, 16)
    made = image_gan.generate_for(stacked_cohort, seed=0)
    assert made.images.shape == (12, 3, 16, 16) and made.masks.shape == (12, 1, 16, 16)
    # a synthetic patient is one 2D slice: no stacks declared in what is written
    assert K.SLICE_AXIS not in made.adata.uns["rg"] and K.N_SLICES not in made.adata.obs
    written = read_cohort(made.write(tmp_path / "synth", progress=False))
    assert "slices" not in validate_cohort(written, progress=False)


def test_joint_gan_and_segmenter_train_on_the_slices(stacked_cohort, tmp_path):
    cfg = load_config(None, [*TINY_JOINT, *FIXED, "gene.covariates=[sex]"])
    joint = JointGAN(stacked_cohort, cfg, progress=False)
    assert joint.image_data.stacked and len(joint.image_data.slice_images) == 31
    joint.train(progress=False)
    assert joint.sample(3, seed=0).images.shape == (3, 3, 16, 16)

    seg_cfg = Config()
    seg_cfg.data.spatial_dims = 2
    s = seg_cfg.segment
    s.channels, s.strides, s.num_res_units, s.steps, s.eval_every, s.batch_size = (
        [4, 8], [2], 1, 2, 2, 4,
    )  # fmt: skip
    seg = Segmenter(stacked_cohort, seg_cfg, progress=False)
    assert seg.train(progress=False)["n_train"] == len(seg.image_data.train)
    scores = seg.evaluate()
    assert scores["n"] == len(seg.image_data.held_out)  # one score per held-out patient
    with pytest.raises(ValueError, match="stack slices"):
        seg.write_masks(stacked_cohort, tmp_path)


def test_one_image_per_file_draws_as_before():
    # without stacks, drawing a slice is the patient itself and takes nothing from the stream
    images = torch.arange(5.0).view(5, 1, 1, 1)
    data = ImageData(
        patients=list("abcde"), rows=np.arange(5), images=images, masks=images * 0,
        expression=torch.zeros(5, 0), present=torch.zeros(5, dtype=torch.bool),
        train=np.array([0, 2, 4]), held_out=np.array([1, 3]),
    )  # fmt: skip
    slices = data.slices(data.train)
    assert not slices.stacked and torch.equal(slices.images, images[[0, 2, 4]])
    rng = torch.Generator().manual_seed(3)
    idx = torch.tensor([2, 0, 1])
    assert torch.equal(slices.draw(idx, rng), idx)
    assert torch.equal(
        torch.rand(2, generator=rng), torch.rand(2, generator=torch.Generator().manual_seed(3))
    )
