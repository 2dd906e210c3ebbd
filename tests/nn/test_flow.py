"""The flow backend's networks and loss (nn.flow, train.flow_objectives): the loss against a hand
computation, the ODE as Euler steps of MONAI's convention, seeded and chunked sampling,
classifier-free guidance and the "no genes" code, gene dropout, the noise's draw order, and
the config keys of each backend."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radiogenomics.config import load_config
from radiogenomics.models.image_training import images_for, masks_for
from radiogenomics.nn.flow import TIMESTEPS, FlowImage, FlowSide, velocity_loss
from radiogenomics.nn.image import GeneEncoder, MaskGenerator, mask_features
from radiogenomics.nn.noise import Noise
from radiogenomics.train.flow_objectives import flow_loss
from radiogenomics.train.objectives import ImageBatch

SIZE = (16, 16)


def _side(guidance: float = 2.0, steps: int = 3, masks: bool = True) -> FlowSide:
    """A tiny flow side whose velocity and gene dependence are not zero (MONAI
    zero-initialises the U-Net's output convolution and its attention's output projections)
    and whose "no genes" code differs from any patient's."""
    torch.manual_seed(0)
    side = FlowSide(
        GeneEncoder(5, 8, n_hidden=16, n_layers=1),
        FlowImage(2, 1, SIZE, (8, 8), n_code=8),
        MaskGenerator(2, SIZE, (8, 4), n_noise=4, n_code=8) if masks else None,
        steps=steps,
        guidance=guidance,
    )
    with torch.no_grad():
        for p in side.image.parameters():
            if not p.any():
                p.normal_(0, 0.3)
        side.encoder.missing.normal_(0, 1.0)
    return side.eval()


def _disk_masks(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    radii = torch.linspace(3, 6, n).view(n, 1, 1)
    return (((yy - 8) ** 2 + (xx - 8) ** 2) < radii**2).float()[:, None]


def _inputs(n: int = 5):
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(n, 5, generator=g)
    present = torch.ones(n, dtype=torch.bool)
    return Z, present, _disk_masks(n)


def test_loss_is_the_mse_to_the_velocity_of_the_straight_path():
    side = _side()
    Z, present, masks = _inputs(4)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 1, *SIZE, generator=g) * 2 - 1
    noise = torch.randn(4, 1, *SIZE, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    code, cond = side.code(Z, present), mask_features(masks)
    # by hand: x_t = (1 - t/T) x0 + (t/T) noise; target x0 - noise
    s = (t.float() / TIMESTEPS).view(-1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    want = (side.image(x_t, t, cond, code) - (x0 - noise)).square().mean()
    got = velocity_loss(side, x0, cond, code, noise, t)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert got > 0.1  # the test's velocity is no stand-in zero
    # the scheduler's path ends: the image at t = 0, the noise at t = T
    sched = side.scheduler
    torch.testing.assert_close(sched.add_noise(x0, noise, torch.zeros(4)), x0)
    torch.testing.assert_close(sched.add_noise(x0, noise, torch.full((4,), TIMESTEPS)), noise)


def test_sampling_is_euler_steps_from_the_starting_noise():
    side = _side(guidance=1.0, steps=2)
    Z, present, masks = _inputs(3)
    noise = Noise.draw(side, 3, torch.Generator().manual_seed(0), mask=None)
    code, cond = side.code(Z, present), mask_features(masks)
    with torch.no_grad():
        x = noise.start
        x = x + side.image(x, torch.full((3,), 1000), cond, code) * 0.5  # t 1000 -> 500
        x = x + side.image(x, torch.full((3,), 500), cond, code) * 0.5  # t 500 -> 0
        got = side(code, noise, masks).images
    torch.testing.assert_close(got, x.clamp(-1, 1), rtol=1e-5, atol=1e-6)


def test_seeded_sampling_repeats_and_chunks_equal_one_batch():
    side = _side()
    Z, present, masks = _inputs(5)
    cpu = torch.device("cpu")
    one = images_for(side, Z, present, masks, margin=0, device=cpu, seed=3, batch_size=64)
    assert one.shape == (5, 1, *SIZE) and one.min() >= -1 and one.max() <= 1
    again = images_for(side, Z, present, masks, margin=0, device=cpu, seed=3, batch_size=64)
    assert torch.equal(one, again)
    chunked = images_for(side, Z, present, masks, margin=0, device=cpu, seed=3, batch_size=2)
    torch.testing.assert_close(chunked, one, rtol=1e-5, atol=1e-5)
    other = images_for(side, Z, present, masks, margin=0, device=cpu, seed=4, batch_size=64)
    assert (other - one).abs().max() > 0.05
    # the mask generator draws masks of its own for the flow side too
    drawn = masks_for(side, Z, present, device=cpu, seed=3)
    assert drawn.shape == (5, 1, *SIZE) and set(drawn.unique().tolist()) <= {0.0, 1.0}


def test_noise_draw_order_of_a_flow_side():
    """Gene noise, the starting image, the mask generator's own vector (no image vector to
    share), its maps: one stream in that order."""
    side = _side()
    noise = Noise.draw(side, 3, torch.Generator().manual_seed(5), n_gene=4)
    g = torch.Generator().manual_seed(5)
    gene = torch.randn(3, 4, generator=g)
    start = torch.randn(3, 1, *SIZE, generator=g)
    vector = torch.randn(3, 4, generator=g)
    maps = side.mask.noise_maps(3, generator=g)
    assert torch.equal(noise.gene, gene) and torch.equal(noise.start, start)
    assert torch.equal(noise.mask_vector, vector) and noise.image is None
    assert all(torch.equal(a, b) for a, b in zip(noise.mask_maps, maps, strict=True))
    assert len(noise) == 3 and noise.rows(slice(1, 2)).start.shape == (1, 1, *SIZE)


def test_guidance_scales_between_the_unconditional_and_conditional_velocity():
    side = _side()
    Z, present, masks = _inputs(4)
    x = torch.randn(4, 1, *SIZE, generator=torch.Generator().manual_seed(6))
    t, cond = torch.full((4,), 400), mask_features(masks)
    code = side.code(Z, present)
    empty = side.encoder.missing.expand(4, -1)
    with torch.no_grad():
        v = side.image(x, t, cond, code)
        v0 = side.image(x, t, cond, empty)
        assert (v - v0).abs().max() > 1e-3  # the genes move the velocity
        torch.testing.assert_close(side.velocity(x, t, cond, code, 1.0), v)
        torch.testing.assert_close(side.velocity(x, t, cond, code, 0.0), v0)
        torch.testing.assert_close(
            side.velocity(x, t, cond, code, 3.0), v0 + 3 * (v - v0), rtol=1e-5, atol=1e-5
        )
        # image-only patients take the "no genes" code, so guidance leaves them unchanged
        none = side.code(Z, torch.zeros(4, dtype=torch.bool))
        assert torch.equal(none, empty)
        torch.testing.assert_close(side.velocity(x, t, cond, none, 3.0), v0, rtol=1e-5, atol=1e-5)


def _batch(side, n: int = 4) -> ImageBatch:
    Z, present, masks = _inputs(n)
    g = torch.Generator().manual_seed(8)
    images = torch.rand(n, 1, *SIZE, generator=g) * 2 - 1
    zeros = torch.zeros(n, dtype=torch.long)
    return ImageBatch(
        images=images, masks=mask_features(masks), expression=Z, present=present,
        noise=Noise.draw(side, n, g), perm=zeros, distinct=zeros.bool(),
        targets=torch.zeros(n, 2), present_cpu=present,
    )  # fmt: skip


def test_gene_dropout_gives_patients_the_no_genes_code():
    side = _side()
    b = _batch(side)
    img = load_config(None, ["image.backend=flow", "image.gene_aux_weight=0"]).image

    def loss(batch, dropout):
        torch.manual_seed(0)  # the timesteps come from the global RNG
        cfg = dataclasses.replace(img, flow_gene_dropout=dropout)
        return flow_loss(side, batch, cfg, rng=torch.Generator().manual_seed(1))[0]

    none = dataclasses.replace(b, present=torch.zeros(4, dtype=torch.bool))
    assert torch.equal(loss(b, 0.999999), loss(none, 0.0))  # every patient dropped
    assert not torch.equal(loss(b, 0.0), loss(none, 0.0))
    # the loss is the velocity loss at the scheduler's timesteps
    torch.manual_seed(0)
    t = side.scheduler.sample_timesteps(b.images)
    code = side.code(b.expression, b.present)
    want = velocity_loss(side, b.images, b.masks, code, b.noise.start, t)
    assert torch.equal(loss(b, 0.0), want)


def test_flow_keys_belong_to_their_backend():
    with pytest.raises(ValueError, match=r"image.flow_steps.*image.backend=flow"):
        load_config(None, ["image.flow_steps=10"])
    with pytest.raises(ValueError, match=r"image.gene_aux_weight.*flow backend"):
        load_config(None, ["image.backend=flow"])  # the GAN's read-back is on by default
    for key in ("mask_consistency_weight=1", "appearance_association_weight=1",
                "use_background=true", "critic_mask_depth=true"):  # fmt: skip
        name = key.split("=")[0]
        with pytest.raises(ValueError, match=f"image.{name}"):
            load_config(None, ["image.backend=flow", "image.gene_aux_weight=0", f"image.{key}"])
    for bad in ("flow_steps=0", "flow_guidance=-1", "flow_gene_dropout=1", "flow_channels=[]"):
        with pytest.raises(ValueError, match=f"image.{bad.split('=')[0]}"):
            load_config(None, ["image.backend=flow", "image.gene_aux_weight=0", f"image.{bad}"])
    cfg = load_config("configs/joint_phantom_2d_flow.yaml")
    assert cfg.image.backend == "flow" and load_config(None).image.backend == "gan"


def test_a_flow_side_needs_its_starting_noise_and_fuses_no_background():
    side = _side()
    Z, present, masks = _inputs(2)
    code = side.code(Z, present)
    with pytest.raises(ValueError, match="starting image"):
        side(code, Noise(), masks)
    noise = Noise.draw(side, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no background"):
        side(code, noise, masks, torch.zeros(2, 1, *SIZE))
    with pytest.raises(ValueError, match="flow_channels"):
        FlowImage(2, 1, (10, 10), (8, 8, 8))


def test_the_code_embedding_reaches_the_time_embedding():
    """image.flow_code_embedding: the gene code enters the U-Net's time embedding through a
    linear map (read by every residual block), beside the cross-attention token."""
    from radiogenomics.nn.flow import FlowImage

    torch.manual_seed(0)
    plain = FlowImage(2, 1, (8, 8), (8, 8), n_code=4)
    net = FlowImage(2, 1, (8, 8), (8, 8), n_code=4, code_embedding=True)
    assert getattr(plain.unet, "class_embedding", None) is None
    linear = net.unet.class_embedding
    assert isinstance(linear, torch.nn.Linear) and linear.in_features == 4
    with torch.no_grad():  # MONAI zero-initialises the output convolution: wake it
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    masks, code = torch.ones(2, 1, 8, 8), torch.randn(2, 4)
    before = net(x, t, masks, code)
    with torch.no_grad():
        linear.weight.add_(1.0)  # the embedding path alone changes
    after = net(x, t, masks, code)
    assert not torch.allclose(before, after)
    after.square().mean().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
