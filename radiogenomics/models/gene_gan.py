"""GeneGAN: the covariate-conditioned gene WGAN-GP (gGAN-style) on a cohort AnnData.

    model = GeneGAN(adata, config)       # genes, covariates and scaling from the cohort
    model.train(run_dir="run")           # resumable; keeps the weights best on held-out realism
    synth = model.sample(500, covariates={"subtype": "Classical"})   # AnnData, user's scale
    model.save("run"); GeneGAN.load("run", adata)

Patients without expression (`has_expression` False) are left out, so the gene half of a paired
cohort with unpaired patients trains as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from radiogenomics import _keys as K
from radiogenomics.config import Config, dump_config, save_config
from radiogenomics.data.cohort import covariate_keys
from radiogenomics.data.io import atomic_write_text
from radiogenomics.nn.gene import GeneCritic, GeneGenerator
from radiogenomics.pp import GeneScaler
from radiogenomics.train.checkpoint import load_weights, save_weights
from radiogenomics.train.loop import fit_model, pick_device
from radiogenomics.train.losses import critic_loss, generator_loss, gradient_penalty

log = logging.getLogger(__name__)

META = "gene_gan.json"
WEIGHTS = "model.safetensors"
COVARIATE_TABLE = "covariates.json"
_MAX_LISTED = 10


class GeneGAN:
    """Covariate-conditioned WGAN-GP over a cohort's expression (see the module docstring)."""

    def __init__(self, adata: ad.AnnData, config: Config | None = None):
        cfg = copy.deepcopy(config) if config is not None else Config()
        _expression_rows(adata)  # a cohort without expression fails here, before the genes
        genes = list(cfg.gene.genes) if cfg.gene.genes is not None else list(adata.var_names)
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise ValueError(
                f"key 'gene.genes': {len(missing)} gene(s) not in the cohort: {missing[:_MAX_LISTED]}"
            )
        uns_cov = adata.uns.get(K.UNS, {}).get(K.COVARIATES, {})
        cat_keys, num_keys = covariate_keys(adata)
        if cfg.gene.covariates is not None:
            unknown = [c for c in cfg.gene.covariates if c not in cat_keys + num_keys]
            if unknown:
                raise ValueError(
                    f"key 'gene.covariates': {unknown} are not covariates of the cohort; "
                    f"its covariates are {cat_keys + num_keys}"
                )
            cat_keys = [c for c in cat_keys if c in cfg.gene.covariates]
            num_keys = [c for c in num_keys if c in cfg.gene.covariates]
        meta = {
            "genes": genes,
            "categorical": {k: [str(v) for v in uns_cov[K.CATEGORICAL][k]] for k in cat_keys},
            "numeric": {k: dict(uns_cov[K.NUMERIC][k]) for k in num_keys},
            "scaler": None,  # fitted by _set_data
            "summary": {},
        }
        self._build(cfg, meta)
        self._set_data(adata, fit_scaler=True)

    def _set_data(self, adata: ad.AnnData, fit_scaler: bool = False) -> None:
        """The training tensors: this model's genes and covariates of `adata`'s patients with
        expression, scaled and encoded; and a fingerprint a resumed run must match."""
        sub = adata[_expression_rows(adata), self.genes]
        X = _finite_expression(sub)
        if fit_scaler:
            self.scaler.fit(X, genes=self.genes)
            self.meta.update(scaler=self.scaler.to_dict(), n_train=int(X.shape[0]))
        self._covariate_table = sub.obs[self.covariates].copy()
        self._Z = self.scaler.transform(X)
        self._codes, self._numeric = self._encode(sub.obs)
        ids = "\n".join(map(str, sub.obs_names)).encode()
        self._fingerprint = {
            "genes": self.genes,
            "categorical": self.categorical,
            "numeric": sorted(self.numeric),
            "patients": hashlib.sha256(ids).hexdigest(),
            "gene": dataclasses.asdict(self.config.gene),
            "seed": self.config.seed,
        }

    # ---------------------------------------------------------------------------------------
    def _build(self, cfg: Config, meta: dict) -> None:
        self.config, self.meta = cfg, meta
        self.genes: list[str] = meta["genes"]
        self.categorical: dict[str, list[str]] = meta["categorical"]
        self.numeric: dict[str, dict] = meta["numeric"]
        self.scaler = (
            GeneScaler.from_dict(meta["scaler"])
            if meta["scaler"] is not None
            else GeneScaler(log1p=cfg.gene.log1p)
        )
        self.device = pick_device(cfg.device)
        vocab = [len(v) for v in self.categorical.values()]
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, user's RNG untouched
            torch.manual_seed(cfg.seed)
            self._make_networks(cfg, vocab)
        self.sampler = copy.deepcopy(self.generator).eval()
        self.trained = False

    def _make_networks(self, cfg: Config, vocab: list[int]) -> None:
        g = cfg.gene
        self.generator = GeneGenerator(
            len(self.genes),
            vocab,
            len(self.numeric),
            n_latent=g.n_latent,
            n_hidden=g.n_hidden,
            n_layers=g.n_layers,
        )
        self.critic = GeneCritic(
            len(self.genes), vocab, len(self.numeric), n_hidden=g.n_hidden, n_layers=g.n_layers
        )

    @property
    def covariates(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    def _encode(self, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Covariate columns -> (codes (n, n_cat) int64, standardised numeric (n, n_num))."""
        missing = [k for k in self.covariates if k not in obs.columns]
        if missing:
            raise ValueError(
                f"covariate column(s) {missing} missing; the model needs {self.covariates}"
            )
        codes = np.zeros((len(obs), len(self.categorical)), dtype=np.int64)
        for j, (key, vocab) in enumerate(self.categorical.items()):
            values = obs[key].astype(object).to_numpy()
            lookup = {v: i for i, v in enumerate(vocab)}
            for i, v in enumerate(values):
                if pd.isna(v) or str(v) not in lookup:
                    raise ValueError(
                        f"covariate '{key}' of patient '{obs.index[i]}' is {v!r}, which is not "
                        f"one of the model's categories {vocab}"
                    )
                codes[i, j] = lookup[str(v)]
        numeric = np.zeros((len(obs), len(self.numeric)), dtype=np.float32)
        for j, (key, stats) in enumerate(self.numeric.items()):
            values = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=np.float64)
            bad = obs.index[~np.isfinite(values)].tolist()
            if bad:
                raise ValueError(
                    f"numeric covariate '{key}' is missing or not a number for patient(s) "
                    f"{bad[:_MAX_LISTED]}"
                )
            numeric[:, j] = (values - stats["mean"]) / stats["std"]
        return codes, numeric

    # ---------------------------------------------------------------------------------------
    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        """Train with WGAN-GP; with `run_dir`, checkpoint there, resume, and save the model."""
        if not hasattr(self, "_Z"):
            raise ValueError("this GeneGAN was loaded without a cohort; GeneGAN.load(dir, adata)")
        cfg, device = self.config, self.device
        n = self._Z.shape[0]
        if n < 4:
            raise ValueError(f"the cohort has {n} patients with expression; training needs >= 4")
        train_idx, val_idx = _split(n, cfg.train.val_fraction, cfg.seed, self._codes)
        if len(val_idx) == 0:
            log.warning("no held-out patients (train.val_fraction=0): keeping the last weights")
        to = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
        Z, codes, numeric = (
            to(self._Z[train_idx]),
            to(self._codes[train_idx]),
            to(self._numeric[train_idx]),
        )
        G, C, B = self.generator, self.critic, cfg.train.batch_size
        n_train = len(train_idx)

        def batch(rng):
            idx = torch.randint(n_train, (B,), generator=rng).to(device)
            noise = torch.randn(B, cfg.gene.n_latent, generator=rng).to(device)
            return Z[idx], codes[idx], numeric[idx], noise

        def critic_step(rng):
            real, c, u, noise = batch(rng)
            with torch.no_grad():
                fake = G(noise, c, u)[0]
            real_score, fake_score = C(real, c, u), C(fake, c, u)
            gp = gradient_penalty(lambda x: C(x, c, u), real, fake, generator=rng)
            loss = critic_loss(real_score, fake_score) + cfg.train.gp_weight * gp
            wasserstein = (real_score.float().mean() - fake_score.float().mean()).item()
            return loss, {"critic": loss.item(), "wasserstein": wasserstein, "gp": gp.item()}

        def generator_step(rng):
            _, c, u, noise = batch(rng)
            loss = generator_loss(C(G(noise, c, u)[0], c, u))
            return loss, {"generator": loss.item()}

        evaluate = None
        if len(val_idx):
            evaluate = self._realism_score(val_idx)
        summary = fit_model(
            self, critic_step, generator_step, evaluate, run_dir=run_dir, progress=progress
        )
        self.meta["summary"] = {**summary, "n_val": len(val_idx)}
        if run_dir is not None:
            self.save(run_dir)
        return summary

    def _realism_score(self, val_idx: np.ndarray):
        """Held-out score for model selection: mean of the gGAN distance and dendrogram
        correlations between the validation patients and as many synthetic ones."""
        from radiogenomics.evaluate.genes import dendrogram_correlation, distance_correlation

        real = self._Z[val_idx]
        codes = torch.as_tensor(self._codes[val_idx]).to(self.device)
        numeric = torch.as_tensor(self._numeric[val_idx]).to(self.device)
        n_latent, seed = self.config.gene.n_latent, self.config.seed + 1

        def score(sampler) -> float:
            # the same noise at every evaluation, so scores differ by the weights alone
            noise = torch.randn(
                len(val_idx), n_latent, generator=torch.Generator().manual_seed(seed)
            )
            fake = sampler(noise.to(self.device), codes, numeric)[0].float().cpu().numpy()
            return 0.5 * (distance_correlation(real, fake) + dendrogram_correlation(real, fake))

        return score

    # ---------------------------------------------------------------------------------------
    def covariates_for(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, seed: int = 0
    ) -> pd.DataFrame:
        """The covariate rows `sample` conditions on.

        A DataFrame is used as it is. Otherwise `n` rows are drawn from the training patients'
        covariate rows (their joint distribution), among those matching the categorical values
        fixed in `covariates`; the fixed values then overwrite their columns.
        """
        if isinstance(covariates, pd.DataFrame):
            obs = covariates.copy()
            self._encode(obs)  # validates
            return obs
        if n is None or n < 1:
            raise ValueError(f"n must be a positive number of patients; got {n}")
        fixed = dict(covariates or {})
        unknown = [k for k in fixed if k not in self.covariates]
        if unknown:
            raise ValueError(
                f"unknown covariate(s) {unknown}; the model is conditioned on {self.covariates}"
            )
        table = self._covariate_table
        pool = table
        for key, value in fixed.items():
            if key in self.categorical:
                if str(value) not in self.categorical[key]:
                    raise ValueError(
                        f"covariate '{key}' has no category {value!r}; the model's categories "
                        f"are {self.categorical[key]}"
                    )
                pool = pool[pool[key].astype(str) == str(value)]
        if len(pool) == 0:
            log.warning("no training patient has %s; other covariates drawn from all", fixed)
            pool = table
        rng = np.random.default_rng(seed)
        obs = pool.iloc[rng.integers(0, len(pool), size=n)].copy()
        for key, value in fixed.items():
            if key in self.numeric:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"numeric covariate '{key}' needs a number; got {value!r}"
                    ) from None
                obs[key] = value
            else:
                obs[key] = str(value)
        obs.index = [f"synthetic-{i:06d}" for i in range(n)]
        for key, vocab in self.categorical.items():
            obs[key] = pd.Categorical(obs[key].astype(str), categories=vocab)
        return obs

    @torch.no_grad()
    def _generate(self, obs: pd.DataFrame, seed: int, batch_size: int = 4096):
        codes, numeric = self._encode(obs)
        rng = torch.Generator().manual_seed(seed)
        Z, H = [], []
        for start in range(0, len(obs), batch_size):
            c = torch.as_tensor(codes[start : start + batch_size]).to(self.device)
            u = torch.as_tensor(numeric[start : start + batch_size]).to(self.device)
            noise = torch.randn(len(c), self.config.gene.n_latent, generator=rng).to(self.device)
            z, h = self.sampler.to(self.device)(noise, c, u)
            Z.append(z.float().cpu().numpy())
            H.append(h.float().cpu().numpy())
        return np.concatenate(Z), np.concatenate(H)

    def sample(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, *, seed: int = 0
    ) -> ad.AnnData:
        """`n` synthetic patients on the cohort's scale, their covariates in `obs` and the gene
        latent (the generator's hidden layer) in `obsm["rg_gene_latent"]`."""
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
        return adata

    def get_latent(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, *, seed: int = 0
    ) -> np.ndarray:
        """The gene latent (n, n_hidden) of the patients `sample` draws with the same arguments."""
        return self._generate(self.covariates_for(n, covariates, seed), seed)[1]

    # ---------------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(
            run_dir / WEIGHTS,
            {
                "sampler": self.sampler.state_dict(),
                "generator": self.generator.state_dict(),
                "critic": self.critic.state_dict(),
            },
        )
        meta = {**self.meta, "trained": self.trained, "model": "GeneGAN"}
        atomic_write_text(run_dir / META, json.dumps(meta, indent=1))
        save_config(self.config, run_dir / "config.yaml")
        # the training patients' covariate rows (no ids) for sampling; JSON keeps categories
        # such as "NA" as text and floats exact, which a CSV round trip does not
        table = {k: [str(v) for v in self._covariate_table[k]] for k in self.categorical} | {
            k: [float(v) for v in self._covariate_table[k]] for k in self.numeric
        }
        atomic_write_text(run_dir / COVARIATE_TABLE, json.dumps(table))
        log.info("saved GeneGAN to %s", run_dir)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, adata: ad.AnnData | None = None) -> GeneGAN:
        """A saved model; with `adata`, refuse it unless its genes and covariates match."""
        from radiogenomics.config import load_config

        run_dir = Path(run_dir)
        if not (run_dir / META).is_file():
            raise FileNotFoundError(f"{run_dir} holds no trained GeneGAN ({META} not found)")
        meta = json.loads((run_dir / META).read_text())
        cfg = load_config(run_dir / "config.yaml")
        model = cls.__new__(cls)
        model._build(cfg, meta)
        weights = load_weights(run_dir / WEIGHTS)
        model.sampler.load_state_dict(weights["sampler"])
        model.generator.load_state_dict(weights["generator"])
        model.critic.load_state_dict(weights["critic"])
        model.trained = bool(meta.get("trained"))
        table = json.loads((run_dir / COVARIATE_TABLE).read_text())
        model._covariate_table = pd.DataFrame(table, columns=model.covariates)
        if adata is not None:
            model.check_cohort(adata)
            model._set_data(adata)  # so the loaded model can train on (or resume with) it
        return model

    def check_cohort(self, adata: ad.AnnData) -> None:
        """ValueError unless `adata` has this model's genes and covariate vocabularies."""
        missing = [g for g in self.genes if g not in adata.var_names]
        if missing:
            raise ValueError(
                f"the cohort lacks {len(missing)} of the model's {len(self.genes)} genes: "
                f"{missing[:_MAX_LISTED]}"
            )
        cov = adata.uns.get(K.UNS, {}).get(K.COVARIATES, {})
        for key, vocab in self.categorical.items():
            theirs = [str(v) for v in cov.get(K.CATEGORICAL, {}).get(key, [])]
            if theirs != vocab:
                raise ValueError(
                    f"covariate '{key}': the cohort's categories {theirs} differ from the "
                    f"model's {vocab}"
                )
        for key in self.numeric:
            if key not in cov.get(K.NUMERIC, {}):
                raise ValueError(f"numeric covariate '{key}' of the model is not in the cohort")

    def __repr__(self) -> str:
        g = self.config.gene
        return (
            f"GeneGAN({len(self.genes)} genes, covariates={self.covariates}, "
            f"n_latent={g.n_latent}, {g.n_layers}x{g.n_hidden}, trained={self.trained})"
        )

    def describe(self) -> str:
        return dump_config(self.config)


# ------------------------------------------------------------------------------------------


def _expression_rows(adata: ad.AnnData) -> np.ndarray:
    if adata.n_vars == 0:
        raise ValueError("the cohort has no genes (an image-only cohort cannot train a GeneGAN)")
    if K.HAS_EXPRESSION in adata.obs.columns:
        rows = adata.obs[K.HAS_EXPRESSION].to_numpy(dtype=bool)
    else:
        rows = np.ones(adata.n_obs, dtype=bool)
    if not rows.any():
        raise ValueError("no patient of the cohort has expression (has_expression is all False)")
    return np.flatnonzero(rows)


def _finite_expression(sub: ad.AnnData) -> np.ndarray:
    X = np.asarray(sub.X.toarray() if hasattr(sub.X, "toarray") else sub.X, dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        pats, genes = np.nonzero(bad)
        examples = [
            f"{sub.obs_names[p]}/{sub.var_names[g]}"
            for p, g in zip(pats[:5], genes[:5], strict=True)
        ]
        raise ValueError(
            f"expression has {int(bad.sum())} NaN/inf value(s) in {len(set(pats))} patient(s) "
            f"flagged has_expression, e.g. {examples}; impute or drop them (the manifest's "
            "'missing' policy) before training"
        )
    return X


def _split(n: int, fraction: float, seed: int, codes: np.ndarray):
    """Patient-level train/validation split, stratified on the first categorical covariate
    where every class has two patients or more."""
    n_val = int(round(n * fraction))
    if n_val < 2 or n - n_val < 2:
        return np.arange(n), np.array([], dtype=int)
    from sklearn.model_selection import train_test_split

    strata = None
    if codes.shape[1]:
        _, counts = np.unique(codes[:, 0], return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts):
            strata = codes[:, 0]
    train, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(val)
