"""The flow backend (`image.backend: flow`) in ImageGAN and JointGAN on small phantoms: training
through the engine, seeded sampling, generate_for, save/load, a model without mask generator,
the joint mode's mask terms reaching the gene generator, and the learned map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_JOINT

from radiogenomics import _keys as K
from radiogenomics.config import load_config
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models.image_gan import ImageGAN
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.models.joint_training import make_steps
from radiogenomics.nn.flow import FlowSide
from radiogenomics.radiomap import learned
from radiogenomics.radiomap.features import IMAGE_FEATURES

# what turns a tiny GAN config into a tiny flow one
FLOW = ["image.backend=flow", "image.gene_aux_weight=0", "image.flow_channels=[8,8]",
        "image.flow_steps=2"]  # fmt: skip
IMAGE = ["image.channels=[8,4]", "image.critic_channels=[4,8]", "image.n_noise=8",
         "image.n_code=4", "image.n_hidden=16", "image.n_layers=1", "train.steps=3",
         "train.batch_size=4", "train.n_critic=1", "train.val_fraction=0.2",
         "train.eval_every=3", "train.select_after=0", "train.checkpoint_every=2"]  # fmt: skip


def _cohort(tmp_path_factory, dims: int, name: str):
    phantom = make_phantom(
        32, dims, size=16 if dims == 2 else 8, n_genes=128, seed=5, frac_image_only=0.1,
        frac_expression_only=0.1, progress=False,
    )  # fmt: skip
    return read_cohort(write_phantom(phantom, tmp_path_factory.mktemp(name), progress=False))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return _cohort(tmp_path_factory, 2, "flow2d")


@pytest.fixture(scope="module")
def image_flow(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("image_flow")
    model = ImageGAN(cohort, load_config(None, [*IMAGE, *FLOW]), progress=False)
    summary = model.train(run, progress=False)
    return model, run, summary


def test_image_flow_trains_with_the_flow_loss_and_the_mask_critic(image_flow):
    model, run, summary = image_flow
    assert isinstance(model.image_side, FlowSide) and model.critic.image is None
    assert summary["steps"] == 3 and summary["best_step"] == 3  # selected on realism_score
    log = pd.read_csv(run / "log.csv")
    assert {"flow", "critic_mask", "generator_mask", "val_score"} <= set(log.columns)
    assert "gp" not in log.columns  # no image critic
    assert np.isfinite(log[["flow", "critic_mask", "val_score"]].to_numpy()).all()
    assert "backend=flow" in repr(model)


def test_image_flow_samples_reproducibly_and_reloads(image_flow, cohort):
    model, run, _ = image_flow
    synth = model.sample(6, seed=1)
    assert synth.images.shape == (6, 1, 16, 16) and synth.masks.shape == (6, 1, 16, 16)
    assert synth.images.min() >= -1 and synth.images.max() <= 1
    assert np.array_equal(synth.images, model.sample(6, seed=1).images)
    assert not np.array_equal(synth.images, model.sample(6, seed=2).images)
    again = ImageGAN.load(run, cohort)
    assert isinstance(again.image_side, FlowSide)
    assert np.array_equal(again.sample(6, seed=1).images, synth.images)
    made = model.generate_for(cohort, seed=0)  # own masks where they have one
    with_expr = cohort.obs[K.HAS_EXPRESSION].to_numpy(bool)
    assert made.images.shape == (with_expr.sum(), 1, 16, 16)


def test_image_flow_without_mask_generator_trains_the_flow_alone(cohort, tmp_path):
    cfg = load_config(None, [*IMAGE, *FLOW, "image.train_masks=false", "train.steps=2",
                             "train.eval_every=2"])  # fmt: skip
    model = ImageGAN(cohort, cfg, progress=False)
    model.train(tmp_path, progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert "flow" in log.columns and "critic_mask" not in log.columns
    assert model.image_side.mask is None
    masks = np.zeros((3, 1, 16, 16), np.float32)
    masks[:, :, 4:10, 5:12] = 1
    images = model.generate(masks, cohort[:3], seed=0)
    assert images.shape == (3, 1, 16, 16) and np.isfinite(images).all()


def test_image_flow_in_3d(tmp_path_factory):
    cohort = _cohort(tmp_path_factory, 3, "flow3d")
    cfg = load_config(None, [*IMAGE, *FLOW, "data.spatial_dims=3", "train.steps=1",
                             "train.eval_every=1", "image.channels=[4,4]"])  # fmt: skip
    model = ImageGAN(cohort, cfg, progress=False)
    model.train(None, progress=False)
    synth = model.sample(3, seed=0)
    assert synth.images.shape == (3, 1, 8, 8, 8) and np.isfinite(synth.images).all()


# ------------------------------------------------------------------------------------------
# the joint model

JOINT_FLOW = [*TINY_JOINT, *FLOW, "joint.use_latent=false", "image.shape_association_weight=1"]


@pytest.fixture(scope="module")
def joint_flow(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("joint_flow")
    model = JointGAN(cohort, load_config(None, JOINT_FLOW), progress=False)
    model.train(run_dir=run, progress=False)
    return model, run


def test_joint_flow_trains_genes_masks_and_images(joint_flow, cohort):
    model, run = joint_flow
    log = pd.read_csv(run / "log.csv")
    want = {"gene_critic", "flow", "critic_mask", "critic_pair", "generator_pair",
            "shape_assoc_pair"}  # fmt: skip
    assert want <= set(log.columns)
    synth = model.sample(5, seed=0)
    assert synth.images.shape == (5, 1, 16, 16) and synth.adata.n_obs == 5
    assert np.array_equal(synth.images, model.sample(5, seed=0).images)
    made = model.generate_for(cohort, seed=0)
    assert made.images.shape[1:] == (1, 16, 16)


def test_joint_flow_mask_terms_reach_the_gene_generator(cohort):
    """In joint mode the fully synthetic patients' mask terms (mask critic, shape association)
    carry gradients into the gene generator; with pair_weight 0 only the gene critic does."""

    def gene_grads(pair_weight):
        cfg = load_config(None, [*JOINT_FLOW, f"joint.pair_weight={pair_weight}"])
        torch.manual_seed(0)
        model = JointGAN(cohort, cfg, progress=False)
        _, generator_step = make_steps(model)
        torch.manual_seed(1)
        loss, _ = generator_step(torch.Generator().manual_seed(2))
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.generator.gene.parameters()])

    assert (gene_grads(1.0) - gene_grads(0.0)).abs().max() > 1e-6


def test_joint_flow_refuses_the_gene_latent(cohort):
    cfg = load_config(None, [*TINY_JOINT, *FLOW])  # use_latent is on by default
    with pytest.raises(ValueError, match="joint.use_latent"):
        JointGAN(cohort, cfg, progress=False)


@pytest.mark.parametrize("which", ["image", "joint"])
def test_learned_map_of_a_flow_model(which, image_flow, joint_flow, cohort):
    model = (image_flow if which == "image" else joint_flow)[0]
    base = cohort if which == "image" else None  # the joint model's own patients
    genes = list(model.genes[:2])
    table = learned.learned_map(model, base, n_patients=4, variables=genes)
    assert len(table) == 2 * len(IMAGE_FEATURES)
    assert np.isfinite(table["effect"]).any()


def test_the_flow_mask_generator_pads_as_configured():
    """image.padding reaches the flow backend's mask generator, as the GAN's."""
    from torch import nn

    from radiogenomics.config import load_config
    from radiogenomics.models.image_gan import ImageGAN

    cfg = load_config(
        None,
        ["image.backend=flow", "image.gene_aux_weight=0", "image.padding=reflect",
         "image.channels=[8,4]", "image.flow_channels=[8,8]"],
    )  # fmt: skip
    meta = {"spatial_dims": 2, "image_size": [16, 16], "channels": 1, "genes": ["a", "b"]}
    G, _ = ImageGAN._make_networks(cfg, meta)
    convs = [
        m for m in G.mask.modules() if isinstance(m, nn.modules.conv._ConvNd) and max(m.padding)
    ]
    assert convs and all(m.padding_mode == "reflect" for m in convs)
