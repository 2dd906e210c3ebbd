"""SegmentationNet and Segmenter: shapes, training, evaluation, masks, save/load, resume."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from radiogenomics.config import Config
from radiogenomics.data.dataset import image_rows, load_images
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.data.split import held_out as held_out_mask
from radiogenomics.models.base import META, WEIGHTS
from radiogenomics.models.segmenter import Segmenter
from radiogenomics.nn.segmentation import SegmentationNet
from radiogenomics.train import loop as loop_module
from radiogenomics.train.checkpoint import load_checkpoint

CHECKPOINT, LOG = "checkpoint", "log.csv"


def _dims(adata) -> int:
    return int(adata.uns["rg"]["spatial_dims"])


def _config(dims: int, steps: int = 40, **segment) -> Config:
    cfg = Config()
    cfg.data.spatial_dims = dims
    cfg.train.log_every = 1  # every step in log.csv
    s = cfg.segment
    s.channels, s.strides, s.num_res_units, s.dropout = [4, 8, 16], [2, 2], 1, 0.1
    s.steps, s.batch_size, s.eval_every, s.lr = steps, 4, 20, 3e-3
    for key, value in segment.items():
        setattr(s, key, value)
    return cfg


def _without_masks(adata, n: int = 3):
    """A copy whose first `n` image patients lost their mask."""
    out = adata.copy()
    rows = image_rows(out)[:n]
    mask = out.obs["mask"].astype(object).to_numpy()
    mask[rows] = ""
    out.obs["mask"] = mask
    has_mask = out.obs["has_mask"].to_numpy(bool).copy()
    has_mask[rows] = False
    out.obs["has_mask"] = has_mask
    return out, rows


@pytest.fixture(scope="module")
def trained(phantom_cohort, tmp_path_factory):
    dims = _dims(phantom_cohort)
    run = tmp_path_factory.mktemp(f"segmenter{dims}d")
    seg = Segmenter(phantom_cohort, _config(dims), progress=False)
    untrained_dice = seg.evaluate()["dice"]
    summary = seg.train(run, progress=False)
    return seg, summary, run, untrained_dice


# ------------------------------------------------------------------------------------------
# the network


def test_net_shapes_and_gradients(spatial_dims):
    torch.manual_seed(0)
    net = SegmentationNet(spatial_dims, 2, channels=[4, 8, 16], strides=[2, 2], num_res_units=1)
    x = torch.randn(2, 2, *[16] * spatial_dims, requires_grad=True)
    logits = net(x)
    assert logits.shape == (2, 1, *[16] * spatial_dims)
    logits.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    features = net.encoder_features(x)
    assert features.shape == (2, net.n_features) == (2, 16)
    x.grad = None
    features.sum().backward()
    assert x.grad.abs().sum() > 0


def test_net_rejects_wrong_input(spatial_dims):
    net = SegmentationNet(spatial_dims, 1, channels=[4, 8, 16], strides=[2, 2], num_res_units=0)
    other = 3 if spatial_dims == 2 else 2
    with pytest.raises(ValueError, match=f"spatial_dims={spatial_dims}.*{other} spatial dims"):
        net(torch.zeros(1, 1, *[16] * other))
    with pytest.raises(ValueError, match="1 channel.*3 channel"):
        net(torch.zeros(1, 3, *[16] * spatial_dims))
    with pytest.raises(ValueError, match=r"divisible by 4 \(the product of strides"):
        net(torch.zeros(1, 1, *[18] * spatial_dims))
    with pytest.raises(ValueError, match="strides"):
        SegmentationNet(spatial_dims, channels=[4, 8, 16], strides=[2])


def test_no_batchnorm_anywhere(trained):
    seg = trained[0]
    modules = list(seg.net.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    assert any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in modules)


# ------------------------------------------------------------------------------------------
# training, evaluation, prediction


def test_training_lowers_the_loss(trained, phantom_cohort):
    seg, summary, run, untrained_dice = trained
    loss = seg.history["loss"].to_numpy()
    assert loss[-10:].mean() < loss[:10].mean()
    assert summary["best_val_dice"] > untrained_dice
    assert summary["steps"] == 40 and summary["best_step"] in (20, 40)
    assert summary["n_train"] + summary["n_val"] == len(image_rows(phantom_cohort, need_mask=True))
    for name in (WEIGHTS, META, "config.yaml", LOG):
        assert (run / name).is_file(), name
    log = pd.read_csv(run / LOG)
    assert list(log.columns) == ["step", "loss", "val_dice", "val_iou"]
    assert (log["val_iou"].dropna() <= log["val_dice"].dropna()).all()  # IoU <= Dice
    assert log["step"].tolist() == list(range(1, 41))
    assert log["val_dice"].notna().sum() == 2


def test_evaluate_on_held_out_and_on_a_cohort(trained, phantom_cohort):
    seg = trained[0]
    held_out = seg.evaluate()
    assert 0.0 <= held_out["dice"] <= 1.0 and 0.0 <= held_out["iou"] <= held_out["dice"]
    assert list(held_out["dice_per_patient"].index) == seg.held_out
    assert held_out["dice"] == pytest.approx(trained[1]["best_val_dice"])
    n_val = trained[1]["n_val"]
    # the cohort's one split, restricted to the patients with masks
    cohort_wide = held_out_mask(phantom_cohort.obs, seg.config.train.val_fraction, seg.config.seed)
    with_mask = phantom_cohort.obs_names[image_rows(phantom_cohort, need_mask=True)]
    expected = [p for p in with_mask if p in set(phantom_cohort.obs_names[cohort_wide])]
    assert held_out["n"] == n_val == len(expected) and seg.held_out == expected
    whole = seg.evaluate(phantom_cohort)
    assert whole["n"] == len(image_rows(phantom_cohort, need_mask=True))
    assert set(seg.held_out) < set(whole["dice_per_patient"].index)
    np.testing.assert_allclose(
        whole["dice_per_patient"][seg.held_out], held_out["dice_per_patient"], atol=1e-6
    )
    unmasked, rows = _without_masks(phantom_cohort, 2)
    with pytest.raises(ValueError, match=str(unmasked.obs_names[rows[0]])):
        seg.evaluate(unmasked, rows)


def test_predict_covers_patients_without_masks(trained, phantom_cohort):
    seg = trained[0]
    unmasked, _ = _without_masks(phantom_cohort)
    masks = seg.predict(unmasked)
    size = phantom_cohort.uns["rg"]["image_size"]
    assert masks.shape == (len(image_rows(phantom_cohort)), 1, *size)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    np.testing.assert_array_equal(masks, seg.predict(phantom_cohort))
    rows = image_rows(phantom_cohort)[:5]
    images, _ = load_images(phantom_cohort, seg.config.data, rows)
    probs = seg.predict_tensor(images)
    assert probs.shape == (5, 1, *size) and probs.dtype == torch.float32
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_array_equal((probs > 0.5).numpy().astype(np.uint8), masks[:5])
    with pytest.raises(ValueError, match="channel"):
        seg.predict_tensor(images.repeat(1, 2, *[1] * len(size)))


def test_write_masks_for_patients_without_one(trained, phantom_cohort, tmp_path):
    seg = trained[0]
    unmasked, rows = _without_masks(phantom_cohort)
    completed = seg.write_masks(unmasked, tmp_path / "predicted", progress=False)
    assert completed.obs["has_mask"].to_numpy(bool)[rows].all()
    assert not unmasked.obs["has_mask"].to_numpy(bool)[rows].any()  # the input is untouched
    paths = completed.obs["mask"].iloc[rows]
    assert all(p.startswith(str(tmp_path)) for p in paths)  # outside the cohort root: absolute
    _, written = load_images(completed, seg.config.data, rows)
    np.testing.assert_array_equal(written.numpy().astype(np.uint8), seg.predict(unmasked, rows))
    # inside the cohort's root the paths stay relative to it
    root = phantom_cohort.uns["rg"]["root"]
    inside = seg.write_masks(unmasked, f"{root}/predicted_test", progress=False)
    assert inside.obs["mask"].iloc[rows[0]].startswith("predicted_test/")
    assert not inside.obs["mask"].iloc[rows[0]].startswith("/")


# ------------------------------------------------------------------------------------------
# save / load


def test_save_load_round_trip(trained, phantom_cohort, tmp_path):
    seg = trained[0]
    seg.save(tmp_path)
    loaded = Segmenter.load(tmp_path, phantom_cohort)
    assert loaded.trained and loaded.held_out == seg.held_out
    np.testing.assert_array_equal(loaded.predict(phantom_cohort), seg.predict(phantom_cohort))
    bare = Segmenter.load(tmp_path)  # no cohort: predicts, cannot train
    images, _ = load_images(phantom_cohort, seg.config.data, image_rows(phantom_cohort)[:4])
    assert torch.equal(bare.predict_tensor(images), seg.predict_tensor(images))
    assert bare.held_out == seg.held_out
    with pytest.raises(ValueError, match="without a cohort"):
        bare.train(progress=False)
    no_masks = phantom_cohort.copy()
    no_masks.obs["has_mask"] = False
    for_prediction = Segmenter.load(tmp_path, no_masks)  # a cohort to segment, not to train on
    np.testing.assert_array_equal(for_prediction.predict(no_masks), seg.predict(phantom_cohort))


def test_load_refuses_a_cohort_of_other_spatial_dims(trained, tmp_path):
    seg, _, run, _ = trained
    other = 3 if seg.spatial_dims == 2 else 2
    cohort = read_cohort(
        write_phantom(make_phantom(4, other, seed=1, progress=False), tmp_path, progress=False)
    )
    theirs = "(1, " + ", ".join(map(str, cohort.uns["rg"]["image_size"])) + ")"
    ours = "(1, " + ", ".join(map(str, seg.image_size)) + ")"
    with pytest.raises(ValueError, match=rf"{re.escape(theirs)}.*{re.escape(ours)}"):
        Segmenter.load(run, cohort)
    with pytest.raises(ValueError, match="spatial_dims"):
        seg.predict(cohort)


# ------------------------------------------------------------------------------------------
# resume and refusal


def test_resume_after_a_kill_continues_exactly(phantom_cohort, tmp_path, monkeypatch):
    dims = _dims(phantom_cohort)
    n = 10
    run = tmp_path / "killed"
    first = Segmenter(phantom_cohort, _config(dims, n, eval_every=5), progress=False)
    assert first.train(run, progress=False)["steps"] == n
    # extend to 2n, killed right after the checkpoint at step n + 5
    real_save = loop_module.save_checkpoint

    def save_then_die(folder, modules, state):
        real_save(folder, modules, state)
        if state["step"] == n + 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Segmenter(phantom_cohort, _config(dims, 2 * n, eval_every=5), progress=False).train(
            run, progress=False
        )
    monkeypatch.undo()
    assert load_checkpoint(run / CHECKPOINT)[1]["step"] == n + 5
    resumed = Segmenter(phantom_cohort, _config(dims, 2 * n, eval_every=5), progress=False)
    summary = resumed.train(run, progress=False)
    assert summary["steps"] == 2 * n and summary["resumed_from"] == n + 5
    steps = pd.read_csv(run / LOG)["step"]
    assert steps.tolist() == list(range(1, 2 * n + 1))  # continued, no duplicates
    # the same run without interruption ends on the same weights and losses
    straight = Segmenter(phantom_cohort, _config(dims, 2 * n, eval_every=5), progress=False)
    straight.train(tmp_path / "straight", progress=False)
    np.testing.assert_array_equal(resumed.history["loss"], straight.history["loss"])
    for (key, a), b in zip(
        resumed.net.state_dict().items(), straight.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    # a finished run trains no further
    again = Segmenter(phantom_cohort, _config(dims, 2 * n, eval_every=5), progress=False)
    assert again.train(run, progress=False)["steps"] == 2 * n


def test_checkpoint_of_another_run_is_refused(phantom_cohort, tmp_path):
    dims = _dims(phantom_cohort)
    run = tmp_path / "run"
    Segmenter(phantom_cohort, _config(dims, 5, eval_every=5), progress=False).train(
        run, progress=False
    )
    wider = Segmenter(phantom_cohort, _config(dims, 10, eval_every=5, channels=[8, 16, 32]))
    with pytest.raises(ValueError, match=r"another run: its 'segment\.channels\[?.*differs"):
        wider.train(run, progress=False)
    # a learning rate is no other run: the resumed optimiser takes the new one
    faster = Segmenter(phantom_cohort, _config(dims, 10, eval_every=5, lr=1e-2), progress=False)
    assert faster.train(run, progress=False)["resumed_from"] == 5
    fewer = phantom_cohort[phantom_cohort.obs_names[1:]].copy()
    other_patients = Segmenter(fewer, _config(dims, 10, eval_every=5), progress=False)
    with pytest.raises(ValueError, match="another run: its '(train_patients|held_out)' differs"):
        other_patients.train(run, progress=False)


# ------------------------------------------------------------------------------------------
# user mistakes


def test_a_cohort_without_masks_is_named(phantom_cohort):
    adata = phantom_cohort.copy()
    adata.obs["has_mask"] = False
    with pytest.raises(ValueError, match="no patient of the cohort has both an image and a mask"):
        Segmenter(adata, _config(_dims(adata)), progress=False)


def test_config_spatial_dims_mismatch_shows_both_shapes(phantom_cohort):
    dims = _dims(phantom_cohort)
    other = 3 if dims == 2 else 2
    size = ", ".join(map(str, phantom_cohort.uns["rg"]["image_size"]))
    with pytest.raises(
        ValueError,
        match=rf"data.spatial_dims={other}.*spatial_dims={dims} \(images \(1, {size}\)\)",
    ):
        Segmenter(phantom_cohort, _config(other), progress=False)


def test_strides_that_do_not_divide_the_image_are_named(phantom_cohort):
    cfg = _config(_dims(phantom_cohort), channels=[4, 8, 16, 32, 64, 128], strides=[2, 2, 2, 2, 3])
    with pytest.raises(ValueError, match="segment.strides"):
        Segmenter(phantom_cohort, cfg, progress=False)


# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_held_out_dice_on_the_2d_phantom(tmp_path):
    """~300 steps on 64 phantom patients (64x64): the bright lesions segment easily."""
    adata = read_cohort(
        write_phantom(make_phantom(64, 2, seed=3, progress=False), tmp_path, progress=False)
    )
    cfg = _config(2, 300, channels=[8, 16, 32, 64], strides=[2, 2, 2], num_res_units=2)
    cfg.segment.batch_size, cfg.segment.eval_every = 8, 50
    cfg.train.val_fraction = 0.2
    seg = Segmenter(adata, cfg, progress=False)
    started = time.perf_counter()
    summary = seg.train(tmp_path / "run", progress=False)
    seconds = time.perf_counter() - started
    print(f"segmenter 2D phantom: held-out Dice {summary['best_val_dice']:.3f} in {seconds:.1f} s")
    assert summary["n_val"] == 13
    assert summary["best_val_dice"] >= 0.8
    assert seg.evaluate()["dice"] >= 0.8
