"""ImageGAN on the phantom cohorts (2D and 3D): training, generation, sampling, save/load."""

from __future__ import annotations

import dataclasses
import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics import _keys as K
from radiogenomics.config import load_config
from radiogenomics.data.dataset import load_images
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.models.gene_gan import GeneGAN
from radiogenomics.models.image_gan import ImageGAN


def tiny_config(spatial_dims: int, *extra: str):
    return load_config(
        None,
        [
            f"data.spatial_dims={spatial_dims}",
            "image.channels=[16,8,4]",
            "image.critic_channels=[4,8]",
            "image.n_noise=8",
            "image.n_code=4",
            "image.n_hidden=16",
            "image.n_layers=1",
            "train.steps=3",
            "train.batch_size=4",
            "train.n_critic=1",
            "train.val_fraction=0.15",
            "train.eval_every=3",
            "train.select_after=0",
            "train.checkpoint_every=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def trained(phantom_cohort, tmp_path_factory):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    run = tmp_path_factory.mktemp(f"image_gan{dims}d")
    model = ImageGAN(phantom_cohort, tiny_config(dims))
    summary = model.train(run, progress=False)
    return model, run, summary


def test_trains_on_paired_and_image_only_patients(trained, phantom_cohort):
    model, run, summary = trained
    has_image = phantom_cohort.obs[K.HAS_IMAGE].to_numpy(bool)
    assert len(model.patients) == has_image.sum()
    # image-only patients are in the training set, with the "no genes" flag
    present = model.image_data.present.numpy()
    assert (~present).sum() == (has_image & ~phantom_cohort.obs[K.HAS_EXPRESSION]).sum() > 0
    assert summary["steps"] == 3 and summary["best_step"] == 3
    log = pd.read_csv(run / "log.csv")
    assert {"critic", "generator", "gp", "critic_mask", "val_score"} <= set(log.columns)
    assert np.isfinite(log[["critic", "generator"]].to_numpy()).all()
    val = model.held_out
    assert set(val) <= set(model.patients) and len(val) == model.meta["summary"]["n_val"] >= 4


def test_generate_follows_masks_and_genes(trained, phantom_cohort):
    model, _, _ = trained
    sub = phantom_cohort[phantom_cohort.obs[K.HAS_IMAGE].to_numpy(bool)][:5]
    _, masks = load_images(sub, model.config.data)
    images = model.generate(masks.numpy(), sub, seed=3)
    size = model.meta["image_size"]
    assert images.shape == (5, 1, *size)
    assert images.min() >= -1 and images.max() <= 1
    assert np.array_equal(images, model.generate(masks.numpy(), sub, seed=3))  # seeded
    assert not np.array_equal(images, model.generate(masks.numpy(), sub, seed=4))
    with pytest.raises(ValueError, match="masks have shape"):
        model.generate(masks[:, :, ::2].numpy(), sub)
    with pytest.raises(ValueError, match="masks have shape"):
        model.generate(masks[:, 0].numpy(), sub)  # no channel axis
    with pytest.raises(ValueError, match="lacks the model's genes"):
        model.generate(masks.numpy(), sub[:, :10])
    with pytest.raises(ValueError, match="expression has shape"):
        model.generate(masks.numpy(), np.zeros((5, 3)))


def test_sample_writes_a_cohort_that_reads_back(trained, tmp_path):
    model, _, _ = trained
    synth = model.sample(6, seed=1)
    size = model.meta["image_size"]
    assert synth.images.shape == (6, 1, *size) and synth.masks.shape == (6, 1, *size)
    assert set(np.unique(synth.masks)) <= {0, 1}
    assert synth.adata.n_vars == len(model.genes)
    path = synth.write(tmp_path / "synth", progress=False)
    back = read_cohort(path)
    assert back.uns["rg"]["spatial_dims"] == model.meta["spatial_dims"]
    assert back.obs[K.HAS_IMAGE].all()
    images, masks = load_images(back, model.config.data)
    assert images.shape == (6, 1, *size)
    assert np.array_equal(masks.numpy().astype(np.uint8), synth.masks)


def test_sample_masks_depend_on_expression(trained, phantom_cohort):
    model, _, _ = trained
    sub = phantom_cohort[phantom_cohort.obs[K.HAS_EXPRESSION].to_numpy(bool)][:4]
    masks = model.sample_masks(sub, 4, seed=0)
    assert masks.shape == (4, 1, *model.meta["image_size"])
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_save_load_round_trip(trained, phantom_cohort, tmp_path):
    model, run, _ = trained
    loaded = ImageGAN.load(run, phantom_cohort)
    sub = phantom_cohort[phantom_cohort.obs[K.HAS_IMAGE].to_numpy(bool)][:3]
    _, masks = load_images(sub, model.config.data)
    a = model.generate(masks.numpy(), sub, seed=0)
    b = loaded.generate(masks.numpy(), sub, seed=0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert loaded.trained and loaded.genes == model.genes
    with pytest.raises(FileNotFoundError, match="holds no trained model"):
        ImageGAN.load(tmp_path)
    # a run saved by networks of another format is refused, not misread
    old = tmp_path / "old"
    shutil.copytree(run, old)
    meta = json.loads((old / "model.json").read_text())
    meta["format"] = 3  # before the one model core
    (old / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 3, .*retrain"):
        ImageGAN.load(old)
    (old / "model.json").write_text(json.dumps(meta)[:40])  # cut short
    with pytest.raises(ValueError, match=r"model\.json is not valid JSON"):
        ImageGAN.load(old)
    with pytest.raises(ValueError, match="holds a 'image_gan' model, not a 'gene_gan' one"):
        GeneGAN.load(run)


def test_load_refuses_other_cohorts(trained, tmp_path):
    from radiogenomics.data.phantom import make_phantom, write_phantom

    model, run, _ = trained
    other_dims = 5 - model.meta["spatial_dims"]
    other = read_cohort(
        write_phantom(make_phantom(6, other_dims, progress=False), tmp_path, progress=False)
    )
    with pytest.raises(ValueError, match="spatial_dims"):
        ImageGAN.load(run, other)


def test_resume_continues_the_log(phantom_cohort, tmp_path):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims,
        "train.steps=2",
        "train.val_fraction=0",
        "image.train_masks=false",
        "train.log_every=1",
    )
    ImageGAN(phantom_cohort, cfg).train(tmp_path, progress=False)
    cfg.train.steps = 4
    model = ImageGAN(phantom_cohort, cfg)
    summary = model.train(tmp_path, progress=False)
    assert summary["steps"] == 4
    steps = pd.read_csv(tmp_path / "log.csv")["step"].tolist()
    assert steps == [1, 2, 3, 4]
    # another configuration refuses the folder's checkpoint
    other = tiny_config(dims, "train.steps=6", "train.val_fraction=0", "image.n_code=6")
    with pytest.raises(ValueError, match="checkpoint of another run"):
        ImageGAN(phantom_cohort, other).train(tmp_path, progress=False)


def test_image_only_unconditional_and_background_modes(phantom_cohort, tmp_path):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims,
        "train.steps=1",
        "train.val_fraction=0",
        "image.use_mask=false",
        "image.use_genes=false",
        "image.train_masks=false",
        "image.objective=dcgan",
    )
    model = ImageGAN(phantom_cohort, cfg)
    model.train(None, progress=False)
    synth = model.sample(3, seed=0)
    assert synth.images.shape[0] == 3 and synth.adata.n_vars == 0
    # no mask shaped these images: each gets the whole patch as its region
    assert synth.masks.shape == (3, 1, *synth.images.shape[2:]) and synth.masks.all()
    # nor does it need its cohort to sample: no genes, no masks to draw
    model.save(tmp_path / "unconditional")
    alone = ImageGAN.load(tmp_path / "unconditional")
    np.testing.assert_array_equal(alone.sample(3, seed=0).images, synth.images)
    cfg = tiny_config(
        dims,
        "train.steps=1",
        "train.val_fraction=0",
        "image.use_background=true",
        "image.background_l1=1.0",
        "image.train_masks=false",
        "image.objective=hinge",
    )
    model = ImageGAN(phantom_cohort, cfg)
    model.train(None, progress=False)
    sub = phantom_cohort[phantom_cohort.obs[K.HAS_IMAGE].to_numpy(bool)][:2]
    images, masks = load_images(sub, cfg.data)
    out = model.generate(masks.numpy(), sub, backgrounds=images.numpy())
    assert out.shape == images.shape
    with pytest.raises(ValueError, match="backgrounds"):
        model.generate(masks.numpy(), sub)
    with pytest.raises(ValueError, match="backgrounds have shape"):
        model.generate(masks.numpy(), sub, backgrounds=images.numpy()[:1])
    with pytest.raises(ValueError, match="use_background"):
        model.sample(2)


def test_gene_read_back_trains_and_saves(phantom_cohort, tmp_path):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims,
        "train.steps=2",
        "image.train_masks=false",
        "image.gene_aux_weight=1.0",
        "image.gene_aux_components=3",
    )
    model = ImageGAN(phantom_cohort, cfg)
    assert model.critic.regressor is not None
    model.train(tmp_path, progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert np.isfinite(log[["gene_aux", "gene_aux_real"]].to_numpy()).all()
    loaded = ImageGAN.load(tmp_path, phantom_cohort)
    assert loaded.critic.regressor is not None
    # without genes there is nothing to read back; weight 0 turns it off
    off = tiny_config(dims, "image.use_genes=false", "image.gene_aux_weight=1.0")
    assert ImageGAN(phantom_cohort, off).critic.regressor is None
    off = tiny_config(dims, "image.gene_aux_weight=0")
    assert ImageGAN(phantom_cohort, off).critic.regressor is None
    with pytest.raises(ValueError, match="gene_aux_weight"):
        tiny_config(dims, "image.gene_aux_weight=-1")


def test_read_back_targets_are_unit_principal_components():
    from radiogenomics.models.image_training import aux_targets

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(40, 12, generator=g)
    present = torch.ones(40, dtype=torch.bool)
    present[:5] = False
    t = aux_targets(Z, present, 4)
    assert t.shape == (40, 4)
    assert (t[:5] == 0).all()  # no expression, no target (and no loss: masked in training)
    torch.testing.assert_close(t[5:].std(0, correction=0), torch.ones(4), atol=1e-4, rtol=0)
    # fewer genes than components: the extra columns stay zero
    assert (aux_targets(Z[:, :2], present, 4)[:, 2:] == 0).all()


def test_config_errors(phantom_cohort):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    with pytest.raises(ValueError, match="spatial_dims"):
        ImageGAN(phantom_cohort, tiny_config(5 - dims))
    with pytest.raises(ValueError, match="gene.genes"):
        ImageGAN(phantom_cohort, tiny_config(dims, "gene.genes=[NOPE1]"))
    with pytest.raises(ValueError, match="use_background"):
        tiny_config(dims, "image.use_mask=false", "image.use_background=true")


def test_association_terms_train_without_the_read_back(phantom_cohort, tmp_path):
    """The shape and appearance terms need the read-back's gene components, not its head:
    with the head off both still run (2D and 3D) and their losses are logged."""
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims, "train.steps=2", "image.gene_aux_weight=0", "image.shape_association_weight=1.0",
        "image.appearance_association_weight=1.0",
    )  # fmt: skip
    model = ImageGAN(phantom_cohort, cfg)
    assert model.critic.regressor is None
    model.train(tmp_path, progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert np.isfinite(log["shape_assoc"]).all()
    assert np.isfinite(log["appearance_assoc"]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_bf16_and_channels_last(phantom_cohort, tmp_path):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims, "device=cuda", "train.steps=4", "image.shape_association_weight=1",
        "image.appearance_association_weight=1",
    )  # fmt: skip
    model = ImageGAN(phantom_cohort, cfg)
    summary = model.train(tmp_path, progress=False)
    assert summary["steps"] == 4
    assert np.isfinite(pd.read_csv(tmp_path / "log.csv")["critic"]).all()
    assert np.isfinite(model.sample(2).images).all()


def test_phantom_checks(trained, phantom_cohort):
    from radiogenomics.data.phantom import FEATURES, PROGRAMS
    from radiogenomics.evaluate.phantom import SHAPE, partner_swap, planted_features

    model, _, _ = trained
    table = planted_features(model, phantom_cohort, model.patients)
    assert list(table.index) == list(FEATURES)
    assert list(table.columns) == ["real", "synthetic", "fully_synthetic"]
    # the real images carry their programs (the ceiling a generator is read against)
    assert (table["real"] > 0.4).all(), table
    swap = partner_swap(model, phantom_cohort, model.patients[:12])
    assert swap.shape == (len(FEATURES), len(PROGRAMS))
    # with the mask fixed, swapping genes cannot change the shape phenotypes
    assert swap.loc[list(SHAPE)].isna().all().all()
    with pytest.raises(ValueError, match="need >= 5"):
        planted_features(model, phantom_cohort, model.patients[:3])


def test_selection_falls_back_to_the_image_features_with_few_expressed(trained, caplog):
    from radiogenomics.models.image_training import MIN_JOINT, realism_score

    model, _, _ = trained
    present = model.image_data.present.numpy()
    few = np.r_[np.flatnonzero(present)[:3], np.flatnonzero(~present)[:6]]
    with caplog.at_level("WARNING", logger="radiogenomics.models.image_training"):
        data = dataclasses.replace(model.image_data, held_out=few)
        score = realism_score(data, model.config, phantom=True, device=model.device)(model.sampler)
    # 3 patients with expression cannot estimate the joint distance: before the fallback the
    # score was -inf at every evaluation and no weights were ever selected (TCGA-LGG)
    assert np.isfinite(score)
    assert f"3 of the {len(few)} held-out patients have expression, and" in caplog.text
    caplog.clear()
    many = np.flatnonzero(present)
    assert len(many) >= MIN_JOINT
    with caplog.at_level("WARNING", logger="radiogenomics.models.image_training"):
        data = dataclasses.replace(model.image_data, held_out=many)
        score = realism_score(data, model.config, phantom=True, device=model.device)
        assert np.isfinite(score(model.sampler))
    assert "image features alone" not in caplog.text


def test_selection_distance_is_joint_with_the_genes():
    from radiogenomics.evaluate.images import frechet_distance
    from radiogenomics.models.image_training import gene_components

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(60, 20))
    genes = gene_components(Z)
    assert genes.shape == (60, 8) and np.allclose(genes.std(0), 1)
    assert gene_components(Z[:2]) is None  # too few patients for components

    def feature():  # an image feature that follows the genes' first component
        return genes[:, :1] + 0.3 * rng.normal(size=(60, 1))

    real = np.c_[feature(), genes]
    follows = np.c_[feature(), genes]
    ignores = np.c_[rng.permutation(feature()), genes]  # same distribution, wrong patients
    assert frechet_distance(real, follows) < 0.2 < frechet_distance(real, ignores)


def test_real_cohorts_select_on_the_general_radiomic_features(trained, phantom_cohort, monkeypatch):
    from radiogenomics.evaluate import images as image_metrics
    from radiogenomics.models.image_training import realism_score
    from radiogenomics.radiomap import features as lesion_metrics

    model = trained[0]
    assert model.meta["phantom"]  # a phantom: its planted lesion features
    real = phantom_cohort.copy()
    del real.uns["rg"]["phantom"]
    other = ImageGAN(real, tiny_config(phantom_cohort.uns["rg"]["spatial_dims"]))
    assert not other.meta["phantom"]
    used = []
    monkeypatch.setattr(
        lesion_metrics, "lesion_feature_table", lambda *a, **k: used.append("lesion")
    )
    real_table = image_metrics.radiomic_table
    monkeypatch.setattr(
        image_metrics,
        "radiomic_table",
        lambda *a, **k: used.append("radiomic") or real_table(*a, **k),
    )
    score = realism_score(
        other.image_data, other.config, phantom=bool(other.meta.get("phantom")), device=other.device
    )(other.sampler)
    assert np.isfinite(score) and set(used) == {"radiomic"}


def test_generate_for_a_gene_sample_without_masks_or_images(phantom_cohort):
    # a GeneGAN's sample: expression only, 2D geometry by default whatever the image model's
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims, "train.steps=1", "train.val_fraction=0", "image.use_mask=false",
        "image.train_masks=false", "image.objective=dcgan",
    )  # fmt: skip
    model = ImageGAN(phantom_cohort, cfg)
    expressed = phantom_cohort[phantom_cohort.obs[K.HAS_EXPRESSION].to_numpy(bool)][:4]
    genes = ad.AnnData(
        X=np.array(expressed.X), obs=pd.DataFrame(index=expressed.obs_names), var=expressed.var
    )
    genes.uns["rg"] = {"spatial_dims": 2, "synthetic": {"model": "GeneGAN", "seed": 3}}
    out = model.generate_for(genes, seed=0)
    # no mask generator and no masks to follow: each image's region is the whole patch
    assert out.images.shape[0] == 4 and out.masks.all()
    # the expression's own provenance is kept beside the images'
    made = out.adata.uns["rg"]["synthetic"]
    assert made["model"] == "ImageGAN" and made["expression"] == {"model": "GeneGAN", "seed": 3}


def test_a_run_whose_config_no_longer_validates_asks_for_a_retrain(trained, tmp_path):
    _, run, _ = trained
    old = tmp_path / "old"
    shutil.copytree(run, old)
    with open(old / "config.yaml", "a") as f:
        f.write("joint:\n  mode: image\n")  # a mode an earlier version had
    with pytest.raises(ValueError, match="no longer validates.*retrain"):
        ImageGAN.load(old)


def test_trains_with_augmentation_reflect_padding_and_output_noise(phantom_cohort, tmp_path):
    dims = phantom_cohort.uns["rg"]["spatial_dims"]
    cfg = tiny_config(
        dims,
        "train.steps=2",
        "train.log_every=1",
        "image.augment_policy=[translation,cutout,brightness,contrast,flip]",
        "image.augment_p=0.5",
        "image.padding=reflect",
        "image.output_noise=true",
    )
    model = ImageGAN(phantom_cohort, cfg)
    model.train(tmp_path, progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["augment_p"].tolist() == [0.5, 0.5]  # logged; fixed without augment_target
    assert np.isfinite(log["critic"]).all() and np.isfinite(log["generator"]).all()
    convs = [
        m for m in model.sampler.image.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)
    ]
    assert any(m.padding_mode == "reflect" for m in convs)
