"""Differentiable augmentation (train.augment): gradients reach the input, one draw moves an
image and its mask alike, real and generated batches go through the same function, 2D and
3D; reproducible draws; the adaptive p of ADA; augmented critic and generator losses."""

from __future__ import annotations

import pytest
import torch

from radiogenomics.config import AUGMENT_POLICIES, load_config
from radiogenomics.train.augment import Augmenter, checkpointed

SIZES = {2: (16, 16), 3: (8, 8, 8)}
GEOMETRIC = ["translation", "cutout", "flip"]


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def dims(request):
    return request.param


def _batch(dims, B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = SIZES[dims]
    images = torch.rand(B, 1, *size, generator=g) * 2 - 1
    masks = (torch.rand(B, 1, *size, generator=g) > 0.7).float()
    depth = torch.rand(B, 1, *size, generator=g) * masks
    return images, torch.cat([masks, depth], 1)


def test_gradients_reach_images_and_masks(dims):
    images, masks = _batch(dims)
    images.requires_grad_(True)
    masks.requires_grad_(True)
    xa, ma = Augmenter(AUGMENT_POLICIES)(images, masks, torch.Generator().manual_seed(1))
    assert xa.shape == images.shape and ma.shape == masks.shape
    (xa * torch.randn_like(xa)).sum().backward(retain_graph=True)
    (ma * torch.randn_like(ma)).sum().backward()
    assert images.grad.abs().sum() > 0 and masks.grad.abs().sum() > 0


@pytest.mark.parametrize("fill", ["reflect", "zeros"])
def test_a_mask_follows_its_image(dims, fill):
    # the image is a copy of its mask channels: after one draw it still is, pixel for pixel
    _, masks = _batch(dims)
    aug = Augmenter(GEOMETRIC + ["brightness", "contrast"], fill=fill)
    xa, ma = aug(masks.clone(), masks, torch.Generator().manual_seed(2))
    assert not torch.equal(ma, masks)  # something moved
    geometric = Augmenter(GEOMETRIC, fill=fill)
    xg, mg = geometric(masks.clone(), masks, torch.Generator().manual_seed(2))
    assert torch.equal(xg, mg)
    # colour reaches the image channels only: the masks are those of the geometric draw
    assert torch.equal(ma, mg)
    assert not torch.equal(xa, xg)


def test_translation_is_a_whole_pixel_shift_on_every_axis(dims):
    size = SIZES[dims]
    x = torch.arange(float(torch.Size(size).numel())).view(1, 1, *size)
    aug = Augmenter(["translation"], fill="zeros")
    draw = aug.draw(1, size, torch.Generator().manual_seed(0), "cpu")
    shift = torch.arange(1, dims + 1).view(1, dims)  # 1 on the first axis, 2 on the next ...
    draw.shift = shift
    out, _ = aug.apply(draw, x, None)
    expected = torch.zeros_like(x)
    src = tuple(slice(0, s - k) for s, k in zip(size, shift[0].tolist(), strict=True))
    dst = tuple(slice(k, s) for s, k in zip(size, shift[0].tolist(), strict=True))
    expected[(0, 0, *dst)] = x[(0, 0, *src)]
    assert torch.equal(out, expected)


def test_real_and_generated_batches_take_the_same_draw_the_same_way(dims):
    real, masks = _batch(dims, seed=0)
    fake, _ = _batch(dims, seed=1)
    aug = Augmenter(AUGMENT_POLICIES)
    draw = aug.draw(len(real), real.shape[2:], torch.Generator().manual_seed(3), "cpu")
    # one function for both: a draw applied to one batch is the function forward applies
    real_a, masks_a = aug.apply(draw, real, masks)
    again, _ = aug(real, masks, torch.Generator().manual_seed(3))
    assert torch.equal(real_a, again)
    # the generated batch with the real one's draw: where they agree, so do their outputs
    fake[:3] = real[:3]
    fake_a, _ = aug.apply(draw, fake, masks)
    assert torch.equal(fake_a[:3], real_a[:3])
    assert not torch.equal(fake_a[3:], real_a[3:])


def test_draws_are_seeded_and_as_many_whatever_p():
    images, masks = _batch(2)

    def run(p, seed=4):
        g = torch.Generator().manual_seed(seed)
        out = Augmenter(AUGMENT_POLICIES, p)(images, masks, g)
        return out, torch.rand(1, generator=g)  # where the stream stands after it

    (a, after_a), (b, _) = run(1.0), run(1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    (c, _) = run(1.0, seed=5)
    assert not torch.equal(a[0], c[0])
    (d, after_d) = run(0.3)
    assert torch.equal(after_a, after_d)  # p changes what is applied, not what is drawn
    (e, _) = run(0.0)
    assert torch.equal(e[0], images) and torch.equal(e[1], masks)
    # no policy: unchanged, and nothing drawn
    g = torch.Generator().manual_seed(4)
    state = g.get_state()
    x, m = Augmenter([])(images, masks, g)
    assert x is images and m is masks and torch.equal(g.get_state(), state)


def test_adaptive_p_follows_the_critics_overfitting_and_resumes():
    aug = Augmenter(["translation"], 0.0, target=0.6, ramp=8, interval=4)
    assert checkpointed(aug) == {"augment": aug}
    assert checkpointed(Augmenter(["translation"])) == {}  # fixed p: no state to keep
    sure = (torch.ones(4, 1, 3, 3), -torch.ones(4, 1, 3, 3))  # r_t = 1 > target
    for _ in range(3):
        aug.observe(*sure)
    assert float(aug.p) == 0.0  # between updates
    saved = {k: v.clone() for k, v in aug.state_dict().items()}
    aug.observe(*sure)
    assert float(aug.p) == pytest.approx(0.5)  # interval / ramp
    resumed = Augmenter(["translation"], 0.0, target=0.6, ramp=8, interval=4)
    resumed.load_state_dict(saved)
    resumed.observe(*sure)
    assert torch.equal(resumed.p, aug.p)
    for _ in range(12):  # clamped at 1
        aug.observe(*sure)
    assert float(aug.p) == 1.0
    confused = (torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3) + 5)  # r_t = -1 < target
    for _ in range(4):
        aug.observe(*confused)
    assert float(aug.p) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("image.augment_policy=[rotate]", "image.augment_policy"),
        ("image.augment_policy=[flip,flip]", "image.augment_policy"),
        ("image.augment_p=1.5", "image.augment_p"),
        ("image.augment_target=0.6", "image.augment_target"),  # without a policy
        ("image.augment_ramp=0", "image.augment_ramp"),
        ("image.augment_fill=wrap", "image.augment_fill"),
        ("image.padding=circular", "image.padding"),
    ],
)
def test_config_errors_name_the_key(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config(None, [override])


def test_defaults_leave_augmentation_and_padding_off():
    img = load_config(None, []).image
    assert img.augment_policy == [] and img.augment_target is None
    assert img.padding == "zeros" and not img.output_noise
