"""Differentiable appearance descriptors (nn.appearance) and the appearance association term."""

import math

import numpy as np
import pytest
import torch

from radiogenomics.config import load_config
from radiogenomics.nn.appearance import DESCRIPTORS, appearance_descriptors
from radiogenomics.radiomap.features import lesion_features
from radiogenomics.train.objectives import (
    Association,
    appearance_association_loss,
    association_gap,
)


def _grid(n, d):
    return np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2] * d, indexing="ij"))


def _t(*arrays):
    return torch.tensor(np.stack(arrays)[:, None], dtype=torch.float32)


def _lesion(n=48, d=2, r=10.0, contrast=0.4, texture=0.0, core=0.0, rng=None):
    """A ball of radius r on a flat -0.5 background, `contrast` brighter, with a dark core
    of radius core * r back at the background's level and white noise of std `texture`."""
    rho = np.sqrt((_grid(n, d) ** 2).sum(0))
    mask = rho <= r
    image = np.full(mask.shape, -0.5) + contrast * (mask & (rho > core * r))
    if texture:
        image = image + texture * rng.standard_normal(mask.shape) * mask
    return image, mask


def test_descriptors_of_known_lesions_2d_and_3d():
    rng = np.random.default_rng(0)
    for d, n, r in ((2, 48, 10.0), (3, 24, 7.0)):
        flat, mask = _lesion(n, d, r, contrast=0.4)
        rough, _ = _lesion(n, d, r, contrast=0.4, texture=0.05, rng=rng)
        rougher, _ = _lesion(n, d, r, contrast=0.4, texture=0.1, rng=rng)
        cored, _ = _lesion(n, d, r, contrast=0.4, core=0.5)
        out = appearance_descriptors(_t(flat, rough, rougher, cored), _t(*[mask] * 4)).numpy()
        assert out.shape == (4, len(DESCRIPTORS))
        assert out[0, 0] == pytest.approx(0.4, abs=1e-5)  # lesion minus ring
        assert out[1, 0] == pytest.approx(0.4, abs=0.01)
        # the high-pass residual is linear in the image: twice the noise, log 2 more texture
        assert out[2, 1] - out[1, 1] == pytest.approx(math.log(2), abs=0.05)
        assert out[0, 1] < out[1, 1] - 1.0  # a flat lesion has next to no texture
        assert out[0, 2] < 0.05  # no dark core
        # a core of half the radius: (1/2)^d of the lesion, a little more of its interior
        interior = (np.sqrt((_grid(n, d) ** 2).sum(0)) <= r - 1).sum()
        core = (np.sqrt((_grid(n, d) ** 2).sum(0)) <= 0.5 * r).sum()
        assert out[3, 2] == pytest.approx(core / interior, abs=0.08)


def test_descriptors_follow_the_numpy_lesion_features():
    rng = np.random.default_rng(1)
    rows, ours = [], []
    for _ in range(40):
        c, t, k = rng.uniform(0.1, 0.6), rng.uniform(0.01, 0.15), rng.uniform(0, 0.7)
        image, mask = _lesion(32, 2, rng.uniform(6, 10), contrast=c, texture=t, core=k, rng=rng)
        f = lesion_features(image, mask)
        rows.append([f["contrast"], f["texture"], f["necrosis"]])
        ours.append((image, mask))
    rows = np.array(rows)
    d = appearance_descriptors(_t(*[i for i, _ in ours]), _t(*[m for _, m in ours])).numpy()
    from scipy.stats import spearmanr

    # texture over the whole interior (here) or the viable rim only (lesion_features): the
    # dark core's edge adds to ours
    for j, least in enumerate((0.9, 0.7, 0.9)):
        assert spearmanr(rows[:, j], d[:, j])[0] > least, DESCRIPTORS[j]


def test_small_and_empty_lesions_are_nan_and_keep_gradients_finite():
    rng = np.random.default_rng(2)
    image, mask = _lesion(32, 2, 8.0, texture=0.05, rng=rng)
    masks = _t(mask, np.zeros_like(mask), np.ones_like(mask), mask)
    masks[1, 0, 16, 16] = 1  # one voxel
    images = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    images.requires_grad_(True)
    out = appearance_descriptors(images, masks)
    assert torch.isnan(out[1]).all()
    assert torch.isnan(out[2, 0]) and torch.isnan(out[2, 2])  # no ring around the whole field
    assert torch.isfinite(out[2, 1]) and torch.isfinite(out[[0, 3]]).all()
    (g,) = torch.autograd.grad(torch.nan_to_num(out).sum(), images)
    assert torch.isfinite(g).all() and g[[0, 3]].abs().sum() > 0
    assert g[1].abs().sum() == 0


def _cohort(n, rng, follow=True):
    """Lesions whose contrast follows component 0 (correlation ~0.9), texture random."""
    c = torch.tensor(rng.standard_normal((n, 4)), dtype=torch.float32)
    c = (c - c.mean(0)) / c.std(0)
    images, masks = [], []
    for i in range(n):
        z = float(c[i, 0]) if follow else float(rng.standard_normal())
        contrast = 0.35 + 0.1 * (0.9 * z + 0.44 * rng.standard_normal())
        image, mask = _lesion(32, 2, rng.uniform(6, 9), contrast=contrast, texture=0.03, rng=rng)
        images.append(image)
        masks.append(mask)
    return _t(*images), _t(*masks), c


def test_appearance_association_fits_and_its_gradient_reaches_the_images_only():
    rng = np.random.default_rng(3)
    ref = Association.of_appearance(*_cohort(300, rng))
    assert ref.coef[0, 0] > 0.8 and ref.coef[0, 1:].abs().max() < 0.15
    same = appearance_association_loss(ref, *_cohort(100, rng))
    images, masks, c = _cohort(100, rng, follow=False)
    broken = appearance_association_loss(ref, images, masks, c)
    # one descriptor of three follows the genes; the other two cost alike in both
    assert float(broken) > 3 * float(same)
    images.requires_grad_(True)
    soft = masks.clone().requires_grad_(True)
    loss = appearance_association_loss(ref, images, soft, c)
    gi, gm = torch.autograd.grad(loss, (images, soft), allow_unused=True)
    assert torch.isfinite(gi).all() and gi.abs().sum() > 0
    assert gm is None or gm.abs().sum() == 0
    # a too-bright lesion is pushed darker, a too-dark one brighter (the contrast descriptor),
    # and only where it is further than a real lesion's typical residual
    d = appearance_descriptors(images, masks).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(association_gap(ref, d, c), d)
    miss = ref.predict(c)[:, 0] - (d[:, 0] - ref.mean[0]).detach() / ref.scale[0]
    far = miss.abs() > ref.residual[0]
    assert far.sum() > 10 and (~far).sum() > 10
    assert torch.all(torch.sign(-g[far, 0]) == torch.sign(miss[far]))
    assert torch.all(g[~far, 0] == 0)
    # and contrast rises with the lesion's voxels and falls with the ring's
    x = images.detach().clone().requires_grad_(True)
    (gc,) = torch.autograd.grad(appearance_descriptors(x, masks)[:, 0].sum(), x)
    ring = (torch.nn.functional.max_pool2d(masks, 7, 1, 3) - masks) > 0
    assert (gc[masks > 0] > 0).all() and (gc[ring] < 0).all()
    assert (gc[~(ring | (masks > 0))] == 0).all()


def test_config_refuses_a_negative_or_impossible_appearance_weight():
    with pytest.raises(ValueError, match="appearance_association_weight"):
        load_config(None, ["image.appearance_association_weight=-1"])
    for off in ("image.use_genes=false", "image.use_mask=false"):
        with pytest.raises(ValueError, match="use_genes=true and image.use_mask=true"):
            load_config(None, ["image.appearance_association_weight=1", off])
