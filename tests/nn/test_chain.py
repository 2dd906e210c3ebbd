"""The patient chain in one place: `Noise` owns the draws and their order, `ImageSide.forward`
and `JointGenerator.forward` run noise -> expression -> code -> mask -> image."""

from __future__ import annotations

import pytest
import torch

from radiogenomics.nn.gene import GeneGenerator
from radiogenomics.nn.image import (
    GeneEncoder,
    ImageGenerator,
    ImageSide,
    MaskGenerator,
    binarize,
    mask_features,
)
from radiogenomics.nn.joint import JointGenerator
from radiogenomics.nn.noise import MASK_SEED_OFFSET, Noise

SIZE = (16, 16)


def _side(n_latent: int = 0) -> ImageSide:
    torch.manual_seed(0)
    return ImageSide(
        GeneEncoder(5, 4, n_hidden=8, n_latent=n_latent),
        ImageGenerator(2, 1, SIZE, (8, 4), n_noise=3, n_code=4),
        MaskGenerator(2, SIZE, (8, 4), n_noise=3, n_code=4),
    )


def test_a_seed_draws_the_same_noise_in_a_fixed_order():
    side = _side()
    a = Noise.draw(side, 4, torch.Generator().manual_seed(1), n_gene=6)
    b = Noise.draw(side, 4, torch.Generator().manual_seed(1), n_gene=6)
    assert torch.equal(a.gene, b.gene) and torch.equal(a.image, b.image)
    # the order is gene, image vector, image maps, mask maps: by hand from the same seed
    rng = torch.Generator().manual_seed(1)
    assert torch.equal(a.gene, torch.randn(4, 6, generator=rng))
    assert torch.equal(a.image, torch.randn(4, 3, generator=rng))
    maps = side.image.noise_maps(4, generator=rng)
    assert all(torch.equal(x, y) for x, y in zip(a.image_maps, maps, strict=True))
    assert a.mask is None and a.mask_vector is a.image  # 'shared': the mask reads the image's
    own = Noise.draw(side, 4, torch.Generator().manual_seed(1), mask="own")
    assert own.mask is not None and not torch.equal(own.mask, own.image)
    assert len(a) == 4 and len(a.rows(slice(1, 3))) == 2
    with pytest.raises(ValueError, match="mask must be"):
        Noise.draw(side, 2, torch.Generator(), mask="mine")


def test_chunks_continue_one_stream_and_masks_have_their_own():
    side = _side()
    chunks = list(Noise.chunks(side, 5, seed=3, batch_size=2))
    assert [(r.start, r.stop) for r, _ in chunks] == [(0, 2), (2, 4), (4, 5)]
    rng = torch.Generator().manual_seed(3)
    first = Noise.draw(side, 2, rng, mask=None)
    second = Noise.draw(side, 2, rng, mask=None)
    assert torch.equal(chunks[1][1].image, second.image) and torch.equal(
        chunks[0][1].image, first.image
    )
    (_, masks), *_ = Noise.chunks(side, 2, seed=3, batch_size=2, masks=True)
    expect = torch.randn(2, 3, generator=torch.Generator().manual_seed(3 + MASK_SEED_OFFSET))
    assert masks.image is None and torch.equal(masks.mask, expect)


def test_image_side_draws_masks_or_follows_given_ones():
    side = _side()
    code = side.code(torch.randn(3, 5), torch.ones(3, dtype=torch.bool))
    noise = Noise.draw(side, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        drawn = side(code, noise)
        # the same masks given back (binary, or with their depth) give the same images
        given = side(code, noise, drawn.masks)
        with_depth = side(code, noise, mask_features(drawn.masks))
    assert set(drawn.masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(drawn.masks, binarize(drawn.soft_masks))
    assert torch.equal(given.images, drawn.images) and torch.equal(with_depth.images, drawn.images)
    assert given.soft_masks is None and drawn.conditions.shape[1] == 2


def test_straight_through_masks_pass_the_soft_gradient():
    side = _side()
    expression, present = torch.randn(2, 5), torch.ones(2, dtype=torch.bool)
    noise = Noise.draw(side, 2, torch.Generator().manual_seed(0))

    def mask_gradient(straight_through: bool) -> float:
        side.zero_grad(set_to_none=True)
        out = side(side.code(expression, present), noise, straight_through=straight_through)
        out.images.sum().backward()
        return sum(float(p.grad.abs().sum()) for p in side.mask.parameters() if p.grad is not None)

    assert mask_gradient(True) > 0  # the image teaches the mask generator, as training needs
    assert mask_gradient(False) == 0  # sampling's binary masks carry no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_straight_through_masks_are_exactly_binary(dtype):
    soft = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    soft.requires_grad_(True)
    st = binarize(soft, straight_through=True)
    assert torch.equal(st.detach(), binarize(soft.detach()))  # bf16 rounding would break this
    st.sum().backward()
    assert torch.equal(soft.grad, torch.ones_like(soft))  # the soft mask's gradient, unchanged


def test_the_joint_generator_is_the_chain_written_out():
    gene = GeneGenerator(5, [], 0, n_noise=6, n_hidden=8)
    side = _side(n_latent=8)
    J = JointGenerator(gene, side)
    noise = Noise.draw(side, 3, torch.Generator().manual_seed(2), n_gene=6)
    codes, numeric = torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0)
    with torch.no_grad():
        out = J(noise, codes, numeric)
        expression, latent = gene(noise.gene, codes, numeric)
        code = side.code(expression, torch.ones(3, dtype=torch.bool), latent)
        by_hand = side(code, noise)
    assert torch.equal(out.expression, expression) and torch.equal(out.latent, latent)
    assert torch.equal(out.images, by_hand.images) and torch.equal(out.masks, by_hand.masks)
    # an encoder that reads no latent ignores it, so callers pass it whatever the encoder
    plain = _side()
    c = torch.ones(3, dtype=torch.bool)
    assert torch.equal(plain.code(expression, c, latent), plain.code(expression, c))
