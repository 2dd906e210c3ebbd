"""The model core: one cohort view and scaler, one split, one base class."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from radiogenomics import _keys as K
from radiogenomics import pp, tl
from radiogenomics.config import load_config
from radiogenomics.data.scaling import stored_scaler
from radiogenomics.data.split import held_out
from radiogenomics.data.view import CohortView
from radiogenomics.models import MODELS, GeneGAN, ImageGAN, JointGAN, Segmenter, load_model

TINY = [
    "gene.n_hidden=8", "gene.n_noise=4", "image.channels=[8,4]", "image.critic_channels=[4,8]",
    "image.n_noise=4", "image.n_code=4", "image.n_hidden=8", "segment.channels=[4,8]",
    "segment.strides=[2]", "segment.num_res_units=1", "train.val_fraction=0.25", "seed=3",
]  # fmt: skip


def test_every_model_of_a_cohort_holds_out_the_same_patients(phantom_cohort):
    cfg = load_config(
        None, [*TINY, f"data.spatial_dims={phantom_cohort.uns['rg']['spatial_dims']}"]
    )
    gene, image = GeneGAN(phantom_cohort, cfg), ImageGAN(phantom_cohort, cfg)
    seg = Segmenter(phantom_cohort, cfg, progress=False)
    cohort_wide = set(phantom_cohort.obs_names[held_out(phantom_cohort.obs, 0.25, 3)])
    obs = phantom_cohort.obs
    expressed = set(obs.index[obs[K.HAS_EXPRESSION].to_numpy(bool)])
    imaged = set(obs.index[(obs[K.HAS_IMAGE] & obs[K.HAS_MASK]).to_numpy(bool)])
    # each model holds out the patients of its modality among the cohort's held-out ones
    assert len(gene.held_out) >= 2 and len(image.held_out) >= 2
    assert set(gene.held_out) == cohort_wide & expressed
    assert set(image.held_out) == set(seg.held_out) == cohort_wide & imaged
    paired = expressed & imaged
    assert set(gene.held_out) & paired == set(image.held_out) & paired
    # and tl.split labels the same patients
    tl.split(phantom_cohort, 0.25, seed=3)
    labelled = set(obs.index[phantom_cohort.obs["rg_split"] == "held_out"])
    assert labelled == cohort_wide
    del phantom_cohort.obs["rg_split"]


def test_the_models_of_a_cohort_share_one_scaler(phantom_cohort):
    adata = phantom_cohort.copy()
    cfg = load_config(None, [*TINY, f"data.spatial_dims={adata.uns['rg']['spatial_dims']}"])
    gene, image = GeneGAN(adata, cfg), ImageGAN(adata, cfg)
    # without a stored scaler each model fits its own: the same numbers
    assert gene.meta["scaler"] == image.meta["scaler"]
    assert K.GENE_STATS not in adata.uns["rg"]
    # fitted on every patient with expression, whichever modality the model trains on
    X = np.asarray(adata.X, np.float64)[adata.obs[K.HAS_EXPRESSION].to_numpy(bool)]
    np.testing.assert_allclose(gene.scaler.mean, X.mean(0))
    # the image model sees exactly the gene model's numbers for a patient with both
    pid = image.patients[int(np.flatnonzero(image.image_data.present.numpy())[0])]
    row = list(adata.obs_names).index(pid)
    view = CohortView(adata)
    np.testing.assert_array_equal(
        image.image_data.expression[image.patients.index(pid)].numpy(), view.expression[row]
    )


def _same(a, b) -> bool:
    """Deep equality of uns-like trees: dicts, lists, arrays (NaN equal to NaN), scalars."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            return False
        if a.dtype.kind == "f":
            return np.array_equal(a, b, equal_nan=True)
        return (
            bool((a == b).all()) if a.dtype.kind != "O" else all(map(_same, a.ravel(), b.ravel()))
        )
    return type(a) is type(b) and a == b


def test_building_a_view_or_a_model_leaves_the_cohort_unchanged(phantom_cohort):
    adata = phantom_cohort.copy()
    assert K.GENE_STATS not in adata.uns[K.UNS]
    cfg = load_config(None, [*TINY, f"data.spatial_dims={adata.uns['rg']['spatial_dims']}"])
    uns, obs, var = copy.deepcopy(dict(adata.uns)), adata.obs.copy(), adata.var.copy()
    X = np.array(adata.X, copy=True)
    view = CohortView(adata)
    gene, image = GeneGAN(adata, cfg), ImageGAN(adata, cfg)
    assert _same(dict(adata.uns), uns)
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)
    np.testing.assert_array_equal(adata.X, X)
    # each keeps the scaler it fitted: the one pp.standardize would store
    stored = stored_scaler(pp.standardize(adata, copy=True))
    for scaler in (view.scaler, gene.scaler, image.scaler):
        np.testing.assert_array_equal(scaler.mean, stored.mean)
        np.testing.assert_array_equal(scaler.std, stored.std)
    assert gene.meta["scaler"] == stored.to_dict()
    assert _same(dict(adata.uns), uns)  # pp.standardize(copy=True) left it too


def test_the_shared_scaler_round_trips_exactly(phantom_cohort):
    adata = phantom_cohort.copy()
    pp.standardize(adata)
    view = CohortView(adata)
    stored = stored_scaler(adata)
    np.testing.assert_array_equal(view.scaler.mean, stored.mean)
    rows = view.has_expression
    X = np.asarray(adata.X, np.float64)[rows]
    # the view's numbers are the stored scaler's transform, bit for bit
    np.testing.assert_array_equal(view.expression[rows], stored.transform(X))
    # and the inverse gives the expression back to float32 precision: the standardised values
    # are float32, so the error is at most a few units in their last place, times the std
    back = stored.inverse_transform(view.expression[rows]).astype(np.float64)
    ulp = np.spacing(np.abs(view.expression[rows]).astype(np.float32)).astype(np.float64)
    assert (np.abs(back - X) <= 4 * ulp * stored.std + np.spacing(np.float32(np.abs(X)))).all()
    # a subset of genes takes its entries from the same statistics
    sub = CohortView(adata, genes=list(adata.var_names[[5, 1]]))
    np.testing.assert_array_equal(sub.scaler.mean, stored.mean[[5, 1]])
    # with log1p asked for statistics fitted without it, the key is named
    with pytest.raises(ValueError, match=r"gene\.log1p.*log1p=False"):
        CohortView(adata, log1p=True)


def test_models_register_under_their_config_names(phantom_cohort, tmp_path):
    assert {
        "gene_gan": GeneGAN, "image_gan": ImageGAN, "joint_gan": JointGAN, "segmentation": Segmenter
    } == MODELS  # fmt: skip
    cfg = load_config(None, [*TINY, "train.steps=1", "train.val_fraction=0"])
    model = GeneGAN(phantom_cohort, cfg)
    model.save(tmp_path)
    loaded = load_model(tmp_path, phantom_cohort)
    assert type(loaded) is GeneGAN and loaded.genes == model.genes


def test_the_split_is_stratified_and_grouped_on_request(phantom_cohort):
    obs = phantom_cohort.obs.copy()
    mask = held_out(obs, 0.25, 0, stratify="subtype")
    share = obs["subtype"][mask].value_counts(normalize=True).sort_index()
    whole = obs["subtype"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(share.to_numpy(), whole.to_numpy(), atol=0.1)
    obs["subject"] = [f"s{i // 3}" for i in range(len(obs))]
    mask = held_out(obs, 0.25, 0, group="subject")
    for _, rows in obs.groupby("subject").groups.items():
        assert len(set(mask[obs.index.get_indexer(rows)])) == 1  # never on both sides
    with pytest.raises(ValueError, match="stratify column 'grade' not in obs"):
        held_out(obs, 0.25, 0, stratify="grade")
