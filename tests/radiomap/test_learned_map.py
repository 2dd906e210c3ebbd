"""The learned map (radiomap.learned, tl.learned_map, pl.impact_maps, `map RUN_DIR`): the table's
shape and seeding on a tiny trained JointGAN; known answers from a hand-made generator whose
images depend on chosen genes only; autograd against finite differences; the differentiable
features against the map features; the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_JOINT
from torch import nn

from radiogenomics import pl, tl
from radiogenomics.cli import main
from radiogenomics.config import load_config
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import make_phantom, write_phantom
from radiogenomics.models.joint_gan import JointGAN
from radiogenomics.nn.image import ImageSide
from radiogenomics.radiomap import learned
from radiogenomics.radiomap.conventional import COLUMNS, map_from_uns
from radiogenomics.radiomap.features import IMAGE_FEATURES, image_feature_batch
from radiogenomics.radiomap.learned import estimators
from radiogenomics.radiomap.scoring import score_phantom_map

TINY = [*TINY_JOINT, "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    phantom = make_phantom(32, 2, size=16, n_genes=128, seed=3, progress=False)
    return read_cohort(write_phantom(phantom, tmp_path_factory.mktemp("lm"), progress=False))


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("lm_run")
    model = JointGAN(cohort, load_config(None, TINY), progress=False)
    model.train(run_dir=run, progress=False)
    return model, run


# ------------------------------------------------------------------------------------------
# a hand-made generator: code = expression; a disk whose radius follows gene 1 (`radius`);
# lesion brightness follows gene 0; every other gene is ignored


class _Encoder(nn.Module):
    n_latent = 0  # reads no gene latent

    def forward(self, expression, present, latent=None):
        return expression


class _Mask(nn.Module):
    # what the image side and `Noise.draw` read of a generator: TINY_JOINT's image.n_noise
    n_noise, use_mask, background_channels = 8, True, 0

    def __init__(self, size, radius):
        super().__init__()
        self.size, self.radius = size, radius
        self.image_size = list(size)

    def noise_maps(self, batch, *, generator=None, device=None):
        return [torch.randn(batch, 1, *self.size, generator=generator).to(device)]

    def forward(self, code, noise, maps=None):
        yy, xx = torch.meshgrid(
            *[torch.arange(s, dtype=torch.float32) for s in self.size], indexing="ij"
        )
        dist = ((yy - self.size[0] / 2 + 0.3) ** 2 + (xx - self.size[1] / 2 + 0.2) ** 2).sqrt()
        r = 4.0 + self.radius * torch.tanh(code[:, 1])
        return torch.sigmoid((r[:, None, None] - dist) / 0.3)[:, None]


class _Image(_Mask):
    def forward(self, mask, code, noise, bg=None, maps=None):
        lesion = mask[:, :1]
        bright = 0.5 + 0.3 * torch.tanh(code[:, :1, None, None])
        return -0.5 + lesion * bright + 0.02 * maps[0]


@pytest.fixture
def handmade(trained):
    """The tiny model with its image side replaced by the hand-made one."""
    model, _ = trained
    size = tuple(model.meta["image_size"])
    real = model.sampler.side

    def make(radius=0.0):
        model.sampler.side = ImageSide(_Encoder(), _Image(size, 0), _Mask(size, radius))
        return model

    make.reads_latent = real.encoder.n_latent > 0
    yield make
    model.sampler.side = real


# ------------------------------------------------------------------------------------------


def test_the_table_has_one_row_per_pair_and_a_seed_fixes_it(trained):
    model, _ = trained
    genes = list(model.genes[:3])
    kw = dict(variables=genes, n_patients=6)
    table = learned.learned_map(model, **kw)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 3 * len(IMAGE_FEATURES)
    assert not table.duplicated(["genomic", "feature"]).any()
    assert set(table["genomic"]) == set(genes) and set(table["feature"]) == set(IMAGE_FEATURES)
    assert (table["method"] == "finite-difference").all() and (table["n"] <= 6).all()
    pd.testing.assert_frame_equal(table, learned.learned_map(model, **kw))
    other = learned.learned_map(model, **kw, seed=1)
    assert not np.allclose(other["effect"], table["effect"], equal_nan=True)


def test_the_base_patients_are_the_ones_the_model_samples(trained):
    model, _ = trained
    gen, P = learned.base_patients(model, n_patients=5, seed=4)
    s = model.synthesize(model.covariates_for(5, None, 4), seed=4)
    Z, masks, images = s.expression, s.masks, s.images
    with torch.no_grad():
        m, x = gen.render(P, P.Z, 0)
    assert torch.equal(P.Z, Z) and torch.equal(m, masks) and torch.allclose(x, images, atol=1e-6)


def test_a_generator_that_reads_gene_0_only_maps_gene_0_only(handmade):
    model = handmade(radius=0.0)
    genes = list(model.genes[:4])
    table = learned.learned_map(model, variables=genes, n_patients=16)
    wide = table.pivot(index="genomic", columns="feature", values="effect").loc[genes]
    row = table.set_index(["genomic", "feature"]).loc[(genes[0], "firstorder_mean")]
    # brighter lesions with gene 0: a large standardised effect on the lesion's mean, every
    # patient the same way
    assert wide.loc[genes[0], "firstorder_mean"] > 1.0
    assert row["p"] < 1e-3 and row["p_adj"] < 0.05
    # the generator ignores genes 1-3 (radius 0): exactly 0 on every feature that varies
    # over the base patients; the mask ignores every gene, so shape features do not vary and
    # have no standardised effect (NaN)
    assert wide.loc[genes[1:]].notna().sum(axis=1).min() >= 20
    assert (wide.loc[genes[1:]].fillna(0) == 0).all().all()
    assert wide.loc[genes[0], ["shape_volume", "shape_axis_ratio"]].isna().all()
    # the swap agrees: low-gene-0 patients given high values brighten
    swap = learned.gene_swap(model, variables=genes[:3], n_patients=16)
    swap = swap.pivot(index="genomic", columns="feature", values="effect")
    assert swap.loc[genes[0], "firstorder_mean"] > 1.0
    assert (swap.loc[genes[2]].fillna(0) == 0).all()


class _Oracle(nn.Module):
    """A generator that knows the phantom's map: the programs read off the expression with the
    planted loadings, the phantom's own renderer drawing the lesion (its randomness seeded by
    the patient's noise, so the noise stays fixed)."""

    n_noise, use_mask, background_channels, n_latent = 8, True, 0, 0  # as `_Mask`, `_Encoder`

    def __init__(self, read, effects, size, part):
        super().__init__()
        self.read, self.effects, self.size, self.part = read, effects, size, part
        self.image_size = [size, size]

    def noise_maps(self, batch, *, generator=None, device=None):
        return []

    def forward(self, *args):
        from radiogenomics.data.phantom import phenotype_parameters, render_lesion

        if self.part == "code":
            return args[0] @ self.read @ self.effects  # expression -> phenotype features
        code, noise = (args[0], args[1]) if self.part == "mask" else (args[1], args[2])
        params = phenotype_parameters(code.numpy())
        out = [
            render_lesion(params.iloc[i], 2, self.size, np.random.default_rng(int(1e6 * abs(x))))
            for i, x in enumerate(noise[:, 0].tolist())
        ]
        k = 1 if self.part == "mask" else 0
        return torch.as_tensor(np.stack([o[k] for o in out])[:, None], dtype=torch.float32)


def test_a_generator_that_knows_the_phantom_s_map_recovers_it(tmp_path):
    # the estimator is not what limits a learned map: on a generator that renders the planted
    # map, 16 base patients recover it (AUROC 0.95 here; on the demo's phantom 0.93 for
    # metagenes, 0.97 for single genes at 48 patients and delta 2)
    from radiogenomics.data.view import CohortView

    phantom = make_phantom(48, 2, size=32, n_genes=128, seed=0, progress=False)
    cohort = read_cohort(write_phantom(phantom, tmp_path, progress=False))
    model = JointGAN(cohort, load_config(None, TINY), progress=False)
    truth = cohort.uns["rg"]["phantom"]
    W = np.asarray(truth["program_loadings"])
    view = CohortView(cohort, genes=model.genes, covariates=[], scaler=model.scaler)
    read = W / (W**2).sum(0)
    read = read / (view.expression[view.has_expression] @ read).std(0)  # unit-variance programs
    read, effects = (
        torch.as_tensor(a, dtype=torch.float32) for a in (read, truth["feature_effects"])
    )
    model.sampler.side = ImageSide(
        *(_Oracle(read, effects, 32, part) for part in ("code", "image", "mask"))
    )
    table, membership = learned.learned_map(
        model, cohort, genomic="metagenes", n_patients=16, return_membership=True
    )
    scores = score_phantom_map(learned.gene_level(table, membership), cohort)
    assert scores["auroc"] >= 0.9 and scores["sign_agreement"] >= 0.9, scores


def test_autograd_agrees_with_finite_differences(handmade):
    # lesion brightness follows gene 0, the disk's radius gene 1: both reach the features
    # through a smooth generator; finite differences run on the hard masks
    model = handmade(radius=1.5)
    genes = list(model.genes[:3])
    kw = dict(variables=genes, n_patients=24, seed=2)
    auto = learned.learned_map(model, method="autograd", **kw)
    fin = learned.learned_map(model, delta=0.3, **kw)
    assert (auto["method"] == "autograd").all()
    assert set(auto["feature"]) == set(learned.AUTOGRAD_FEATURES)
    a = auto.set_index(["genomic", "feature"])["effect"]
    f = fin.set_index(["genomic", "feature"])["effect"].loc[a.index]
    # the image path is smooth: within 5%; the area of a digital disk steps with its radius,
    # so its central differences average steps: within 25%
    for key, tol in [((genes[0], "firstorder_mean"), 0.05), ((genes[1], "shape_volume"), 0.25)]:
        assert abs(a[key]) > 0.5
        assert abs(a[key] - f[key]) <= tol * abs(f[key]), (key, a[key], f[key])
    # a gene the generator ignores has a zero derivative
    assert (auto.loc[auto["genomic"] == genes[2], "effect"].fillna(0) == 0).all()


class _LatentEncoder(nn.Module):
    """Code as `_Encoder`'s, but its first entry (lesion brightness) is the gene latent's."""

    n_latent = 1  # reads the gene latent

    def forward(self, expression, present, latent=None):
        return torch.cat([latent[:, :1], expression[:, 1:]], dim=1)


def test_the_generator_route_moves_the_noise_one_unit_of_the_variable(handmade):
    model = handmade(radius=0.0)
    genes = list(model.genes[:3])
    S = learned.prepare(model, variables=genes, n_patients=16, route="generator", seed=1)
    for i in range(3):
        Z_down, lat_down, Z_up, lat_up, change = S.moved(i, 0.005)
        # the gene moves by 2 delta to first order (the tiny model's gene generator bends
        # within a step for a few patients); the genes it co-expresses and its latent move too
        assert (change > 0).all()
        assert np.median(change.numpy()) == pytest.approx(0.01, rel=0.05)
        others = torch.cat([Z_up[:, :i] - Z_down[:, :i], Z_up[:, i + 1 :] - Z_down[:, i + 1 :]], 1)
        assert others.abs().max() > 1e-3 and (lat_up - lat_down).abs().max() > 1e-4
    # brightness follows gene 0 alone: per unit of gene 0, both routes see the same change
    kw = dict(variables=genes[:1], n_patients=16, seed=1, delta=0.1)
    direct = learned.learned_map(model, **kw).set_index("feature")["effect"]
    table = learned.learned_map(model, route="generator", **kw)
    via = table.set_index("feature")["effect"]
    assert (table["method"] == "finite-difference, generator route").all()
    assert via["firstorder_mean"] == pytest.approx(direct["firstorder_mean"], rel=0.1)
    # and autograd through the gene generator agrees with its finite differences
    auto = learned.learned_map(model, route="generator", method="autograd", **kw)
    auto = auto.set_index("feature")["effect"]
    assert auto["firstorder_mean"] == pytest.approx(via["firstorder_mean"], rel=0.05)


def test_only_the_generator_route_sees_what_the_image_side_reads_from_the_latent(handmade):
    assert handmade.reads_latent  # the joint model's encoder reads the gene latent
    model = handmade(radius=0.0)
    model.sampler.side.encoder = _LatentEncoder()  # brightness follows the latent's unit 0
    genes = list(model.genes[:8])
    kw = dict(variables=genes, n_patients=16, seed=1, delta=0.1)
    direct = learned.learned_map(model, **kw)
    via = learned.learned_map(model, route="generator", **kw)
    bright = lambda t: t.loc[t["feature"] == "firstorder_mean", "effect"]  # noqa: E731
    assert (bright(direct).fillna(0) == 0).all()  # the latent held fixed: nothing moves
    assert bright(via).abs().max() > 0.1


def test_the_generator_route_needs_the_model_s_own_patients(trained, cohort):
    model, _ = trained
    with pytest.raises(ValueError, match="route 'generator' moves a JointGAN's own patients"):
        learned.prepare(model, cohort, n_patients=4, route="generator")
    with pytest.raises(ValueError, match="route must be one of"):
        learned.prepare(model, n_patients=4, route="noise")
    S = learned.prepare(model, n_patients=4, variables=list(model.genes[:2]), route="generator")
    with pytest.raises(ValueError, match="prepared for 'generator'"):
        learned.learned_map(model, prepared=S, route="direct")


def test_the_generator_route_moves_a_metagene_by_its_mean_z_score(trained):
    model, _ = trained
    S = learned.prepare(model, genomic="metagenes", n_patients=12, route="generator", seed=2)
    for i in range(len(S.names)):
        change = S.moved(i, 0.002)[4]
        assert np.median(change.numpy()) == pytest.approx(0.004, rel=0.05), S.names[i]


def test_a_gene_the_model_does_not_vary_has_no_effect_not_an_infinite_one(trained):
    """A gene the gene generator outputs as a constant: no step moves it, so its effects (and
    its impact map) are NaN, never inf; the other genes are unaffected."""
    model, _ = trained
    out = model.sampler.gene.out
    genes = list(model.genes[:2])
    saved = out.weight[0].detach().clone()
    try:
        with torch.no_grad():
            out.weight[0] = 0.0
        kw = dict(variables=genes, n_patients=8, route="generator")
        for method in ("finite", "autograd"):
            table = learned.learned_map(model, method=method, **kw)
            assert not np.isinf(table["effect"]).any()
            assert table.loc[table["genomic"] == genes[0], "effect"].isna().all()
            assert table.loc[table["genomic"] == genes[1], "effect"].notna().any()
        maps, _ = learned.impact_maps(model, **kw)
        assert np.isnan(maps[0]).all() and np.isfinite(maps[1]).all()
    finally:
        with torch.no_grad():
            out.weight[0] = saved


def test_the_differentiable_features_equal_the_map_features(phantom):
    images = torch.as_tensor(phantom.images[:12], dtype=torch.float32)
    masks = torch.as_tensor(phantom.masks[:12], dtype=torch.float32)
    soft = learned.soft_features(images, masks)
    ref = image_feature_batch(images.numpy(), masks.numpy())
    for name in learned.AUTOGRAD_FEATURES:
        np.testing.assert_allclose(soft[name].numpy(), ref[name], rtol=1e-4, atol=1e-4)


def test_impact_maps_and_their_plot(handmade, tmp_path):
    model = handmade(radius=0.0)
    genes = list(model.genes[:3])
    maps, names = learned.impact_maps(model, variables=genes, n_patients=4, n_draws=2)
    assert maps.shape == (3, *model.meta["image_size"]) and names == genes
    assert maps[0].max() > 0.1  # gene 0 brightens the lesion
    assert (maps[1:] == 0).all()  # genes the generator ignores change nothing
    fig = pl.impact_maps(maps, names, save=tmp_path / "impact.png")
    assert (tmp_path / "impact.png").stat().st_size > 1000
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3 + 1  # panels and colour bar


@pytest.mark.parametrize("train_masks", [True, False], ids=["mask_generator", "cohort_masks"])
def test_an_image_gan_maps_a_cohort_s_expression(cohort, train_masks):
    from radiogenomics.models.image_gan import ImageGAN

    cfg = load_config(
        None,
        ["model=image_gan", "data.spatial_dims=2", "image.channels=[8,4]",
         "image.critic_channels=[4,8]", "image.n_noise=4", "image.n_code=4",
         "image.n_hidden=16", "image.n_layers=1", "train.steps=1", "train.batch_size=4",
         f"image.train_masks={str(train_masks).lower()}"],
    )  # fmt: skip
    model = ImageGAN(cohort, cfg, progress=False)
    model.train(progress=False)
    genes = list(model.genes[:2])
    table = learned.learned_map(model, cohort, variables=genes, n_patients=5)
    assert len(table) == 2 * len(IMAGE_FEATURES) and (table["n"] <= 5).all()
    _, P = learned.base_patients(model, cohort, n_patients=5)
    assert (P.masks is None) == train_masks  # without a mask generator: the cohort's masks
    with pytest.raises(ValueError, match="pass a cohort"):
        learned.learned_map(model, variables=genes)


def test_tl_learned_map_writes_uns(trained, cohort):
    model, _ = trained
    adata = cohort.copy()
    tl.learned_map(adata, model, genomic="metagenes", n_patients=8, method="autograd")
    table = map_from_uns(adata.uns["rg_learned_map"])
    assert (table["method"] == "autograd").all()
    assert set(table["genomic"]) <= set(adata.var["rg_learned_map_metagene"])


def test_cli_writes_the_learned_map_of_a_run(trained, cohort, tmp_path, capsys):
    _, run = trained
    data = next(Path(cohort.uns["rg"]["root"]).glob("*.h5ad"))
    out = tmp_path / "map"
    argv = ["-q", "map", str(run), "--out", str(out), "--n-patients", "8", "--data", str(data)]
    assert main(argv) == 0
    table = pd.read_csv(out / "map.csv")
    assert list(table.columns) == ["genomic", "feature", "effect", "p", "p_adj"]
    n_vars = pd.read_csv(out / "metagenes.csv", index_col=0)["rg_metagene"].nunique()
    assert len(table) == n_vars * len(IMAGE_FEATURES)
    swap = pd.read_csv(out / "gene_swap.csv")
    assert list(swap.columns) == ["genomic", "feature", "effect", "p", "p_adj", "n"]
    for name in ("map_heatmap.png", "impact_maps.png"):
        assert (out / name).stat().st_size > 1000
    scores = json.loads((out / "map_scores.json").read_text())  # --data is a phantom
    assert 0 <= scores["auroc"] <= 1 and scores["n_pairs"] == 128 * 6
    printed = capsys.readouterr().out
    assert "map.csv" in printed and "impact_maps.png" in printed


def test_cli_generator_route_writes_every_output(trained, tmp_path):
    _, run = trained
    out = tmp_path / "g"
    argv = ["-q", "map", str(run), "--out", str(out), "--route", "generator", "--genomic", "genes"]
    assert main([*argv, "--n-patients", "5"]) == 0
    table = pd.read_csv(out / "map.csv")
    assert len(table) == 128 * len(IMAGE_FEATURES) and np.isfinite(table["effect"]).any()
    assert len(pd.read_csv(out / "gene_swap.csv")) == 128 * len(IMAGE_FEATURES)
    assert (out / "impact_maps.png").stat().st_size > 1000


def test_cli_autograd_map_of_the_run_s_own_patients(trained, tmp_path):
    _, run = trained
    out = tmp_path / "a"
    argv = ["-q", "map", str(run), "--out", str(out), "--estimator", "autograd"]
    assert main([*argv, "--genomic", "genes", "--n-patients", "5"]) == 0
    table = pd.read_csv(out / "map.csv")
    assert list(table.columns) == ["genomic", "feature", "effect", "p", "p_adj"]
    assert len(table) == 128 * len(learned.AUTOGRAD_FEATURES)
    assert not (out / "map_scores.json").exists()  # no phantom given to score against


def test_cli_refuses_an_image_run_without_data_and_a_folder_without_a_run(tmp_path, capsys):
    run = tmp_path / "image_run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"model": "image_gan"}))
    assert main(["map", str(run), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "image run" in err and "--data" in err
    (tmp_path / "empty").mkdir()
    assert main(["map", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    # the conventional map's options, given for a run folder, are a mistake, named
    argv = ["map", str(run), "--out", str(tmp_path / "o"), "--categorical-test", "fisher"]
    assert main(argv) == 2
    assert "conventional-map options given for a run folder: --categorical-test" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


def test_effect_and_p_speak_of_the_same_mean():
    """A few patients with a large positive change and a majority with a small negative one:
    the mean (the effect) is positive but not significant; a signed-rank test would call it
    significant (p 0.04) on the strength of the negative majority."""
    per = np.array([8.0] * 5 + [-1.0] * 25)[:, None]
    row = estimators._rows("g", ["f"], per, np.array([1.0]), "finite-difference").iloc[0]
    assert row["effect"] == pytest.approx(0.5)
    assert row["p"] > 0.3  # t = 0.81 on 29 df: p = 0.43
    same = estimators._rows("g", ["f"], per + 1.0, np.array([1.0]), "finite-difference").iloc[0]
    assert same["effect"] > 0 and same["p"] < 0.05


def _table(effects, ps, n=10, genomic=("g1", "g2"), feature="f"):
    return pd.DataFrame(
        {"genomic": list(genomic), "feature": feature, "effect": effects, "p": ps,
         "p_adj": np.nan, "method": "finite-difference", "n": n}
    )  # fmt: skip


def test_combine_maps_averages_effects_and_combines_tests_by_sign():
    from scipy.stats import norm

    a = _table([0.4, 0.4], [0.01, 0.01])
    b = _table([0.2, -0.2], [0.01, 0.01], n=12)
    out = learned.combine_maps([a, b])
    assert list(out.columns) == list(COLUMNS)
    assert out["effect"].tolist() == pytest.approx([0.3, 0.1])
    assert out["n"].tolist() == [22, 22]
    # agreeing signs: Stouffer's Z of two z = 2.576 is 3.64; opposite signs cancel to 0
    z = norm.isf(0.005)
    assert out["p"].iloc[0] == pytest.approx(2 * norm.sf(2 * z / np.sqrt(2)), rel=1e-6)
    assert out["p"].iloc[1] == pytest.approx(1.0)
    assert out["method"].iloc[0] == "finite-difference, mean of 2 runs"
    assert np.all(out["p_adj"] >= out["p"])
    # a run with no effect for a pair leaves it to the others; no run: NaN
    c = _table([np.nan, np.nan], [np.nan, np.nan])
    one = learned.combine_maps([a, c])
    assert one["effect"].tolist() == pytest.approx([0.4, 0.4])
    assert one["p"].tolist() == pytest.approx([0.01, 0.01])
    assert learned.combine_maps([c, c])[["effect", "p"]].isna().all().all()


def test_combine_maps_is_symmetric_in_the_sign_down_to_tiny_p():
    """Flipping every effect's sign leaves the combined p unchanged, even where the runs' p
    values are below 1e-16 (where 1 - p/2 rounds to 1)."""
    a = _table([0.5, -0.5], [1e-30, 1e-20])
    b = _table([-0.2, -0.2], [1e-9, 1e-20])
    out = learned.combine_maps([a, b])
    flipped = learned.combine_maps([a.assign(effect=-a["effect"]), b.assign(effect=-b["effect"])])
    np.testing.assert_allclose(out["p"], flipped["p"], rtol=1e-9)
    assert 0 < out["p"].iloc[1] < 1e-30  # two runs at 1e-20, agreeing: stronger still
    assert 1e-5 < out["p"].iloc[0] < 1e-3  # z 11.5 against -6.1: the stronger run wins


def test_combine_maps_refuses_maps_of_other_pairs():
    a, b = _table([0.1, 0.2], [0.5, 0.5]), _table([0.1, 0.2], [0.5, 0.5], genomic=("g1", "g3"))
    with pytest.raises(ValueError, match=r"map 2 does not hold map 1's.*g3.*g2"):
        learned.combine_maps([a, b])
    with pytest.raises(ValueError, match="no maps"):
        learned.combine_maps([])


def test_cli_averages_the_maps_of_several_runs(trained, cohort, tmp_path, capsys):
    _, run = trained
    data = next(Path(cohort.uns["rg"]["root"]).glob("*.h5ad"))

    def argv(runs, out, genomic="genes"):
        return ["-q", "map", *map(str, runs), "--out", str(tmp_path / out), "--genomic",
                genomic, "--n-patients", "5", "--data", str(data)]  # fmt: skip

    assert main(argv([run], "one")) == 0
    # a copy of the run: the same base patients and noise, so the same effects, each row's
    # test counted twice (a stronger p), and each run's map in map_runs.csv
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(argv([run, copy], "two")) == 0
    one, two = (pd.read_csv(tmp_path / d / "map.csv") for d in ("one", "two"))
    assert list(two.columns) == ["genomic", "feature", "effect", "p", "p_adj"]
    np.testing.assert_allclose(two["effect"], one["effect"], rtol=1e-9)
    ok = one["p"].between(1e-12, 0.5)
    assert ok.any() and (two["p"][ok] < one["p"][ok]).all()
    runs = pd.read_csv(tmp_path / "two" / "map_runs.csv")
    assert len(runs) == 2 * len(one) and runs["run"].nunique() == 2
    assert json.loads((tmp_path / "two" / "map_scores.json").read_text())["n_pairs"] == 128 * 6
    for name in ("map_heatmap.png", "impact_maps.png", "gene_swap.csv"):
        assert (tmp_path / "two" / name).stat().st_size > 100
    capsys.readouterr()
    # metagenes differ between runs; a cohort among runs; two cohorts for a conventional map
    assert main(argv([run, copy], "x", genomic="metagenes")) == 2
    assert "maps genes only" in capsys.readouterr().err
    assert main(argv([run, run], "x")) == 2  # one run twice is no second fit
    assert "is given twice" in capsys.readouterr().err
    assert main(["map", str(run), str(data), "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["map", str(data), str(data), "--out", str(tmp_path / "x")]) == 2
    assert "a conventional map reads one cohort; got 2 paths" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
