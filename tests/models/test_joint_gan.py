"""JointGAN on a small 2D phantom: where the gradients go in each mode, covariate sampling,
synthetic cohorts that validate and train again, seeding, the single-modality modes, config
errors, save/load and a bit-identical resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_JOINT
from safetensors.torch import load_file
from torch import nn

from radiogenomics import _keys as K
from radiogenomics.config import load_config
from radiogenomics.data.dataset import load_images
from radiogenomics.data.h5ad import (
    read_cohort,
    read_valid_cohort,
    validate_cohort_file,
    write_patient_batches,
)
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.models.joint_training import make_steps

TINY = [*TINY_JOINT, "train.checkpoint_every=1"]


def config(*extra: str):
    return load_config(None, [*TINY, *extra])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """40 patients, 16x16: a fifth expression-only, a tenth image-only."""
    phantom = make_phantom(
        40, 2, size=16, n_genes=128, seed=11, frac_expression_only=0.2, frac_image_only=0.1,
        progress=False,
    )  # fmt: skip
    return read_cohort(write_phantom(phantom, tmp_path_factory.mktemp("joint"), progress=False))


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("joint_run")
    model = JointGAN(cohort, config(), progress=False)
    model.train(run_dir=run, progress=False)
    return model, run


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(sum(g.float().norm() for g in grads)) if grads else 0.0


class _Silent(nn.Module):
    """A critic whose score is constant: its loss gives the generator zero gradient."""

    def __init__(self, critic: nn.Module):
        super().__init__()
        self.critic = critic

    def forward(self, *args):
        return self.critic(*args) * 0

    def trunk(self, *args):  # an ImageCritic's two halves, silenced as its forward
        return tuple(t * 0 for t in self.critic.trunk(*args))

    def head(self, trunk, code=None):
        return self.critic.head(trunk, code) * 0


# ------------------------------------------------------------------------------------------
# 1. gradients


@pytest.mark.parametrize(
    "mode, pair_weight, reaches",
    [("joint", 1.0, True), ("joint", 0.0, False), ("separate", 1.0, False)],
)
def test_image_critics_reach_the_gene_generator_in_joint_mode_only(
    cohort, mode, pair_weight, reaches
):
    # the gene critic silenced and no dispersion term: the gene loss gives no gradient
    cfg = config(
        f"joint.mode={mode}", f"joint.pair_weight={pair_weight}", "gene.dispersion_weight=0"
    )
    model = JointGAN(cohort, cfg, progress=False)
    model.critic.gene = _Silent(model.critic.gene)
    loss, logs = make_steps(model)[1](torch.Generator().manual_seed(0))
    loss.backward()
    assert ("generator_pair" in logs) == reaches
    assert _grad_norm(model.generator.side) > 0  # the image side trains in every case
    norm = _grad_norm(model.generator.gene)
    assert (norm > 0) == reaches, norm


def test_the_gene_critic_trains_the_gene_generator_in_separate_mode(cohort):
    model = JointGAN(cohort, config("joint.mode=separate"), progress=False)
    loss, _ = make_steps(model)[1](torch.Generator().manual_seed(0))
    loss.backward()
    assert _grad_norm(model.generator.gene) > 0
    # the critic step trains the gene critic too
    model.critic.zero_grad()
    loss, _ = make_steps(model)[0](torch.Generator().manual_seed(0))
    loss.backward()
    assert _grad_norm(model.critic.gene) > 0 and _grad_norm(model.critic.side) > 0


def test_mask_read_back_trains_the_image_generator(cohort):
    """image.mask_consistency_weight > 0: a critic-side segmenter learns masks from real images
    (critic step) and the generator pays its loss on the images it draws for real masks: with
    every critic silenced, the image generator still gets gradient, through the segmenter."""
    assert JointGAN(cohort, config(), progress=False).critic.side.segmenter is None
    model = JointGAN(cohort, config("image.mask_consistency_weight=1.0"), progress=False)
    C = model.critic
    C.gene, C.side.image, C.side.mask = (_Silent(m) for m in (C.gene, C.side.image, C.side.mask))
    C.side.regressor = None
    critic_step, generator_step = make_steps(model)
    loss, logs = generator_step(torch.Generator().manual_seed(0))
    loss.backward()
    assert "mask_read" in logs
    assert _grad_norm(model.generator.side.image) > 0
    model.critic.zero_grad()
    loss, logs = critic_step(torch.Generator().manual_seed(0))
    loss.backward()
    assert "mask_read_real" in logs and _grad_norm(C.side.segmenter) > 0
    with pytest.raises(ValueError, match="mask_consistency_weight"):
        config("image.mask_consistency_weight=-1")


def _association_step(cohort, *overrides):
    """One generator step with every critic and the gene read-back silenced, the gene
    dispersion term off and the FiLM layers (zero at init, so the images ignore the gene code)
    given small random weights: what remains reaches the gene generator only through the
    association terms. Returns the logs and the model, gradients in place."""
    from radiogenomics.nn.image import FiLM

    cfg = config("train.batch_size=16", "gene.dispersion_weight=0", *overrides)
    model = JointGAN(cohort, cfg, progress=False)
    torch.manual_seed(0)
    for module in model.generator.side.modules():
        if isinstance(module, FiLM):
            nn.init.normal_(module.linear.weight, std=0.1)
    C = model.critic
    C.gene, C.side.image, C.side.mask = (_Silent(m) for m in (C.gene, C.side.image, C.side.mask))
    C.side.regressor = None
    loss, logs = make_steps(model)[1](torch.Generator().manual_seed(0))
    loss.backward()
    return logs, model


def test_shape_association_trains_the_mask_generator_and_the_genes(cohort):
    """image.shape_association_weight > 0: with every critic and the gene read-back silenced,
    the mask generator still gets gradient on real and on generated expression, and through
    the generated patients' gene code the gene generator does too; neither without it."""
    logs, model = _association_step(cohort, "image.shape_association_weight=1.0")
    assert {"shape_assoc", "shape_assoc_pair"} <= set(logs)
    assert _grad_norm(model.generator.side.mask) > 0
    assert _grad_norm(model.generator.gene) > 0
    # off by default: no term, and (with the critics silenced) no gradient for either
    logs, model = _association_step(cohort)
    assert not {"shape_assoc", "shape_assoc_pair"} & set(logs)
    assert _grad_norm(model.generator.side.mask) == 0
    assert _grad_norm(model.generator.gene) == 0
    # 16x16 images cannot be halved 5 times: named at build time, not at the first step
    deep = config("image.mask_consistency_weight=1.0", "image.critic_channels=[4,4,4,4,4,4]")
    with pytest.raises(ValueError, match="critic_channels.*divisible by 32"):
        JointGAN(cohort, deep, progress=False)


def test_appearance_association_trains_the_image_generator_and_the_genes(cohort):
    """image.appearance_association_weight > 0: the image generator gets gradient on real and
    on generated expression, and the gene generator through the generated patients' gene code;
    none without the term."""
    logs, model = _association_step(cohort, "image.appearance_association_weight=1.0")
    assert {"appearance_assoc", "appearance_assoc_pair"} <= set(logs)
    assert not {"shape_assoc", "shape_assoc_pair"} & set(logs)
    assert _grad_norm(model.generator.side.image) > 0
    assert _grad_norm(model.generator.gene) > 0
    logs, model = _association_step(cohort)
    assert not {"appearance_assoc", "appearance_assoc_pair"} & set(logs)
    assert _grad_norm(model.generator.side.image) == 0
    assert _grad_norm(model.generator.gene) == 0


# ------------------------------------------------------------------------------------------
# 2. covariates


def test_sampling_respects_fixed_covariates(trained):
    model, _ = trained
    synth = model.sample(12, covariates={"subtype": "B", "age": 70}, seed=1)
    obs = synth.adata.obs
    assert isinstance(obs["subtype"].dtype, pd.CategoricalDtype)
    assert list(obs["subtype"].cat.categories) == model.categorical["subtype"] == ["A", "B", "C"]
    assert (obs["subtype"] == "B").all()
    assert np.all(obs["age"].to_numpy(float) == 70.0)
    assert set(obs["sex"]) <= {"F", "M"}  # the free covariate is drawn
    with pytest.raises(ValueError, match="stage"):
        model.sample(4, covariates={"stage": "II"})
    with pytest.raises(ValueError, match="subtype.*'Z'"):
        model.sample(4, covariates={"subtype": "Z"})
    with pytest.raises(ValueError, match="age"):
        model.sample(4, covariates={"age": "old"})


# ------------------------------------------------------------------------------------------
# 3. synthetic cohorts on disk


def _check_synthetic(adata, n, size=(16, 16)):
    assert adata.n_obs == n and adata.n_vars == 128
    assert adata.obs_names.is_unique
    for flag in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        assert adata.obs[flag].to_numpy(bool).all(), flag
    assert np.isfinite(np.asarray(adata.X)).all()
    images, masks = load_images(adata, config().data)
    assert tuple(images.shape) == (n, 1, *size) and tuple(masks.shape[2:]) == size
    assert set(np.unique(masks[:, 0].numpy())) <= {0.0, 1.0}
    assert images.min() >= -1 and images.max() <= 1


def test_a_sampled_cohort_validates_reloads_and_trains_again(trained, tmp_path):
    model, _ = trained
    synth = model.sample(16, seed=2)
    assert synth.images.shape == (16, 1, 16, 16) and synth.masks.shape == (16, 1, 16, 16)
    assert set(np.unique(synth.masks)) <= {0, 1}
    path = synth.write(tmp_path / "s", progress=False)
    adata, summary = validate_cohort_file(path)
    assert summary
    _check_synthetic(adata, 16)
    again = read_valid_cohort(path)
    assert list(again.obs_names) == list(synth.adata.obs_names)
    np.testing.assert_allclose(np.asarray(again.X), synth.adata.X, rtol=1e-6)
    # the synthetic cohort is a training cohort in its own right
    model2 = JointGAN(again, config("train.val_fraction=0.15"), progress=False)
    summary = model2.train(progress=False)
    assert summary["steps"] == 2 and model2.trained


def test_batched_sampling_writes_one_cohort(trained, tmp_path):
    model, _ = trained
    batches = list(model.iter_sample(10, seed=5, batch_size=4))
    assert [b.adata.n_obs for b in batches] == [4, 4, 2]
    ids = [i for b in batches for i in b.adata.obs_names]
    assert len(set(ids)) == 10
    whole = model.sample(10, seed=5, batch_size=4)
    assert list(whole.adata.obs_names) == ids
    np.testing.assert_array_equal(whole.images, np.concatenate([b.images for b in batches]))
    path = write_patient_batches(
        [b.files() for b in batches], tmp_path / "batched", progress=False, total=10
    )
    adata, _ = validate_cohort_file(path)
    _check_synthetic(adata, 10)
    assert list(adata.obs_names) == ids


# ------------------------------------------------------------------------------------------
# 4. seeds


def _same(a, b) -> bool:
    return (
        np.array_equal(a.adata.X, b.adata.X)
        and np.array_equal(a.masks, b.masks)
        and np.array_equal(a.images, b.images)
    )


def test_a_seed_fixes_the_samples(trained, cohort):
    model, run = trained
    first = model.sample(8, seed=3)
    assert _same(first, model.sample(8, seed=3))
    loaded = JointGAN.load(run, cohort)
    assert loaded.trained and loaded.mode == "joint"
    assert _same(first, loaded.sample(8, seed=3))
    assert _same(first, JointGAN.load(run).sample(8, seed=3))  # no cohort needed to sample
    other = model.sample(8, seed=4)
    assert not np.array_equal(first.adata.X, other.adata.X)
    assert not np.array_equal(first.images, other.images)
    # the same covariates: the seed alone changes the noise
    obs = model.covariates_for(8, seed=0)
    a, b = model.sample(covariates=obs, seed=3), model.sample(covariates=obs, seed=4)
    assert a.adata.obs.equals(b.adata.obs)
    assert not np.array_equal(a.adata.X, b.adata.X) and not np.array_equal(a.images, b.images)


# ------------------------------------------------------------------------------------------
# 5. modes


@pytest.mark.parametrize("mode, model", [("gene", "gene_gan"), ("image", "image_gan")])
def test_one_modality_is_the_single_modality_models_job(mode, model):
    # one implementation per modality: GeneGAN and ImageGAN, not a second copy inside JointGAN
    with pytest.raises(ValueError, match=f"joint.mode.*set model: {model}"):
        config(f"joint.mode={mode}")


def test_generate_for_keeps_real_masks_and_draws_the_missing(trained, cohort):
    model, _ = trained
    out = model.generate_for(cohort, seed=1)
    obs = cohort.obs
    expressed = obs[K.HAS_EXPRESSION].to_numpy(bool)
    paired = expressed & obs[K.HAS_IMAGE].to_numpy(bool) & obs[K.HAS_MASK].to_numpy(bool)
    assert (expressed & ~paired).sum() > 0 and (~expressed).sum() > 0  # both kinds present
    assert list(out.adata.obs_names) == [f"{p}-syn" for p in cohort.obs_names[expressed]]
    assert out.images.shape == (expressed.sum(), 1, 16, 16)
    _, real_masks = load_images(cohort[paired], model.config.data)
    kept = paired[expressed]
    np.testing.assert_array_equal(out.masks[kept], real_masks.numpy().astype(np.uint8))
    assert set(np.unique(out.masks[~kept])) <= {0, 1}
    assert out.adata.obs[K.HAS_IMAGE].all() and out.adata.obs[K.HAS_MASK].all()
    np.testing.assert_array_equal(out.images, model.generate_for(cohort, seed=1).images)


# ------------------------------------------------------------------------------------------
# 6. errors, save/load


def test_config_and_api_errors(cohort):
    with pytest.raises(ValueError, match="use_background"):
        JointGAN(cohort, config("image.use_background=true"), progress=False)
    with pytest.raises(ValueError, match="train_masks"):
        JointGAN(cohort, config("image.train_masks=false"), progress=False)
    with pytest.raises(ValueError, match="train_masks"):
        JointGAN(cohort, config("joint.mode=separate", "image.train_masks=false"), progress=False)
    with pytest.raises(ValueError, match="pair_weight"):
        config("joint.pair_weight=-0.5")


def test_save_load_keeps_mode_and_weights(cohort, tmp_path):
    model = JointGAN(cohort, config("joint.mode=separate"), progress=False)
    model.save(tmp_path)
    loaded = JointGAN.load(tmp_path, cohort)
    assert loaded.mode == "separate" and loaded.image_side.encoder.n_latent == 0
    for name in ("sampler", "generator", "critic"):
        a, b = model._modules()[name].state_dict(), loaded._modules()[name].state_dict()
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert _same(model.sample(5, seed=2), loaded.sample(5, seed=2))


# ------------------------------------------------------------------------------------------
# 7. resume


def test_resume_gives_the_weights_of_a_straight_run(cohort, tmp_path):
    # enough held-out paired patients to score every step: the resumed run must also restore
    # the best weights and score so far
    scored = ("train.val_fraction=0.4", "train.eval_every=1")
    straight = JointGAN(cohort, config(*scored, "train.steps=4"), progress=False)
    expected = straight.train(run_dir=tmp_path / "straight", progress=False)
    assert expected["best_score"] is not None
    first = JointGAN(cohort, config(*scored, "train.steps=2"), progress=False)
    first.train(run_dir=tmp_path / "resumed", progress=False)
    shutil.copytree(tmp_path / "resumed", tmp_path / "again")
    assert not _equal_weights(straight.sampler, first.sampler)  # 2 steps are not 4
    # a loaded model told to go on
    loaded = JointGAN.load(tmp_path / "resumed", cohort)
    loaded.config.train.steps = 4
    summary = loaded.train(run_dir=tmp_path / "resumed", progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert (summary["best_step"], summary["best_score"]) == (
        expected["best_step"], expected["best_score"],
    )  # fmt: skip
    assert _equal_weights(straight.sampler, loaded.sampler)
    # a new model on the run folder (what `radiogenomics train` does again)
    fresh = JointGAN(cohort, config(*scored, "train.steps=4"), progress=False)
    summary = fresh.train(run_dir=tmp_path / "again", progress=False)
    assert summary["resumed_from"] == 2
    assert _equal_weights(straight.sampler, fresh.sampler)
    saved = load_file(str(tmp_path / "again" / "model.safetensors"))
    reference = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert saved.keys() == reference.keys()
    assert all(torch.equal(saved[k], reference[k]) for k in saved)


def _equal_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_gene_side_takes_its_extra_updates(cohort, tmp_path):
    """joint.gene_steps extra gene-only updates per step, each with gene_n_critic critic
    steps: Adam's step counts say how often each part was updated."""
    model = JointGAN(
        cohort, config("train.steps=3", "joint.gene_steps=2", "joint.gene_n_critic=3"),
        progress=False,
    )  # fmt: skip
    model.train(run_dir=tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)
    steps = {
        name: sorted({int(s["step"]) for s in opt["state"].values()})
        for name, opt in state["optimizers"].items()
    }
    # generator: gene params 3 * (1 + 2) = 9 updates, image params 3; critic: gene params
    # 3 * (1 + 2 * 3) = 21, image params 3 (train.n_critic=1)
    assert steps["generator"] == [3, 9] and steps["critic"] == [3, 21], steps
    with pytest.raises(ValueError, match="joint.gene_steps"):
        load_config(None, ["joint.gene_steps=-1"])


def test_augmented_training_logs_p_and_resumes_bit_identically(cohort, tmp_path):
    """Differentiable augmentation with an adaptive p, reflect padding and output noise: the
    run logs p, p moves, and a run resumed between two updates of p (its accumulated r_t in
    the checkpoint) ends on the straight run's weights and p."""
    tells = (
        "image.augment_policy=[translation,cutout,brightness,contrast,flip]",
        "image.augment_p=0.5", "image.augment_target=0.6", "image.augment_ramp=8",
        "image.padding=reflect", "image.output_noise=true", "train.log_every=1",
    )  # fmt: skip
    straight = JointGAN(cohort, config(*tells, "train.steps=5"), progress=False)
    straight.train(run_dir=tmp_path / "straight", progress=False)
    p = pd.read_csv(tmp_path / "straight" / "log.csv")["augment_p"].tolist()
    assert p[:3] == [0.5, 0.5, 0.5] and p[3] in (0.0, 1.0)  # updated after 4 critic steps
    JointGAN(cohort, config(*tells, "train.steps=2"), progress=False).train(
        run_dir=tmp_path / "resumed", progress=False
    )
    fresh = JointGAN(cohort, config(*tells, "train.steps=5"), progress=False)
    summary = fresh.train(run_dir=tmp_path / "resumed", progress=False)
    assert summary["resumed_from"] == 2
    assert _equal_weights(straight.sampler, fresh.sampler)
    assert pd.read_csv(tmp_path / "resumed" / "log.csv")["augment_p"].tolist() == p


def test_the_critic_step_scores_the_real_batch_once(cohort, monkeypatch):
    """The image and pair terms of the joint critic step share the critic side's code and
    scores of the real batch (`objectives.RealScores`): one image and one mask critic pass
    fewer than scoring it in each term, with the same loss and gradients to rounding."""
    from radiogenomics.models import joint_training

    model = JointGAN(cohort, config(), progress=False)
    C = model.critic.side
    critic_step = make_steps(model)[0]
    passes = []
    for name in ("image", "mask"):
        trunk = getattr(C, name).trunk
        monkeypatch.setattr(getattr(C, name), "trunk",
                            lambda *a, _t=trunk, _n=name: passes.append(_n) or _t(*a))  # fmt: skip

    def run():
        model.critic.zero_grad(set_to_none=True)
        passes.clear()
        torch.manual_seed(0)  # the regressor's dropout
        loss = critic_step(torch.Generator().manual_seed(0))[0]
        loss.backward()
        grads = [p.grad.clone() for p in model.critic.parameters() if p.grad is not None]
        return loss.detach(), grads, passes.count("image"), passes.count("mask")

    shared = run()
    monkeypatch.setattr(joint_training, "RealScores", lambda: None)  # each term scores anew
    apart = run()
    assert (shared[2], shared[3]) == (apart[2] - 1, apart[3] - 1)
    torch.testing.assert_close(shared[0], apart[0], rtol=1e-6, atol=0)
    assert len(shared[1]) == len(apart[1])
    # to rounding, against the largest gradient: a bias before an instance norm has gradient
    # 0 in exact arithmetic, rounding noise alone in either order
    top = max(float(g.abs().max()) for g in apart[1])
    for a, b in zip(shared[1], apart[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * top)
