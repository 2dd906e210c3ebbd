"""Image-side networks in 2D and 3D: shapes, gradients, conditioning, errors, no batch norm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from radiogenomics.nn.image import (
    FiLM,
    GeneEncoder,
    GeneRegressor,
    ImageCritic,
    ImageGenerator,
    MaskGenerator,
    mask_depth,
    mask_features,
)
from radiogenomics.train.losses import OBJECTIVES, gradient_penalty, mismatched_scores

SIZES = {2: [32, 32], 3: [16, 16, 16]}


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def dims(request):
    return request.param


def _inputs(dims, B=3, C=2, n_code=8, n_noise=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = SIZES[dims]
    mask = (torch.rand(B, 1, *size, generator=g) > 0.6).float()
    return {
        "mask": mask,
        "code": torch.randn(B, n_code, generator=g),
        "noise": torch.randn(B, n_noise, generator=g),
        "background": torch.rand(B, C, *size, generator=g) * 2 - 1,
    }


def _generator(dims, **kw):
    args = dict(n_noise=16, n_code=8, use_mask=True, background_channels=2)
    args.update(kw)
    return ImageGenerator(dims, 2, SIZES[dims], [16, 8, 4], **args)


def test_generator_shapes_range_and_gradients(dims):
    torch.manual_seed(0)
    G = _generator(dims)
    x = _inputs(dims)
    out = G(x["mask"], x["code"], x["noise"], x["background"])
    assert out.shape == (3, 2, *SIZES[dims])
    assert out.min() >= -1 and out.max() <= 1
    out.square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    # gradients also reach the gene code (the joint model trains through it) once FiLM has
    # left its identity start
    for m in G.modules():
        if isinstance(m, FiLM):
            nn.init.normal_(m.linear.weight, std=0.1)
    code = x["code"].clone().requires_grad_(True)
    G(x["mask"], code, x["noise"], x["background"]).sum().backward()
    assert code.grad.abs().sum() > 0


def test_generator_depends_on_each_input(dims):
    torch.manual_seed(1)
    G = _generator(dims)
    for p in G.modules():  # FiLM starts as identity; give it weights so the code matters
        if isinstance(p, FiLM):
            nn.init.normal_(p.linear.weight, std=0.5)
    x = _inputs(dims)
    maps = G.noise_maps(3, generator=torch.Generator().manual_seed(0))
    base = G(x["mask"], x["code"], x["noise"], x["background"], maps)
    for key in ("mask", "code", "noise", "background"):
        other = dict(x)
        other[key] = _inputs(dims, seed=5)[key]
        changed = G(other["mask"], other["code"], other["noise"], other["background"], maps)
        assert (changed - base).abs().mean() > 1e-4, f"the output ignores {key}"
    # the same noise maps give the same output: sampling is reproducible
    again = G(x["mask"], x["code"], x["noise"], x["background"], maps)
    assert torch.equal(again, base)


def test_film_starts_as_identity():
    film = FiLM(4, 3)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(film(x, torch.randn(2, 4)), x)


def test_unconditional_generator_and_mask_generator(dims):
    G = ImageGenerator(dims, 1, SIZES[dims], [16, 8], n_noise=16, n_code=0, use_mask=False)
    out = G(None, None, torch.randn(4, 16))
    assert out.shape == (4, 1, *SIZES[dims])
    M = MaskGenerator(dims, SIZES[dims], [16, 8, 4], n_noise=16, n_code=8)
    probs = M(torch.randn(4, 8), torch.randn(4, 16))
    assert probs.shape == (4, 1, *SIZES[dims])
    assert probs.min() >= 0 and probs.max() <= 1


def test_generator_errors_name_the_input(dims):
    G = _generator(dims)
    x = _inputs(dims)
    wrong = torch.zeros(3, 1, *[s // 2 for s in SIZES[dims]])
    with pytest.raises(ValueError, match="mask has shape"):
        G(wrong, x["code"], x["noise"], x["background"])
    with pytest.raises(ValueError, match="mask has shape"):
        G(x["mask"][:, 0], x["code"], x["noise"], x["background"])  # channel dim missing
    with pytest.raises(ValueError, match="gene code has shape"):
        G(x["mask"], x["code"][:, :3], x["noise"], x["background"])
    with pytest.raises(ValueError, match="background"):
        G(x["mask"], x["code"], x["noise"], None)
    with pytest.raises(ValueError, match="divisible"):
        ImageGenerator(dims, 1, [30] * dims, [16, 8, 4])


def test_mask_depth_is_relative_distance_to_the_edge(dims):
    mask = torch.zeros(2, 1, *[9] * dims)
    mask[(0, 0, *[slice(2, 7)] * dims)] = 1  # a 5-voxel cube: depths 1, 2, 3 from the edge
    depth = mask_depth(mask)
    centre = (0, 0, *[4] * dims)
    corner = (0, 0, *[2] * dims)
    assert depth[centre] == 1.0 and depth[corner] == pytest.approx(1 / 3)
    assert depth[mask == 0].abs().max() == 0  # outside, and the empty second mask
    # a lesion filling the field is measured to the field's edge: deepest in the middle
    full = mask_depth(torch.ones(1, 1, *[5] * dims))
    assert full[(0, 0, *[2] * dims)] == 1.0 and full[(0, 0, *[0] * dims)] == pytest.approx(1 / 3)
    torch.testing.assert_close(full, full.flip(-1))
    # networks take a mask or its precomputed features alike
    G, C, x = _generator(dims), ImageCritic(dims, 2, [8, 16], mask_depth=True), _inputs(dims)
    feats = mask_features(x["mask"])
    maps = G.noise_maps(3, generator=torch.Generator().manual_seed(0))
    same = [G(m, x["code"], x["noise"], x["background"], maps) for m in (x["mask"], feats)]
    torch.testing.assert_close(*same)
    torch.testing.assert_close(C(x["background"], x["mask"]), C(x["background"], feats))
    with pytest.raises(ValueError, match="mask has shape"):
        C(x["background"], torch.cat([feats, feats], 1))
    # without depth, features are read as the bare mask
    plain = ImageCritic(dims, 2, [8, 16])
    torch.testing.assert_close(plain(x["background"], x["mask"]), plain(x["background"], feats))


def test_critic_patch_scores_projection_and_no_batch_norm(dims):
    torch.manual_seed(0)
    C = ImageCritic(dims, 2, [8, 16], use_mask=True, n_code=8)
    x = _inputs(dims)
    image = x["background"]
    scores = C(image, x["mask"], x["code"])
    assert scores.shape == (3, 1, *[s // 4 for s in SIZES[dims]])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in C.modules())
    assert any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in C.modules())
    # the projection term makes scores depend on the gene code
    assert (C(image, x["mask"], -x["code"]) - scores).abs().mean() > 1e-5
    scores.mean().backward()
    assert all(p.grad is not None for p in C.parameters())
    none = ImageCritic(dims, 2, [8, 16], n_code=8, norm="none")
    assert not any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in none.modules())
    with pytest.raises(ValueError, match="never batch"):
        ImageCritic(dims, 2, [8, 16], norm="batch")
    with pytest.raises(ValueError, match="image has shape"):
        C(image[:, :1], x["mask"], x["code"])


def test_gene_regressor_shapes_mask_features_and_errors(dims):
    torch.manual_seed(0)
    R = GeneRegressor(dims, 2, SIZES[dims], 5, channels=[4, 8]).eval()  # no dropout
    x = _inputs(dims)
    image = x["background"].requires_grad_(True)
    out = R(image, x["mask"])
    assert out.shape == (3, 5)
    # precomputed mask features give the same answer as the mask (the head reads the mask only)
    torch.testing.assert_close(R(image, mask_features(x["mask"])), out)
    out.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0  # the generator's signal
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in R.modules())
    with pytest.raises(ValueError, match="mask has shape"):
        R(image, x["mask"][..., :-1])


def test_gene_regressor_learns_to_read_an_intensity_program():
    """A planted program (lesion brightness) is read back from held-out images after a short
    fit, and the gradient on a generated image says which way to change it."""
    g = torch.Generator().manual_seed(0)
    n, size = 96, [16, 16]
    mask = torch.zeros(n, 1, *size)
    mask[..., 4:12, 4:12] = 1
    target = torch.randn(n, 1, generator=g)
    image = 0.3 * target.view(n, 1, 1, 1) * mask + 0.1 * torch.randn(n, 1, *size, generator=g)
    torch.manual_seed(0)
    R = GeneRegressor(2, 1, size, 1, channels=[8, 16])
    opt = torch.optim.Adam(R.parameters(), 3e-3)
    for _ in range(150):
        opt.zero_grad()
        (R(image[:64], mask[:64]) - target[:64]).square().mean().backward()
        opt.step()
    R.eval()
    with torch.no_grad():
        pred = R(image[64:], mask[64:])[:, 0]
    r = torch.corrcoef(torch.stack([pred, target[64:, 0]]))[0, 1]
    assert r > 0.8, r
    # asking for a higher reading brightens the lesion, not the background
    fake = torch.zeros(1, 1, *size, requires_grad=True)
    (-R(fake, mask[:1])).sum().backward()
    step = -fake.grad[0, 0]
    assert step[mask[0, 0] > 0].mean() > step[mask[0, 0] == 0].mean()


def test_gradient_penalty_through_the_critic(dims):
    """The image critic has no batch norm, so per-sample gradients are independent: the
    penalty of a batch equals the mean of the penalties of its samples (same eps)."""
    torch.manual_seed(0)
    C = ImageCritic(dims, 2, [8, 16], use_mask=True, n_code=8)
    x = _inputs(dims)
    real, fake = x["background"], torch.rand_like(x["background"])
    gp = gradient_penalty(
        lambda v: C(v, x["mask"], x["code"]), real, fake, generator=torch.Generator().manual_seed(3)
    )
    eps = torch.rand((3,), generator=torch.Generator().manual_seed(3))
    singles = []
    for i in range(3):
        xi = (eps[i] * real[i : i + 1] + (1 - eps[i]) * fake[i : i + 1]).requires_grad_(True)
        (g,) = torch.autograd.grad(C(xi, x["mask"][i : i + 1], x["code"][i : i + 1]).sum(), xi)
        singles.append((g.norm() - 1) ** 2)
    assert gp.item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-4)


def test_gene_encoder_missing_code():
    enc = GeneEncoder(5, 4, n_hidden=8, n_layers=1)
    with torch.no_grad():
        enc.missing.fill_(3.0)
    expr = torch.randn(3, 5)
    code = enc(expr, torch.tensor([True, False, True]))
    assert torch.equal(code[1], torch.full((4,), 3.0))
    assert torch.allclose(code[[0, 2]], enc(expr[[0, 2]]))
    with pytest.raises(ValueError, match=r"expected \(batch, 5\)"):
        enc(torch.randn(3, 4))


def test_matching_aware_negatives_pair_right_partners():
    """Negatives are real images with the partner's genes (both with expression only) and
    with the partner's mask."""
    calls = []

    def critic(images, masks, code):
        calls.append((images.clone(), masks.clone(), None if code is None else code.clone()))
        return torch.zeros(len(images), 1, 1, 1)

    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    masks = torch.arange(10.0, 14.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    code = torch.arange(20.0, 24.0).view(4, 1)
    present = torch.tensor([True, True, False, True])
    perm = torch.roll(torch.arange(4), 1)  # partner of i is i - 1
    scores = mismatched_scores(critic, images, masks, code, present, perm, use_mask=True)
    assert len(scores) == 2
    img, msk, cod = calls[0]
    # rows 0 (partner 3) and 1 (partner 0) qualify; row 2 has no genes, row 3's partner neither
    assert img[:, 0, 0, 0].tolist() == [0.0, 1.0]
    assert msk[:, 0, 0, 0].tolist() == [10.0, 11.0]
    assert cod[:, 0].tolist() == [23.0, 20.0]
    img, msk, cod = calls[1]
    assert img[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert msk[:, 0, 0, 0].tolist() == [13.0, 10.0, 11.0, 12.0]
    assert cod[:, 0].tolist() == [20.0, 21.0, 22.0, 23.0]
    # image-only critics without masks get no negatives at all
    calls.clear()
    assert mismatched_scores(critic, images, masks, None, present, perm, use_mask=False) == []


def test_wrong_genes_negatives_from_the_real_trunk_match_a_new_pass(dims):
    # the critic's trunk (features and psi) does not see the code: the wrong-genes
    # negatives reuse the real batch's, the same scores as a pass of their own
    torch.manual_seed(0)
    C = ImageCritic(dims, 2, [8, 16], use_mask=True, n_code=8)
    x = _inputs(dims, B=4)
    image, mask, code = x["background"], x["mask"], torch.randn(4, 8)
    trunk = C.trunk(image, mask)
    present = torch.tensor([True, True, False, True])
    perm = torch.roll(torch.arange(4), 1)
    args = (C, image, mask, code, present, perm, True)
    fresh, shared = mismatched_scores(*args), mismatched_scores(*args, trunk=trunk)
    assert len(fresh) == len(shared) == 2
    for a, b in zip(fresh, shared, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_objectives_prefer_real_scores(objective):
    critic_loss, generator_loss = OBJECTIVES[objective]
    good = critic_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))
    bad = critic_loss(torch.full((4,), -2.0), torch.full((4,), 2.0))
    assert good < bad
    assert generator_loss(torch.full((4,), 2.0)) < generator_loss(torch.full((4,), -2.0))


def test_partners_have_similar_lesions_and_are_other_patients():
    from radiogenomics.train.losses import partners

    idx = torch.tensor([0, 1, 2, 3, 1])
    masks = torch.zeros(5, 4, 4)
    for row, rows_filled in enumerate([1, 2, 3, 4, 2]):  # lesion areas 4, 8, 12, 16, 8
        masks[row, :rows_filled] = 1
    perm = partners(idx, masks, "similar_mask")
    assert perm.tolist() == [1, 0, 1, 2, 0]  # closest size, never patient 1 with itself
    assert (idx != idx[perm]).all()
    assert partners(idx, masks, "random").tolist() == [4, 0, 1, 2, 3]
    same = partners(torch.tensor([7, 7]), masks[:2], "similar_mask")
    assert same.tolist() == [1, 0]  # only one patient: any other row (skipped as no negative)
    with pytest.raises(ValueError, match="similar_mask"):
        partners(idx, masks, "nearest")


def test_negatives_skip_partners_that_are_the_same_patient():
    seen = []

    def critic(images, masks, code):
        seen.append(len(images))
        return torch.zeros(len(images), 1, 1, 1)

    x = torch.zeros(3, 1, 2, 2)
    present = torch.ones(3, dtype=torch.bool)
    distinct = torch.tensor([True, False, True])
    mismatched_scores(critic, x, x, torch.zeros(3, 2), present, torch.roll(torch.arange(3), 1),
                      True, distinct=distinct)  # fmt: skip
    assert seen == [2, 2]


def test_penalty_with_a_code_from_bf16_autocast(dims):
    """The critic's code comes out of autocast in bf16; the penalty runs with autocast off."""
    C = ImageCritic(dims, 2, [8, 16], use_mask=True, n_code=8)
    enc = GeneEncoder(5, 8, n_hidden=8, n_layers=1)
    x = _inputs(dims)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        code = enc(torch.randn(3, 5))
        assert code.dtype == torch.bfloat16
        gp = gradient_penalty(lambda v: C(v, x["mask"], code), x["background"],
                              torch.rand_like(x["background"]))  # fmt: skip
    assert gp.dtype == torch.float32 and torch.isfinite(gp)


def test_matching_loss_is_a_bounded_margin():
    from radiogenomics.train.losses import matching_loss

    right = torch.zeros(4)
    assert matching_loss(right, torch.full((4,), -3.0)).item() == 0.0  # past the margin
    assert matching_loss(right, torch.zeros(4)).item() == pytest.approx(1.0)
    assert matching_loss(right, torch.full((4,), 2.0)).item() == pytest.approx(3.0)


def test_gene_encoder_takes_the_gene_latent():
    from radiogenomics.nn.image import GeneEncoder

    torch.manual_seed(0)
    enc = GeneEncoder(6, 4, n_hidden=8, n_layers=1, n_latent=5)
    z, latent = torch.randn(3, 6), torch.randn(3, 5, requires_grad=True)
    code = enc(z, torch.tensor([True, True, False]), latent)
    assert code.shape == (3, 4)
    assert torch.equal(code[2], enc.missing.detach())  # no expression: the learned code
    code[:2].sum().backward()
    assert latent.grad is not None and latent.grad[:2].abs().sum() > 0  # the latent is used
    # real patients have no latent: the learned no_latent vector stands in
    assert torch.allclose(enc(z), enc(z, latent=enc.no_latent.detach().expand(3, -1)))
    with pytest.raises(ValueError, match=r"gene latent has shape \(3, 2\); expected \(3, 5\)"):
        enc(z, latent=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="takes no gene latent"):
        GeneEncoder(6, 4)(z, latent=latent)


# ------------------------------------------------------------------------------------------
# padding and output noise (the frame and the missing fine texture of generated images)


def _constant_run(G, dims, B=2):
    """G's output for an input with no spatial structure: a constant noise grid, no noise
    maps, an empty mask."""
    with torch.no_grad():
        G.fc.weight.zero_()  # (B, C, *base): one value per channel
        G.fc.bias.copy_(torch.randn(G.channels[0]).repeat_interleave(math.prod(G.base)))
    size = SIZES[dims]
    maps = [torch.zeros(B, 1, *s) for s in G.scale_sizes()]
    mask = torch.zeros(B, 1, *size)
    code = torch.randn(B, G.n_code) if G.n_code else None
    with torch.no_grad():
        if isinstance(G, MaskGenerator):
            return G(code, torch.randn(B, G.n_noise), noise_maps=maps)
        return G(mask, code, torch.randn(B, G.n_noise), noise_maps=maps)


def _border_gap(y: torch.Tensor) -> float:
    """Largest |border pixel - the interior's mean|, per image and channel, over the batch."""
    d = y.ndim - 2
    inner = y[(slice(None), slice(None), *[slice(1, -1)] * d)]
    border = torch.ones(y.shape[2:], dtype=torch.bool)
    border[tuple([slice(1, -1)] * d)] = False
    mean = inner.flatten(2).mean(2, keepdim=True)  # (B, C, 1)
    return float((y[:, :, border] - mean).abs().max())


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_padding_kills_the_border_frame_of_an_untrained_generator(dims, padding):
    torch.manual_seed(0)
    zero = _constant_run(_generator(dims, background_channels=0), dims)
    # instance norm blows the zero padding's rim up to the size of the signal
    assert _border_gap(zero) > 0.05
    torch.manual_seed(0)
    G = _generator(dims, background_channels=0, padding=padding)
    out = _constant_run(G, dims)
    assert out.shape == zero.shape
    assert _border_gap(out) < 1e-5  # a constant input gives a constant image
    torch.manual_seed(0)
    M = MaskGenerator(dims, SIZES[dims], [16, 8, 4], n_noise=16, n_code=8, padding=padding)
    assert _border_gap(_constant_run(M, dims)) < 1e-5
    # every padded convolution pads so, SPADE's included; the parameters are the same
    convs = [m for m in G.modules() if isinstance(m, nn.modules.conv._ConvNd) and max(m.padding)]
    assert convs and all(m.padding_mode == padding for m in convs)
    plain = _generator(dims, background_channels=0)
    assert G.state_dict().keys() == plain.state_dict().keys()


def test_reflect_padding_needs_a_coarse_grid_of_two():
    with pytest.raises(ValueError, match="replicate"):
        ImageGenerator(2, 1, (8, 8), [16, 8, 4, 2], padding="reflect")
    ImageGenerator(2, 1, (8, 8), [16, 8, 4, 2], padding="replicate")


def test_output_noise_starts_at_zero_and_learns_per_pixel_texture(dims):
    torch.manual_seed(0)
    G = _generator(dims, background_channels=0, output_noise=True)
    torch.manual_seed(0)
    plain = _generator(dims, background_channels=0)
    x = _inputs(dims)
    maps = G.noise_maps(3, generator=torch.Generator().manual_seed(1))
    out = G(x["mask"], x["code"], x["noise"], noise_maps=maps)
    assert torch.equal(out, plain(x["mask"], x["code"], x["noise"], noise_maps=maps))
    out.square().mean().backward()
    assert G.output_noise.weight.grad.abs().sum() > 0  # the genes can set its strength
    with torch.no_grad():
        G.output_noise.bias.fill_(0.5)
        shifted = G(x["mask"], x["code"], x["noise"], noise_maps=maps[:-1] + [maps[-1] + 1])
    assert not torch.equal(shifted, out)  # the finest map now reaches the output
