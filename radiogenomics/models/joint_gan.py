"""JointGAN: synthetic paired patients, expression, lesion mask and image that belong together.

    model = JointGAN(adata, config)           # a paired cohort; unpaired patients allowed
    model.train(run_dir="run")                # resumable; keeps the weights best on held-out
    synth = model.sample(100, covariates={"subtype": "A"})   # fully synthetic patients
    synth = model.generate_for(adata)         # images for real expression (and real masks)
    model.save("run"); JointGAN.load("run", adata)

The chain (docs/design.md, section 3): noise + covariates -> GeneGenerator -> (expression, latent) ->
GeneEncoder -> gene code -> MaskGenerator -> mask -> ImageGenerator -> image. The generator
side is one module (`nn.joint.JointGenerator`: the gene generator and the image side) and so
is the critic side (gene critic; image, mask critics and gene read-back), so the engine trains,
averages and checkpoints them as wholes. `joint.mode`:

- `joint`: one generator objective: the gene critic on generated expression, the image side
  on real expression and masks (as ImageGAN), and fully synthetic patients scored by the
  image and mask critics, whose gradients reach the gene generator through the gene code
  (and the gene read-back through the expression), so generated expression and images agree.
- `separate`: the gene GAN on every patient with expression, the image side on every patient
  with an image, conditioned on real expression; the same modules composed at sampling.

One modality alone is GeneGAN's or ImageGAN's job (`model: gene_gan`, `image_gan`), which the
same networks, objectives and selection scores serve.

Patients with one modality train their side only: the gene side sees every training patient
with expression, the image side every training patient with an image and a mask.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from radiogenomics import _keys as K
from radiogenomics.config import Config
from radiogenomics.data.dataset import image_rows
from radiogenomics.data.h5ad import SyntheticCohort
from radiogenomics.data.spacing import default_spacing
from radiogenomics.data.view import CohortView
from radiogenomics.models.base import CohortModel
from radiogenomics.models.covariates import CovariateSampler
from radiogenomics.models.data import GeneData, ImageData
from radiogenomics.models.gene_gan import GeneGAN, fit_gaussian_start
from radiogenomics.models.generation import ImageSampler
from radiogenomics.models.image_gan import ImageGAN
from radiogenomics.nn.image import Generated, ImageSide
from radiogenomics.nn.joint import JointCritic, JointGenerator
from radiogenomics.nn.noise import Noise

log = logging.getLogger(__name__)

_MAX_LISTED = 10


class JointGAN(ImageSampler, CovariateSampler, CohortModel, kind="joint_gan"):
    """Genes condition images end to end (see the module docstring)."""

    draws_expression = makes_images = True
    FORMAT = 2  # 2: the gene critic reads minibatch dispersion

    def __init__(self, adata: ad.AnnData, config: Config | None = None, *, progress: bool = True):
        """`progress`: a bar while the cohort's images load."""
        cfg = self._config(config)
        mode, img = cfg.joint.mode, cfg.image
        rg = adata.uns.get(K.UNS, {})
        if img.use_background:
            raise ValueError(
                "JointGAN generates whole patients, so it fuses no real background: set "
                "image.use_background=false (ImageGAN fuses backgrounds, after Xu et al.)"
            )
        if mode == "joint" and not (img.use_genes and img.train_masks):
            raise ValueError(
                "joint.mode=joint makes masks and images from genes: it needs "
                "image.use_genes=true and image.train_masks=true"
            )
        if img.backend == "flow" and mode == "joint" and cfg.joint.use_latent:
            raise ValueError(
                "joint.use_latent feeds the gene generator's latent to the image side, but the "
                "flow backend's image network trains on real patients only, who have no "
                "latent: set joint.use_latent=false with image.backend=flow"
            )
        if mode == "separate" and not img.train_masks and img.use_mask:
            raise ValueError(
                f"joint.mode={mode}: fully synthetic patients need their masks generated: set "
                "image.train_masks=true"
            )
        view = CohortView(
            adata, genes=cfg.gene.genes, covariates=cfg.gene.covariates, log1p=cfg.gene.log1p
        )
        meta = {"genes": [], "categorical": view.categorical, "numeric": view.numeric,
                "scaler": None, "mode": mode, "summary": {}}  # fmt: skip
        if not view.genes or not view.has_expression.any():
            raise ValueError(
                "a JointGAN needs expression, but no patient of the cohort has any "
                "(has_expression is all False)"
            )
        meta["genes"] = view.genes
        dims = int(rg.get(K.SPATIAL_DIMS, 2))
        if dims != cfg.data.spatial_dims:
            raise ValueError(
                f"config data.spatial_dims={cfg.data.spatial_dims} but the cohort has "
                f"spatial_dims={dims} (image_size {list(rg.get(K.IMAGE_SIZE, []))})"
            )
        image_rows(adata, need_mask=True)  # fails early, clearly
        size = [int(s) for s in (cfg.data.image_size or rg.get(K.IMAGE_SIZE, []))]
        meta.update(
            spatial_dims=dims,
            image_size=size,
            channels=int(rg.get(K.CHANNELS, 1)),
            phantom=K.PHANTOM in rg,
            spacing=default_spacing(rg, size),
        )
        self._setup(cfg, meta)
        self._set_data(adata, progress=progress)
        if cfg.gene.start == "gaussian":
            fit_gaussian_start(
                self.gene_data, self.generator.gene, self.sampler.gene, scale=self.scaler.std
            )

    # ---------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.meta["mode"]

    @property
    def image_side(self) -> ImageSide:
        """The image side samples come from (the selected EMA weights, once trained)."""
        return self.sampler.side

    @property
    def gene_generator(self):
        """The gene generator samples come from (`nn.gene.GeneGenerator`)."""
        return self.sampler.gene

    def _build(self, cfg: Config, meta: dict) -> None:
        self.categorical: dict[str, list[str]] = meta["categorical"]
        self.numeric: dict[str, dict] = meta["numeric"]
        gene_g, gene_c = GeneGAN._make_networks(
            cfg, len(self.genes), self.categorical, self.numeric
        )
        # the image side reads the gene latent in joint mode only: in separate mode it never
        # sees one
        n_latent = cfg.gene.n_hidden if cfg.joint.use_latent and meta["mode"] == "joint" else 0
        # an image side without genes (image.use_genes false: Anwar et al.'s combination of
        # independently trained GANs) builds no gene encoder
        side_meta = meta if cfg.image.use_genes else {**meta, "genes": []}
        side_g, side_c = ImageGAN._make_networks(cfg, side_meta, n_latent=n_latent)
        self.generator = JointGenerator(gene_g, side_g)
        self.critic = JointCritic(gene_c, side_c)
        # what sampling runs: the selected weights of the EMA generator, once trained
        self.sampler = JointGenerator(copy.deepcopy(gene_g), copy.deepcopy(side_g))
        self.sampler.to(self.device).eval()

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"sampler": self.sampler, "generator": self.generator, "critic": self.critic}

    def _loaded(self) -> None:
        self.sampler.to(self.device).eval()

    # ---------------------------------------------------------------------------------------
    def _set_data(self, adata: ad.AnnData, *, progress: bool = False) -> None:
        """The data of each side (`gene_data`: expression and covariates of every patient,
        zeros where absent; `image_data`: the patients with an image and a mask), the
        cohort's one held-out split, and the fingerprint a resumed run must match."""
        view = self._view(adata, covariates=self.covariates)
        rows = np.arange(view.n)
        train_rows, val_rows = self._split(view, rows)
        expressed = np.flatnonzero(view.has_expression)
        # covariates condition the expression: encoded for the patients with expression (the
        # others, e.g. a merged cohort's image-only patients, may lack them)
        codes = np.zeros((view.n, len(self.categorical)), np.int64)
        numeric = np.zeros((view.n, len(self.numeric)), np.float32)
        if len(expressed):
            codes[expressed], numeric[expressed] = view.covariates(expressed)
        self.gene_data = GeneData(
            expression=view.expression,
            codes=codes,
            numeric=numeric,
            rows=expressed,
            train=np.intersect1d(train_rows, expressed),
            held_out=np.intersect1d(val_rows, expressed),
        )
        # sampling draws covariate rows from the patients the gene side learns from
        self._covariate_table = adata.obs.iloc[expressed][self.covariates].copy()
        self._obs_covariates = adata.obs[self.covariates].copy()
        sections = {"gene": self.config.gene, "joint": self.config.joint}
        self.image_data = ImageData.load(
            view, image_rows(adata, need_mask=True), train_rows, val_rows, self.config.data,
            genes=self.config.image.use_genes, progress=progress,
            shape=(self.meta["channels"], *self.meta["image_size"]),
        )  # fmt: skip
        sections |= {"image": self.config.image, "data": self.config.data}
        self.meta["n_train"] = int(len(self.gene_data.train) + len(self.image_data.train))
        self._fingerprint = self._fingerprint_of(
            view, train_rows, val_rows, categorical=self.categorical,
            numeric=sorted(self.numeric), **sections,
        )  # fmt: skip

    # ---------------------------------------------------------------------------------------
    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        from radiogenomics.models.joint_training import fit_joint

        if not hasattr(self, "gene_data"):
            raise ValueError("this JointGAN was loaded without a cohort; JointGAN.load(dir, adata)")
        if len(self.gene_data.train) < 4:
            raise ValueError(
                f"{len(self.gene_data.train)} training patients have expression; training "
                "needs >= 4"
            )
        if len(self.image_data.train) < 4:
            raise ValueError(
                f"{len(self.image_data.train)} training patients have an image and a mask; "
                "training needs >= 4"
            )
        return fit_joint(self, run_dir, progress)

    # ---------------------------------------------------------------------------------------
    # sampling

    def _check_trained(self, what: str) -> None:
        if not self.trained:
            log.warning("%s with an untrained JointGAN", what)

    @torch.no_grad()
    def synthesize(self, obs: pd.DataFrame, *, seed: int = 0, sampler=None) -> Generated:
        """Fully synthetic patients with the covariates `obs`, drawn in one batch with the
        noise `Noise.draw` draws from `seed` (`iter_sample` splits larger numbers): the
        standardised expression, latent, masks and images, on the CPU.
        `sampler`: the generator to run (default: the selected weights)."""
        G = self.sampler if sampler is None else sampler
        dev, n = self.device, len(obs)
        codes, numeric = (torch.as_tensor(a).to(dev) for a in self.encode_covariates(obs))
        noise = Noise.draw(G.side, n, torch.Generator().manual_seed(seed), device=dev,
                           n_gene=G.gene.noise_features)  # fmt: skip
        out = G(noise, codes, numeric)
        cpu = lambda x: None if x is None else x.float().cpu()  # noqa: E731
        return Generated(
            images=cpu(out.images),
            masks=cpu(out.masks),
            expression=cpu(out.expression),
            latent=cpu(out.latent),
        )

    def iter_sample(
        self,
        n: int,
        covariates: dict | pd.DataFrame | None = None,
        *,
        seed: int = 0,
        batch_size: int = 256,
    ) -> Iterator[SyntheticCohort]:
        """`n` fully synthetic patients in batches of `batch_size` (each a SyntheticCohort),
        so that `n` may exceed memory. Covariates: as `covariates_for`. A batch's noise comes
        from `seed` and the batch's number: the same seed and batch size give the same
        patients."""
        self._check_trained("sampling")
        obs = self.covariates_for(n, covariates, seed)
        for k, start in enumerate(range(0, len(obs), batch_size)):
            part = obs.iloc[start : start + batch_size].copy()
            out = self.synthesize(part, seed=seed * 100_003 + k)
            yield self._cohort(part, out.expression, out.latent, out.masks, out.images, seed)

    def sample(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, *,
        seed: int = 0, batch_size: int = 256,
    ) -> SyntheticCohort:  # fmt: skip
        """`n` fully synthetic patients in memory (`iter_sample` for many).

        Parameters
        ----------
        n : int
            Number of patients (None with a covariate DataFrame: one per row).
        covariates : dict or DataFrame, optional
            Categorical values to fix (the rest drawn from the training patients' joint
            distribution), or every patient's covariates (`covariates_for`).
        seed : int
            Seeds the covariates and the noise (`nn.noise.Noise`): the same seed and batch size
            give the same patients.
        batch_size : int
            Patients drawn at once.

        Returns
        -------
        SyntheticCohort
            `adata` (expression on the cohort's scale in `X`, covariates in `obs`, the gene
            latent in `obsm['rg_gene_latent']`), `images` (n, C, *S) in [-1, 1] and `masks`.

        Examples
        --------
        >>> synth = model.sample(100, {"subtype": "A"}, seed=0)  # doctest: +SKIP
        >>> synth.images.shape, synth.adata.n_obs  # doctest: +SKIP
        ((100, 1, 32, 32), 100)
        """
        parts = list(self.iter_sample(n, covariates, seed=seed, batch_size=batch_size))
        adata = ad.concat([p.adata for p in parts], merge="same") if len(parts) > 1 else None
        if adata is None:
            return parts[0]
        adata.uns = parts[0].adata.uns
        return SyntheticCohort(
            adata,
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
        )

    def _cohort(self, obs, Z, latent, masks, images, seed) -> SyntheticCohort:
        obs = obs.copy()
        X = self.scaler.inverse_transform(Z.numpy())
        obs[K.HAS_EXPRESSION] = True
        adata = ad.AnnData(
            X=np.asarray(X, np.float32),
            obs=obs,
            var=pd.DataFrame(index=pd.Index(self.genes, dtype=str)),
        )
        if latent is not None:
            adata.obsm[K.GENE_LATENT] = latent.float().cpu().numpy()
        rg = {
            K.COVARIATES: {K.CATEGORICAL: self.categorical, K.NUMERIC: self.numeric},
            K.SPATIAL_DIMS: self.meta["spatial_dims"],
            K.PROVENANCE: {"library": "radiogenomics", "source": "JointGAN"},
            K.SYNTHETIC: {"model": "JointGAN", "mode": self.mode, "seed": int(seed)},
        }
        adata.obs[K.HAS_IMAGE] = True
        adata.obs[K.HAS_MASK] = True
        rg |= {K.IMAGE_SIZE: self.meta["image_size"], K.CHANNELS: self.meta["channels"]}
        if self.meta.get("spacing"):  # the training cohort's default, on the model's grid
            rg[K.SPACING] = self.meta["spacing"]
        adata.uns[K.UNS] = rg
        return SyntheticCohort(adata, images.numpy(), masks.numpy().astype(np.uint8))

    def _covariate_frame(self, rows) -> pd.DataFrame:
        """The covariates of cohort rows `rows` (the held-out patients' for the score)."""
        return self._obs_covariates.iloc[np.asarray(rows)]

    def _provenance(self) -> dict:
        return {"mode": self.mode}

    def __repr__(self) -> str:
        size = self.meta.get("image_size")
        return (
            f"JointGAN(mode={self.mode}, {len(self.genes)} genes, covariates={self.covariates}"
            + (f", {self.meta['spatial_dims']}D {size}" if size else "")
            + (", backend=flow" if self.config.image.backend == "flow" else "")
            + f", trained={self.trained})"
        )
