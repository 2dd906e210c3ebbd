"""The augmentation leak check (evaluate.leak): real against real passes; a set carrying an
augmentation (moved lesions, moved images, brightened images) is flagged on the statistic that
augmentation moves, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiogenomics.evaluate.leak import augmentation_leak, leak_statistics
from radiogenomics.train.augment import Augmenter


@pytest.fixture(scope="module")
def halves(phantom):
    x = phantom.images.astype(np.float32) * 2 - 1  # the phantom's [0, 1] as the models' [-1, 1]
    m = phantom.masks.astype(np.float32)
    keep = m.reshape(len(m), -1).sum(1) > 0
    x, m = x[keep], m[keep]
    n = len(x) // 2
    return (x[:n], m[:n]), (x[n:], m[n:])


def _leaked(images, masks, policy):
    aug = Augmenter([policy])
    xa, ma = aug(torch.as_tensor(images), torch.as_tensor(masks), torch.Generator().manual_seed(0))
    return xa.numpy(), ma.numpy()


def test_statistics_per_image(phantom):
    table = leak_statistics(phantom.images[:5] * 2 - 1, phantom.masks[:5])
    dims = phantom.images.ndim - 2
    expected = [f"centroid_{i}" for i in range(dims)]
    assert list(table.columns) == [*expected, "image_mask_correlation", "brightness", "contrast"]
    assert len(table) == 5


def test_real_against_real_passes(halves):
    (x, m), (y, n) = halves
    table = augmentation_leak(x, m, y, n)
    assert not table["flagged"].any(), table


def test_a_leaked_augmentation_is_flagged(halves):
    (x, m), (y, n) = halves
    # lesions moved with their masks (a mask generator that learnt translation)
    ya, na = _leaked(y, n, "translation")
    table = augmentation_leak(x, m, ya, na)
    assert table.filter(like="centroid", axis=0)["flagged"].any(), table
    # images moved off the masks they were drawn in (an image generator that learnt it)
    assert augmentation_leak(x, m, ya, n).loc["image_mask_correlation", "flagged"]
    # brightened images
    yb, _ = _leaked(y, n, "brightness")
    table = augmentation_leak(x, m, yb, n)
    assert table.loc["brightness", "flagged"] and table.loc["brightness", "spread_ratio"] > 2
    assert table["flagged"].sum() == 1, table


def test_too_few_real_images_is_an_error(halves):
    (x, m), _ = halves
    with pytest.raises(ValueError, match=">= 8 real images"):
        augmentation_leak(x[:5], m[:5], x, m)
