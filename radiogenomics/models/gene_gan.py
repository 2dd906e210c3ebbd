"""GeneGAN: the covariate-conditioned gene WGAN-GP (gGAN-style) on a cohort AnnData.

    model = GeneGAN(adata, config)       # genes, covariates and scaling from the cohort
    model.train(run_dir="run")           # resumable; keeps the weights best on held-out realism
    synth = model.sample(500, {"subtype": "Classical"})   # SyntheticCohort: .adata, user's scale
    model.save("run"); GeneGAN.load("run", adata)

Patients without expression (`has_expression` False) are left out, so the gene half of a paired
cohort with unpaired patients trains as it is.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from radiogenomics import _keys as K
from radiogenomics._device import to_device
from radiogenomics.config import Config
from radiogenomics.data.h5ad import SyntheticCohort
from radiogenomics.data.view import CohortView
from radiogenomics.models.base import CohortModel
from radiogenomics.models.covariates import CovariateSampler
from radiogenomics.models.data import GeneData
from radiogenomics.nn.gene import GeneCritic, GeneGenerator
from radiogenomics.train import distributed as D
from radiogenomics.train.loop import train_gan
from radiogenomics.train.objectives import GeneBatch, gene_critic_loss, gene_generator_loss

log = logging.getLogger(__name__)


class GeneGAN(CovariateSampler, CohortModel, kind="gene_gan"):
    """Covariate-conditioned WGAN-GP over a cohort's expression (see the module docstring)."""

    draws_expression = True
    FORMAT = 2  # 2: the critic's minibatch-std input (gene.minibatch_std); 1 cannot be read

    def __init__(self, adata: ad.AnnData, config: Config | None = None, *, progress: bool = True):
        """`progress` is there for the models' common signature: a GeneGAN loads no images."""
        cfg = self._config(config)
        if adata.n_vars == 0:
            raise ValueError(
                "the cohort has no genes (an image-only cohort cannot train a GeneGAN)"
            )
        view = CohortView(
            adata, genes=cfg.gene.genes, covariates=cfg.gene.covariates, log1p=cfg.gene.log1p
        )
        if not view.has_expression.any():
            raise ValueError(
                "no patient of the cohort has expression (has_expression is all False)"
            )
        meta = {
            "genes": view.genes,
            "categorical": view.categorical,
            "numeric": view.numeric,
            "scaler": None,  # the cohort's, set by _view
            "summary": {},
        }
        self._setup(cfg, meta)
        self._set_data(adata)
        if cfg.gene.start == "gaussian":
            fit_gaussian_start(self.gene_data, self.generator, self.sampler, scale=self.scaler.std)

    def _set_data(self, adata: ad.AnnData) -> None:
        """The training data (`gene_data`): this model's genes and covariates of `adata`'s
        patients with expression, scaled and encoded, and the held-out split; the
        fingerprint a resumed run must match."""
        view = self._view(adata, covariates=self.covariates)
        rows = np.flatnonzero(view.has_expression)
        train, held_out = self._split(view, rows)
        self._covariate_table = adata.obs.iloc[rows][self.covariates].copy()
        codes = np.zeros((view.n, len(self.categorical)), np.int64)
        numeric = np.zeros((view.n, len(self.numeric)), np.float32)
        codes[rows], numeric[rows] = view.covariates(rows)
        self.gene_data = GeneData(view.expression, codes, numeric, rows, train, held_out)
        self.meta["n_train"] = len(train)
        self._fingerprint = self._fingerprint_of(
            view,
            train,
            held_out,
            categorical=self.categorical,
            numeric=sorted(self.numeric),
            gene=self.config.gene,
        )

    @property
    def n_patients(self) -> int:
        """The number of the cohort's patients with expression (0 without a cohort)."""
        data = getattr(self, "gene_data", None)
        return 0 if data is None else len(data.rows)

    # ---------------------------------------------------------------------------------------
    def _build(self, cfg: Config, meta: dict) -> None:
        self.categorical: dict[str, list[str]] = meta["categorical"]
        self.numeric: dict[str, dict] = meta["numeric"]
        self.generator, self.critic = self._make_networks(
            cfg, len(self.genes), self.categorical, self.numeric
        )
        # what `sample` runs: the selected weights of the EMA generator, once trained
        self.sampler = copy.deepcopy(self.generator).eval()

    @staticmethod
    def _make_networks(cfg: Config, n_genes: int, categorical: dict, numeric: dict):
        """The gene generator and critic for `n_genes` genes and these covariates."""
        vocab, g = [len(v) for v in categorical.values()], cfg.gene
        generator = GeneGenerator(
            n_genes,
            vocab,
            len(numeric),
            n_noise=g.n_noise,
            n_hidden=g.n_hidden,
            n_layers=g.n_layers,
            start=g.start,
        )
        critic = GeneCritic(
            n_genes, vocab, len(numeric),
            n_hidden=g.n_hidden, n_layers=g.n_layers, minibatch_std=g.minibatch_std,
            projection_std=g.projection_std,
        )  # fmt: skip
        return generator, critic

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "critic": self.critic, "sampler": self.sampler}

    def _loaded(self) -> None:
        self.sampler.eval()

    # ---------------------------------------------------------------------------------------
    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        if not hasattr(self, "gene_data"):
            raise ValueError("this GeneGAN was loaded without a cohort; GeneGAN.load(dir, adata)")
        cfg, device, data = self.config, self.device, self.gene_data
        if len(data.rows) < 4:
            raise ValueError(
                f"the cohort has {len(data.rows)} patients with expression; training needs >= 4"
            )
        if len(data.held_out) == 0:
            log.warning("no held-out patients (train.val_fraction=0): keeping the last weights")
        G, C = self.generator.to(device), self.critic.to(device)
        draw = gene_batches(data, cfg, device, G.noise_features)

        def critic_step(rng):
            return gene_critic_loss(G, C, draw(rng), gp_weight=cfg.train.gp_weight, rng=rng)

        def generator_step(rng):
            loss, logs, _ = gene_generator_loss(
                G, C, draw(rng), dispersion_weight=cfg.gene.dispersion_weight
            )
            return loss, logs

        scored = len(data.held_out) >= 2  # gene-gene correlations need two patients
        summary, weights = train_gan(
            G, C, critic_step, generator_step, cfg.train,
            lr=cfg.gene.lr,
            score=gene_realism_score(data, cfg, device) if scored else None,
            device=device, seed=cfg.seed, run_dir=run_dir, progress=progress,
            fingerprint=self._fingerprint,
        )  # fmt: skip
        self.sampler.load_state_dict(weights)
        if cfg.gene.start == "gaussian" and summary.get("best_step") == 0:
            # selection kept the start (train.select_start): the held-out patients chose it
            # and have nothing else to teach it, so the Gaussian is fitted on all the model's
            # patients, as evaluate's multivariate Gaussian baseline is
            rows = np.r_[data.train, data.held_out]
            fit_gaussian_start(data, self.sampler, scale=self.scaler.std, rows=rows)
            summary = {**summary, "refit_on_all": True}  # best_score was the training fit's
        self.sampler.to(device).eval()
        self.trained = True
        self.meta["summary"] = {**summary, "n_val": len(data.held_out)}
        if run_dir is not None and D.is_main():
            self.save(run_dir)
        return summary

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, obs: pd.DataFrame, seed: int, batch_size: int = 4096):
        codes, numeric = self.encode_covariates(obs)
        rng = torch.Generator().manual_seed(seed)
        Z, H = [], []
        for start in range(0, len(obs), batch_size):
            c = torch.as_tensor(codes[start : start + batch_size]).to(self.device)
            u = torch.as_tensor(numeric[start : start + batch_size]).to(self.device)
            noise = torch.randn(len(c), self.sampler.noise_features, generator=rng)
            noise = noise.to(self.device)
            z, h = self.sampler.to(self.device)(noise, c, u)
            Z.append(z.float().cpu().numpy())
            H.append(h.float().cpu().numpy())
        return np.concatenate(Z), np.concatenate(H)

    def sample(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, *, seed: int = 0
    ) -> SyntheticCohort:
        """`n` synthetic patients' expression.

        Parameters
        ----------
        n : int
            Number of patients (None with a covariate DataFrame: one per row).
        covariates : dict or DataFrame, optional
            Categorical values to fix (the other covariates drawn from the training patients'
            joint distribution), or every patient's covariates (`covariates_for`).
        seed : int
            Seeds the covariate draw and the generator's noise.

        Returns
        -------
        SyntheticCohort
            `adata`: expression on the cohort's scale in `X`, covariates in `obs`, the gene
            latent (the generator's hidden layer) in `obsm['rg_gene_latent']`; no images.

        Examples
        --------
        >>> synth = model.sample(500, {"subtype": "Classical"}, seed=0)  # doctest: +SKIP
        >>> synth.adata.shape  # doctest: +SKIP
        (500, 50)
        """
        if not self.trained:
            log.warning("sampling from an untrained GeneGAN")
        obs = self.covariates_for(n, covariates, seed)
        Z, H = self._generate(obs, seed)
        obs[K.HAS_EXPRESSION] = True
        adata = ad.AnnData(
            X=self.scaler.inverse_transform(Z).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=pd.Index(self.genes, dtype=str)),
        )
        adata.obsm[K.GENE_LATENT] = H.astype(np.float32)
        adata.uns[K.UNS] = {
            K.COVARIATES: {K.CATEGORICAL: self.categorical, K.NUMERIC: self.numeric},
            K.SPATIAL_DIMS: self.config.data.spatial_dims,
            K.PROVENANCE: {"library": "radiogenomics", "source": "GeneGAN"},
            K.SYNTHETIC: {"model": "GeneGAN", "seed": int(seed)},
        }
        return SyntheticCohort(adata, None, None)

    def get_latent(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, *, seed: int = 0
    ) -> np.ndarray:
        """The gene latent (n, n_hidden) of the patients `sample` draws with the same arguments."""
        return self._generate(self.covariates_for(n, covariates, seed), seed)[1]

    # ---------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        g = self.config.gene
        return (
            f"GeneGAN({len(self.genes)} genes, covariates={self.covariates}, "
            f"n_noise={g.n_noise}, {g.n_layers}x{g.n_hidden}, trained={self.trained})"
        )


def gene_batches(data: GeneData, cfg, device, noise_features: int):
    """`draw(rng) -> GeneBatch` over the training patients of `data`: a batch of
    `train.batch_size` patients drawn with replacement and the generator's noise (its
    `noise_features` wide)."""
    Z, codes, numeric = data.tensors(data.train, device)
    B = cfg.train.batch_size

    def draw(rng) -> GeneBatch:
        idx = to_device(torch.randint(len(Z), (B,), generator=rng), device)
        noise = to_device(torch.randn(B, noise_features, generator=rng), device)
        return GeneBatch(Z[idx], codes[idx], numeric[idx], noise)

    return draw


def gene_realism_score(data: GeneData, cfg, device):
    """The gene side's held-out score for model selection, `score(sampler)`: the mean of the
    gGAN distance and dendrogram correlations between the held-out patients and synthetic
    ones with their covariates, minus `gene.select_dispersion` times |log std ratio| of
    synthetic patients with the training patients' covariates against those patients (their
    many rows give a steadier std than the few held-out ones; the correlations do not see a
    shrunken sample). Each side's covariate rows are repeated to at least
    `gene.select_samples` synthetic patients (0: once). The same noise (seed `cfg.seed + 1`)
    at every evaluation, so scores differ by the weights alone.

    With `train.select_margin` > 0 it returns `(score, {"score_sd": sd})`: `sd` is the
    standard deviation (ddof 1) of the correlations' mean over `SELECT_BOOTSTRAP` resamples
    (with replacement, seeded by `cfg.seed + 1`) of the held-out patients against the same
    synthetic ones: the noise of a few held-out patients, which no number of synthetic draws
    removes, and the spread the margin is counted in (`train.loop.Trainer`)."""
    from radiogenomics.evaluate.genes import std_ratio
    from radiogenomics.train.loop import SCORE_SD

    g, seed = cfg.gene, cfg.seed + 1
    spread = cfg.train.select_margin > 0

    def generate(sampler, rows) -> np.ndarray:
        rows = repeated(rows, g.select_samples)
        rng = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(rows), sampler.noise_features, generator=rng)
        _, codes, numeric = data.tensors(rows, device)
        return sampler(noise.to(device), codes, numeric)[0].float().cpu().numpy()

    real = data.expression[data.held_out]

    def score(sampler):
        fake = generate(sampler, data.held_out)
        value = correlations(real, fake)
        if g.select_dispersion > 0 and len(data.train) >= 2:
            ratio = std_ratio(data.expression[data.train], generate(sampler, data.train))
            value -= g.select_dispersion * abs(float(np.log(max(ratio, 1e-12))))
        if not spread:
            return value
        rng = np.random.default_rng(seed)
        n = len(real)
        boot = [correlations(real[rng.integers(0, n, n)], fake) for _ in range(SELECT_BOOTSTRAP)]
        return value, {SCORE_SD: float(np.std(boot, ddof=1))}

    return score


# held-out resamples behind the selection score's spread (`gene_realism_score`)
SELECT_BOOTSTRAP = 25


def correlations(real: np.ndarray, fake: np.ndarray) -> float:
    """The mean of the gGAN distance-matrix and dendrogram correlations of two sets."""
    from radiogenomics.evaluate.genes import dendrogram_correlation, distance_correlation

    return 0.5 * (distance_correlation(real, fake) + dendrogram_correlation(real, fake))


def repeated(rows: np.ndarray, n: int) -> np.ndarray:
    """`rows` repeated whole as often as it takes to reach `n` or more (once for n <= len):
    a score's synthetic side with many patients varies little with the noise drawn, so
    selection compares weights rather than draws, and keeps each covariate row's share."""
    rows = np.asarray(rows)
    return np.tile(rows, max(1, -(-n // max(len(rows), 1))))


def fit_gaussian_start(
    data: GeneData, *generators, scale: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """Fit the Gaussian that `generators` (`GeneGenerator`s with `start="gaussian"`) start
    from on the patients `rows` of `data` (positions in `data.expression`; default its
    training patients): a linear regression of the standardised expression on the covariates
    and the Ledoit-Wolf shrunk covariance of its residuals, shrunk on the cohort's scale
    (`scale`: the gene scaler's per-gene std), so that the untrained generator samples
    exactly the `MultivariateGaussian` baseline fitted on the same patients
    (`evaluate.baselines.fit_gaussian`). With `gene.log1p` the baseline is a Gaussian of the
    counts, the start one of their log1p: the same only in kind."""
    from radiogenomics.evaluate.baselines import fit_gaussian

    rows = data.train if rows is None else np.asarray(rows)
    if len(rows) < 2:
        raise ValueError(
            f"gene.start=gaussian: {len(rows)} training patients with expression; "
            "fitting the Gaussian needs >= 2"
        )
    Z, codes, numeric = data.tensors(rows, "cpu")
    design = generators[0].gaussian.design(codes, numeric).numpy()
    coef, factor, shrinkage = fit_gaussian(Z.numpy(), design, scale=scale)
    for generator in generators:
        generator.gaussian.set(coef, factor)
    log.info(
        "gene.start=gaussian: fitted on %d patients x %d genes (Ledoit-Wolf "
        "shrinkage %.3f)", len(rows), Z.shape[1], shrinkage,
    )  # fmt: skip
