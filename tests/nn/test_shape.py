"""Differentiable shape descriptors (nn.shape) and the shape association term they feed."""

import math

import numpy as np
import pytest
import torch

from radiogenomics.config import load_config
from radiogenomics.nn.shape import DESCRIPTORS, shape_descriptors
from radiogenomics.train.objectives import (
    Association,
    association_gap,
    shape_association_loss,
)


def _grid(n, d):
    return np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * d, indexing="ij"))


def _masks(*arrays):
    return torch.tensor(np.stack(arrays)[:, None], dtype=torch.float32)


def _star(n, r, amp, k=5):
    y, x = _grid(n, 2)
    return np.hypot(x, y) <= r * (1 + amp * np.cos(k * np.arctan2(y, x)))


def test_descriptors_of_analytic_shapes_2d():
    y, x = _grid(64, 2)
    disk = x**2 + y**2 <= 12**2
    ellipse = (x / 16) ** 2 + (y / 8) ** 2 <= 1
    d = shape_descriptors(_masks(disk, ellipse, _star(64, 12, 0.3))).numpy()
    assert d.shape == (3, len(DESCRIPTORS))
    assert d[0, 0] == pytest.approx(math.log(disk.sum()))
    assert abs(d[0, 1]) < 0.01  # a disk is not elongated
    assert d[1, 1] == pytest.approx(math.log(2.0), abs=0.02)  # axes 16:8
    # an ellipse's boundary is its moment ellipse's (up to pixelation); a star's radius varies
    # by 0.3 of its mean, so its standard deviation over angles is 0.3 / sqrt(2)
    assert d[0, 2] < 0.03 and d[1, 2] < 0.03
    assert d[2, 2] == pytest.approx(0.3 / math.sqrt(2), abs=0.03)
    assert abs(d[2, 1]) < 0.02  # five-fold symmetry: not elongated


def test_descriptors_of_analytic_shapes_3d():
    z, y, x = _grid(32, 3)
    sphere = x**2 + y**2 + z**2 <= 9**2
    ellipsoid = (x / 12) ** 2 + (y / 6) ** 2 + (z / 6) ** 2 <= 1
    rho = np.sqrt(x**2 + y**2 + z**2)
    bumpy = rho <= 9 * (
        1 + 0.3 * np.cos(4 * np.arctan2(y, x)) * np.sin(np.arccos(z / (rho + 1e-9)))
    )
    d = shape_descriptors(_masks(sphere, ellipsoid, bumpy)).numpy()
    assert abs(d[0, 1]) < 0.01
    assert d[1, 1] == pytest.approx(math.log(2.0), abs=0.03)
    assert d[0, 2] < 0.04 and d[1, 2] < 0.04
    assert d[2, 2] > 0.1


def test_irregularity_grows_with_the_margin_not_the_size():
    res = shape_descriptors(
        _masks(*[_star(64, r, a) for a in (0.0, 0.1, 0.2, 0.3) for r in (6, 12)])
    )[:, 2].numpy()
    by_amp = res.reshape(4, 2)
    assert np.all(np.diff(by_amp, axis=0) > 0)  # more irregular, larger residual at each size
    assert np.abs(by_amp[:, 0] - by_amp[:, 1]).max() < 0.02  # half the size, about the same


def test_tiny_lesions_have_no_descriptors_and_gradients_are_finite():
    m = torch.zeros(2, 1, 16, 16)
    m[0, 0, 5:10, 4:12] = 1
    m[1, 0, 3, 3] = 1  # one voxel
    d = shape_descriptors(m)
    assert torch.isfinite(d[0]).all() and torch.isnan(d[1]).all()
    soft = (m[:1] * 0.8 + 0.1).requires_grad_(True)
    (g,) = torch.autograd.grad(shape_descriptors(soft).sum(), soft)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def _cohort(n, rng, follow=True):
    """Ellipses whose elongation follows component 0 (or not) and whose size follows none."""
    c = torch.tensor(rng.standard_normal((n, 3)), dtype=torch.float32)
    y, x = _grid(32, 2)
    masks = []
    for i in range(n):
        e = float(c[i, 0]) if follow else rng.standard_normal()
        ratio = 1.0 + 1.2 / (1.0 + math.exp(-1.2 * e))  # as the phantom's, always >= 1
        r = rng.uniform(5, 8)
        a, b = r * math.sqrt(ratio), r / math.sqrt(ratio)
        masks.append((x / a) ** 2 + (y / b) ** 2 <= 1)
    return _masks(*masks), c


def test_shape_association_fits_the_real_relation_and_scores_batches_against_it():
    rng = np.random.default_rng(0)
    ref = Association.of_shapes(*_cohort(400, rng))
    # elongation follows component 0 at a correlation near 0.9, and nothing else does
    assert ref.coef[1, 0] > 0.85 and ref.coef[1, 1:].abs().max() < 0.15
    assert ref.coef[0].abs().max() < 0.15  # size follows nothing
    assert ref.residual[1] < 0.5 and ref.residual[0] > 0.9
    same = shape_association_loss(ref, *_cohort(200, rng))
    broken = shape_association_loss(ref, *_cohort(200, rng, follow=False))
    assert float(broken) > 5 * float(same)


def test_shape_association_fits_in_chunks_as_in_one_batch(monkeypatch):
    from radiogenomics.train import objectives

    masks, c = _cohort(40, np.random.default_rng(3))
    whole = Association.of_shapes(masks, c)
    monkeypatch.setattr(objectives, "FIT_VOXELS", 7 * 32 * 32)  # chunks of 7 masks
    chunked = Association.of_shapes(masks, c)
    for name in ("mean", "scale", "coef", "residual"):
        assert torch.allclose(getattr(whole, name), getattr(chunked, name), atol=1e-6), name


def test_shape_association_gradient_moves_lesions_toward_their_prediction():
    rng = np.random.default_rng(1)
    ref = Association.of_shapes(*_cohort(400, rng))
    masks, c = _cohort(64, rng, follow=False)
    d = shape_descriptors(masks).requires_grad_(True)
    (g,) = torch.autograd.grad(association_gap(ref, d, c), d)
    # a step down the gradient moves each lesion's elongation toward what its genes predict,
    # and only where it is further than a real lesion's typical residual
    miss = ref.predict(c)[:, 1] - (d[:, 1] - ref.mean[1]).detach() / ref.scale[1]
    far = miss.abs() > ref.residual[1]
    assert far.sum() > 10
    assert torch.all(torch.sign(-g[far, 1]) == torch.sign(miss[far]))
    assert torch.all(g[~far, 1] == 0)
    # and the gradient reaches the masks, at their edges only
    soft = (masks * 0.9 + 0.05).requires_grad_(True)
    (gm,) = torch.autograd.grad(shape_association_loss(ref, soft, c), soft)
    assert torch.isfinite(gm).all() and gm.abs().sum() > 0
    hard = masks > 0.5
    inner = -torch.nn.functional.max_pool2d(-hard.float(), 3, 1, 1) == 1  # eroded: interior
    assert gm[inner].abs().max() == 0


def test_a_batch_with_empty_and_tiny_lesions_keeps_finite_gradients():
    rng = np.random.default_rng(2)
    ref = Association.of_shapes(*_cohort(100, rng))
    masks, c = _cohort(6, rng)
    masks[0] = 0  # empty
    masks[1] = 0
    masks[1, 0, 10, 10] = 1  # one voxel
    masks[2] = 1  # the whole field
    soft = (masks * 0.9 + 0.05).requires_grad_(True)
    loss = shape_association_loss(ref, soft, c)
    (g,) = torch.autograd.grad(loss, soft)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert g[3:].abs().sum() > 0
    # no lesion to measure at all: no term
    assert shape_association_loss(ref, torch.zeros(3, 1, 32, 32), c[:3]) is None


def test_config_refuses_a_negative_or_impossible_shape_weight():
    with pytest.raises(ValueError, match="shape_association_weight"):
        load_config(None, ["image.shape_association_weight=-1"])
    for off in ("image.train_masks=false", "image.use_genes=false"):
        with pytest.raises(ValueError, match="train_masks=true and image.use_genes=true"):
            load_config(None, ["image.shape_association_weight=1", off])
