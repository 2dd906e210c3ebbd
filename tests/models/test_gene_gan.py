"""GeneGAN: conditioning, the user's scale, save/load, errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from radiogenomics.config import Config
from radiogenomics.data.cohort import make_cohort
from radiogenomics.models.gene_gan import GeneGAN


def _toy_cohort(n=160, n_genes=12, seed=0, nan_patient=False) -> ad.AnnData:
    """Group A expresses genes 0-5 high and group B low, on a scale of ~100 +- 10."""
    rng = np.random.default_rng(seed)
    group = np.where(np.arange(n) % 2 == 0, "A", "B")
    shift = np.where(group == "A", 2.0, -2.0)[:, None] * (np.arange(n_genes) < n_genes // 2)
    X = 100 + 10 * (rng.normal(size=(n, n_genes)) * 0.5 + shift)
    ids = [f"p{i:03d}" for i in range(n)]
    expr = pd.DataFrame(X, index=ids, columns=[f"G{j}" for j in range(n_genes)])
    if nan_patient:
        expr.iloc[3, 2] = np.nan
    obs = pd.DataFrame({"group": group, "age": rng.uniform(30, 80, n)}, index=ids)
    return make_cohort(expr, obs, categorical=["group"], numeric=["age"])


def _config(steps=300, **train) -> Config:
    cfg = Config()
    cfg.gene.n_noise, cfg.gene.n_hidden = 8, 64
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = steps, 50, 100
    cfg.train.select_after = 100
    cfg.train.lr = 1e-3
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("gene_run")
    adata = _toy_cohort()
    model = GeneGAN(adata, _config())
    model.train(run_dir=run, progress=False)
    return adata, model, run


def test_covariate_conditioning_changes_the_output(trained):
    _, model, _ = trained
    a = model.sample(400, {"group": "A"}, seed=1).adata
    b = model.sample(400, {"group": "B"}, seed=1).adata
    assert (a.obs["group"] == "A").all() and (b.obs["group"] == "B").all()
    diff = a.X[:, :6].mean(0) - b.X[:, :6].mean(0)
    # planted: +40 on the user's scale for genes 0-5; the unshifted genes stay close
    assert np.all(diff > 20), diff
    assert np.abs(a.X[:, 6:].mean(0) - b.X[:, 6:].mean(0)).max() < 10


def test_samples_come_back_on_the_users_scale(trained):
    adata, model, _ = trained
    synth = model.sample(500, seed=2).adata
    assert list(synth.var_names) == list(adata.var_names)
    assert synth.X.dtype == np.float32
    real_mean = adata.X.mean(0)
    assert np.abs(synth.X.mean(0) - real_mean).max() < 8  # real per-gene std is ~20
    assert synth.obsm["rg_gene_latent"].shape == (500, 64)
    # covariates drawn from the training patients: groups about half and half
    assert 0.35 < (synth.obs["group"] == "A").mean() < 0.65
    assert list(synth.obs["group"].cat.categories) == ["A", "B"]


def test_sampling_is_seeded_and_get_latent_matches(trained):
    _, model, _ = trained
    one, two = model.sample(50, seed=5).adata, model.sample(50, seed=5).adata
    np.testing.assert_array_equal(one.X, two.X)
    assert not np.array_equal(one.X, model.sample(50, seed=6).adata.X)
    np.testing.assert_array_equal(model.get_latent(50, seed=5), one.obsm["rg_gene_latent"])


def test_save_load_round_trip_gives_identical_samples(trained):
    adata, model, run = trained
    loaded = GeneGAN.load(run, adata)
    for cov in (None, {"group": "B", "age": 40}):
        np.testing.assert_array_equal(
            loaded.sample(64, cov, seed=9).adata.X, model.sample(64, cov, seed=9).adata.X
        )
    assert (run / "log.csv").is_file() and (run / "checkpoint").is_dir()
    assert loaded.meta["summary"]["best_step"] is not None


def test_load_refuses_other_genes_or_vocabularies(trained):
    adata, _, run = trained
    other = adata[:, :10].copy()
    with pytest.raises(ValueError, match="lacks 2 of the model's 12 genes"):
        GeneGAN.load(run, other)
    relabelled = adata.copy()
    relabelled.uns["rg"]["covariates"]["categorical"]["group"] = ["A", "B", "C"]
    with pytest.raises(ValueError, match="covariate 'group'.*differ"):
        GeneGAN.load(run, relabelled)
    with pytest.raises(FileNotFoundError, match="run folder .*nowhere does not exist"):
        GeneGAN.load(run / "nowhere")
    (run / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no trained model: model.json not found"):
        GeneGAN.load(run / "empty")


def test_bad_sampling_requests_are_clear(trained):
    _, model, _ = trained
    with pytest.raises(ValueError, match=r"covariate 'group' has no category 'C'"):
        model.sample(5, {"group": "C"})
    with pytest.raises(ValueError, match=r"unknown covariate\(s\) \['grade'\]"):
        model.sample(5, {"grade": "2"})
    with pytest.raises(ValueError, match="numeric covariate 'age' needs a number"):
        model.sample(5, {"age": "old"})
    with pytest.raises(ValueError, match="positive number"):
        model.sample(0)


def test_nan_expression_names_the_patient():
    with pytest.raises(ValueError, match=r"patient .p003. gene .G2. is nan"):
        GeneGAN(_toy_cohort(nan_patient=True), _config())


def test_config_errors_name_the_key():
    adata = _toy_cohort(n=20)
    cfg = _config()
    cfg.gene.genes = ["G0", "TP53"]
    with pytest.raises(ValueError, match=r"gene.genes.*TP53"):
        GeneGAN(adata, cfg)
    cfg = _config()
    cfg.gene.covariates = ["stage"]
    with pytest.raises(ValueError, match=r"gene.covariates.*stage"):
        GeneGAN(adata, cfg)


def test_trains_on_the_gene_half_of_a_paired_cohort(phantom_cohort):
    # the phantom fixture has image-only patients with NaN expression rows
    assert (~phantom_cohort.obs["has_expression"]).any()
    model = GeneGAN(phantom_cohort, _config(steps=5, val_fraction=0.0))
    assert model.meta["n_train"] == int(phantom_cohort.obs["has_expression"].sum())  # val 0
    model.train(progress=False)
    synth = model.sample(10, {"subtype": "B"}).adata
    assert synth.shape == (10, phantom_cohort.n_vars)
    assert np.isfinite(synth.X).all()


def test_gene_subset_and_no_covariates():
    adata = _toy_cohort(n=40)
    cfg = _config(steps=3, val_fraction=0.0)
    cfg.gene.genes, cfg.gene.covariates = ["G3", "G1"], []
    model = GeneGAN(adata, cfg)
    model.train(progress=False)
    synth = model.sample(7).adata
    assert list(synth.var_names) == ["G3", "G1"] and model.covariates == []


def test_loaded_model_continues_training_on_its_cohort(trained, tmp_path):
    import shutil

    adata, _, saved = trained
    run = tmp_path / "run"  # a copy: the module's run stays as the other tests expect it
    shutil.copytree(saved, run)
    with pytest.raises(ValueError, match=r"loaded without a cohort"):
        GeneGAN.load(run).train()
    loaded = GeneGAN.load(run, adata)
    loaded.config.train.steps = 310  # 10 more than the saved run
    summary = loaded.train(run_dir=run, progress=False)
    assert summary["steps"] == 310 and summary["resumed_from"] == 300
    # another cohort in the same run folder is refused instead of resumed
    other = GeneGAN(adata[:100].copy(), loaded.config)
    with pytest.raises(ValueError, match="another run: its '(train_patients|held_out)' differs"):
        other.train(run_dir=run, progress=False)


def test_covariate_categories_survive_save_and_load(tmp_path):
    adata = _toy_cohort(n=30)
    adata.obs["group"] = adata.obs["group"].cat.rename_categories({"A": "NA", "B": "None"})
    adata.uns["rg"]["covariates"]["categorical"]["group"] = ["NA", "None"]
    model = GeneGAN(adata, _config(steps=2, val_fraction=0.0))
    model.save(tmp_path)
    synth = GeneGAN.load(tmp_path, adata).sample(20, seed=0).adata
    assert set(synth.obs["group"].astype(str)) <= {"NA", "None"}
    assert not synth.obs["group"].isna().any()


@pytest.mark.gpu
def test_trains_and_samples_on_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = _config(steps=20)
    cfg.device = "cuda"
    model = GeneGAN(_toy_cohort(), cfg)
    model.train(progress=False)
    synth = model.sample(100, {"group": "A"}, seed=0).adata
    assert np.isfinite(synth.X).all() and synth.shape == (100, 12)


def test_log1p_counts_build_train_and_come_back_on_their_scale():
    adata = _toy_cohort(n=40)
    adata.X = np.round(np.exp(adata.X / 20)).astype(np.float32)  # count-like, positive
    cfg = _config(steps=2, val_fraction=0.0)
    cfg.gene.log1p = True
    model = GeneGAN(adata, cfg)  # fits its own scaler on log1p counts, kept in its run
    assert model.meta["scaler"]["log1p"] is True and model.scaler.log1p
    assert "gene_stats" not in adata.uns["rg"]  # and leaves the cohort as it was
    model.train(progress=False)
    assert (model.sample(20).adata.X >= 0).all()


def test_resume_takes_a_new_gene_learning_rate_but_refuses_other_networks(tmp_path):
    adata = _toy_cohort(n=40)
    GeneGAN(adata, _config(steps=100)).train(run_dir=tmp_path, progress=False)
    faster = _config(steps=110)
    faster.gene.lr = 2e-3
    summary = GeneGAN(adata, faster).train(run_dir=tmp_path, progress=False)
    assert summary["resumed_from"] == 100 and summary["steps"] == 110
    no_ema = _config(steps=120, ema_decay=0.0)
    with pytest.raises(ValueError, match=r"train\.ema_decay switched on or off"):
        GeneGAN(adata, no_ema).train(run_dir=tmp_path, progress=False)
    wider = _config(steps=120)
    wider.gene.n_hidden = 32
    with pytest.raises(ValueError, match=r"its 'gene\.n_hidden' differs \(64 there, 32 here\)"):
        GeneGAN(adata, wider).train(run_dir=tmp_path, progress=False)
