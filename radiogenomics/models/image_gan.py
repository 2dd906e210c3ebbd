"""ImageGAN: lesion images conditioned on masks and gene expression, on a cohort AnnData.

    model = ImageGAN(adata, config)      # patients with an image; expression where present
    model.train(run_dir="run")           # resumable; keeps the weights best on held-out realism
    synth = model.generate_for(cohort)   # images (and masks where missing) for real expression
    synth = model.sample(100)            # training patients' expression, drawn masks: a cohort
    images = model.generate(masks, expression)        # the same, as arrays
    model.save("run"); ImageGAN.load("run", adata)

The generator side is one module (GeneEncoder -> MaskGenerator, ImageGenerator) and so is the
critic side (its own GeneEncoder, the image critic, the mask critic), so the shared loop trains,
averages (EMA) and checkpoints them as wholes. Image-only patients train with the encoder's
learned "no genes" code; matching-aware negatives (a real image with another patient's genes,
or another patient's mask) use paired patients only.
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
from radiogenomics.config import Config
from radiogenomics.data.dataset import image_rows
from radiogenomics.data.h5ad import SyntheticCohort
from radiogenomics.data.spacing import default_spacing
from radiogenomics.models.base import CohortModel
from radiogenomics.models.data import ImageData
from radiogenomics.models.generation import ImageSampler
from radiogenomics.models.image_training import fit_image_gan, images_for, masks_for
from radiogenomics.nn.flow import FlowImage, FlowSide
from radiogenomics.nn.image import (
    CriticSide,
    GeneEncoder,
    GeneRegressor,
    ImageCritic,
    ImageGenerator,
    ImageSide,
    MaskGenerator,
)
from radiogenomics.nn.segmentation import SegmentationNet

log = logging.getLogger(__name__)

_MAX_LISTED = 10


class ImageGAN(ImageSampler, CohortModel, kind="image_gan"):
    """Mask- and gene-conditioned image GAN (see the module docstring)."""

    makes_images = True
    FORMAT = 4  # 4: one model core (model.json); 3: linear upsampling; older cannot be read

    def __init__(self, adata: ad.AnnData, config: Config | None = None, *, progress: bool = True):
        """`progress`: a bar while the cohort's images load."""
        cfg = self._config(config)
        rg = adata.uns.get(K.UNS, {})
        dims = int(rg.get(K.SPATIAL_DIMS, 2))
        if dims != cfg.data.spatial_dims:
            raise ValueError(
                f"config data.spatial_dims={cfg.data.spatial_dims} but the cohort has "
                f"spatial_dims={dims} (image_size {list(rg.get(K.IMAGE_SIZE, []))})"
            )
        img = cfg.image
        image_rows(adata, need_mask=img.use_mask or img.train_masks)  # fails early, clearly
        genes: list[str] = []
        if img.use_genes:  # genes missing from the cohort: the cohort view names them
            genes = list(cfg.gene.genes) if cfg.gene.genes is not None else list(adata.var_names)
            if not genes:
                raise ValueError(
                    "image.use_genes is true but the cohort has no genes; set image.use_genes=false"
                )
        meta = {
            "genes": genes,
            "scaler": None,  # the cohort's, set by _view
            "spatial_dims": dims,
            "image_size": [int(s) for s in (cfg.data.image_size or rg.get(K.IMAGE_SIZE, []))],
            "channels": int(rg.get(K.CHANNELS, 1)),
            # a phantom's planted lesion features select its weights; real cohorts' the
            # general radiomic ones (image_training.realism_score)
            "phantom": K.PHANTOM in rg,
            "summary": {},
        }
        meta["spacing"] = default_spacing(rg, meta["image_size"])  # for fully synthetic images
        self._setup(cfg, meta)
        self._set_data(adata, progress=progress)
        if self.genes and not self.image_data.present.any():
            raise ValueError("no image patient has expression; set image.use_genes=false")

    # ---------------------------------------------------------------------------------------
    def _set_data(self, adata: ad.AnnData, *, progress: bool = False) -> None:
        """The cohort's image patients in memory (`image_data`), with the cohort's one
        held-out split, and the fingerprint a resumed run must match."""
        img = self.config.image
        view = self._view(adata)
        rows = image_rows(adata, need_mask=img.use_mask or img.train_masks)
        train_rows, val_rows = self._split(view, rows)
        self.image_data = ImageData.load(
            view, rows, train_rows, val_rows, self.config.data, progress=progress,
            shape=(self.meta["channels"], *self.meta["image_size"]),
        )  # fmt: skip
        self._fingerprint = self._fingerprint_of(
            view, train_rows, val_rows, image=self.config.image, data=self.config.data
        )

    def _build(self, cfg: Config, meta: dict) -> None:
        self.generator, self.critic = self._make_networks(cfg, meta)
        self.sampler = copy.deepcopy(self.generator).to(self.device).eval()

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"sampler": self.sampler, "generator": self.generator, "critic": self.critic}

    def _loaded(self) -> None:
        self.sampler.to(self.device).eval()

    @staticmethod
    def _make_networks(cfg: Config, meta: dict, n_latent: int = 0) -> tuple[ImageSide, CriticSide]:
        """The generator and critic sides; `n_latent`: the gene latent the generator side's
        encoder takes beside the expression (a joint model's gene generator's)."""
        img, dims, size, channels = (
            cfg.image,
            meta["spatial_dims"],
            meta["image_size"],
            meta["channels"],
        )
        n_genes = len(meta["genes"])
        n_code = img.n_code if n_genes else 0
        read_back = img.use_mask and img.mask_consistency_weight > 0
        divisor = 2 ** (len(img.critic_channels) - 1)
        if read_back and any(int(s) % divisor for s in size):
            raise ValueError(
                f"image.mask_consistency_weight's segmenter halves the image "
                f"{len(img.critic_channels) - 1} times (image.critic_channels "
                f"{img.critic_channels}): every side of image_size {list(size)} must be "
                f"divisible by {divisor}"
            )

        def encoder(n_latent=0):
            if not n_genes:
                return None
            return GeneEncoder(
                n_genes, img.n_code, n_hidden=img.n_hidden, n_layers=img.n_layers, n_latent=n_latent
            )

        if img.backend == "flow":
            return ImageGAN._make_flow(cfg, meta, encoder(n_latent), encoder(), n_code)
        generator = ImageSide(
            encoder(n_latent),
            ImageGenerator(
                dims,
                channels,
                size,
                img.channels,
                n_noise=img.n_noise,
                n_code=n_code,
                use_mask=img.use_mask,
                background_channels=channels if img.use_background else 0,
                mask_depth=img.mask_depth,
                padding=img.padding,
                output_noise=img.output_noise,
            ),
            MaskGenerator(
                dims, size, img.channels, n_noise=img.n_noise, n_code=n_code, padding=img.padding
            )
            if img.train_masks
            else None,
        )
        critic = CriticSide(
            encoder(),
            ImageCritic(
                dims,
                channels,
                img.critic_channels,
                use_mask=img.use_mask,
                n_code=n_code,
                norm=img.critic_norm,
                mask_depth=img.critic_mask_depth,
            ),
            ImageCritic(
                dims, 1, img.critic_channels, use_mask=False, n_code=n_code, norm=img.critic_norm
            )
            if img.train_masks
            else None,
            GeneRegressor(
                dims, channels, size, img.gene_aux_components, channels=img.critic_channels
            )
            if n_genes and img.gene_aux_weight > 0
            else None,
            SegmentationNet(
                dims,
                channels,
                channels=img.critic_channels,
                strides=[2] * (len(img.critic_channels) - 1),
                num_res_units=1,
            )
            if read_back
            else None,
        )
        return generator, critic

    @staticmethod
    def _make_flow(cfg: Config, meta: dict, encoder, critic_encoder, n_code: int):
        """The flow backend's sides (`nn.flow`): the generator side's encoder and mask
        generator as the GAN's, a `FlowImage` for the image; the critic side its own encoder
        and the mask critic alone."""
        img, dims, size = cfg.image, meta["spatial_dims"], meta["image_size"]
        generator = FlowSide(
            encoder,
            FlowImage(
                dims, meta["channels"], size, img.flow_channels, n_code=n_code,
                use_mask=img.use_mask, mask_depth=img.mask_depth,
                num_res_blocks=img.flow_res_blocks, code_embedding=img.flow_code_embedding,
            ),
            MaskGenerator(
                dims, size, img.channels, n_noise=img.n_noise, n_code=n_code, padding=img.padding
            )
            if img.train_masks
            else None,
            steps=img.flow_steps,
            guidance=img.flow_guidance,
        )  # fmt: skip
        mask_critic = (
            ImageCritic(
                dims, 1, img.critic_channels, use_mask=False, n_code=n_code, norm=img.critic_norm
            )
            if img.train_masks
            else None
        )
        return generator, CriticSide(critic_encoder, None, mask_critic)

    # ---------------------------------------------------------------------------------------
    @property
    def samples_need_cohort(self) -> bool:
        """An ImageGAN draws no expression of its own: `sample` draws the training patients'
        profiles (a model with genes) and masks (a masked model without a mask generator)."""
        return bool(self.genes) or (self.sampler.mask is None and self.config.image.use_mask)

    @property
    def image_side(self) -> ImageSide:
        """The image side samples come from (the selected EMA weights, once trained)."""
        return self.sampler

    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        self._need_image_data("training")
        if len(self.patients) < 4:
            raise ValueError(
                f"the cohort has {len(self.patients)} patients with images; training needs >= 4"
            )
        return fit_image_gan(self, run_dir, progress)

    # ---------------------------------------------------------------------------------------
    def _expression_tensor(self, expression, n: int):
        """Standardised (n, n_genes) expression and presence flags from an AnnData, a
        DataFrame (genes as columns) or an array on the cohort's scale; None: no genes."""
        if not self.genes:
            return torch.zeros(n, 0), torch.zeros(n, dtype=torch.bool)
        if expression is None:
            raise ValueError(
                f"this ImageGAN is conditioned on {len(self.genes)} genes: pass expression"
            )
        if isinstance(expression, ad.AnnData):
            missing = [g for g in self.genes if g not in expression.var_names]
            if missing:
                raise ValueError(f"the expression lacks the model's genes {missing[:_MAX_LISTED]}")
            X = expression[:, self.genes].X
            X = X.toarray() if hasattr(X, "toarray") else X
        elif isinstance(expression, pd.DataFrame):
            missing = [g for g in self.genes if g not in expression.columns]
            if missing:
                raise ValueError(f"the expression lacks the model's genes {missing[:_MAX_LISTED]}")
            X = expression[self.genes].to_numpy()
        else:
            X = np.asarray(expression)
        X = np.asarray(X, np.float64)
        if X.shape != (n, len(self.genes)):
            raise ValueError(f"expression has shape {X.shape}; expected ({n}, {len(self.genes)})")
        present = np.isfinite(X).all(axis=1)
        Z = np.zeros_like(X, dtype=np.float32)
        if present.any():
            Z[present] = self.scaler.transform(X[present])
        return torch.as_tensor(Z), torch.as_tensor(present)

    def _masks_tensor(self, masks, n: int | None = None) -> torch.Tensor:
        size = self.meta["image_size"]
        m = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
        want = (1, *size)
        if m.ndim != len(size) + 2 or tuple(m.shape[1:]) != want or (n is not None and len(m) != n):
            raise ValueError(
                f"masks have shape {tuple(m.shape)}; expected ({n or 'N'}, {', '.join(map(str, want))}) "
                f"for this {self.meta['spatial_dims']}D model"
            )
        return (m > 0.5).float()

    def generate(
        self, masks=None, expression=None, *, backgrounds=None, seed: int = 0
    ) -> np.ndarray:
        """Images `(N, C, *spatial)` in [-1, 1] for given masks `(N, 1, *spatial)` and
        expression (AnnData, DataFrame or array on the cohort's scale; NaN rows = no genes).
        `backgrounds` (images in [-1, 1]) are needed when the model fuses a background."""
        if not self.trained:
            log.warning("generating with an untrained ImageGAN")
        n = None if masks is None else len(masks)
        if n is None:
            n = len(expression) if expression is not None else None
        if n is None:
            raise ValueError("generate needs masks or expression to know how many images")
        m = (
            self._masks_tensor(masks, n)
            if masks is not None
            else self.sample_masks(expression, n, seed=seed)
        )
        Z, present = self._expression_tensor(expression, n)
        bg = None
        if backgrounds is not None:
            if not self.config.image.use_background:
                raise ValueError("backgrounds given, but this ImageGAN fuses none (use_background)")
            bg = torch.as_tensor(np.asarray(backgrounds), dtype=torch.float32)
            want = (n, self.meta["channels"], *self.meta["image_size"])
            if tuple(bg.shape) != want:
                raise ValueError(f"backgrounds have shape {tuple(bg.shape)}; expected {want}")
        return images_for(
            self.sampler, Z, present, m, bg, margin=self.config.image.background_margin,
            device=self.device, seed=seed,
        ).numpy()  # fmt: skip

    @torch.no_grad()
    def sample_masks(self, expression=None, n: int | None = None, *, seed: int = 0) -> torch.Tensor:
        """Lesion masks `(n, 1, *spatial)` from the MaskGenerator for the given expression."""
        if self.sampler.mask is None:
            raise ValueError(
                "this ImageGAN has no mask generator (image.train_masks=false); pass masks"
            )
        if n is None:
            if expression is None:
                raise ValueError("sample_masks needs expression or n (a model without genes)")
            n = len(expression) if not isinstance(expression, ad.AnnData) else expression.n_obs
        Z, present = self._expression_tensor(expression, n)
        return masks_for(self.sampler, Z, present, device=self.device, seed=seed)

    def sample(self, n: int, covariates: dict | None = None, *, seed: int = 0) -> SyntheticCohort:
        """`n` synthetic patients: expression profiles drawn from the training patients (an
        image model draws no expression of its own), masks from the mask generator (or drawn
        from the training patients' masks; the whole patch for an unconditional model), and
        images from both.

        Parameters
        ----------
        n : int
            Number of patients.
        covariates : None
            An ImageGAN is conditioned on no covariates; any given is an error.
        seed : int
            Seeds the draw of profiles and masks and the image noise.

        Returns
        -------
        SyntheticCohort
            Expression (the drawn profiles, on the cohort's scale), images and masks.

        Examples
        --------
        >>> synth = model.sample(16, seed=0)  # doctest: +SKIP
        >>> synth.images.shape  # doctest: +SKIP
        (16, 1, 32, 32)
        """
        if covariates:
            raise ValueError("an ImageGAN is conditioned on no covariates: nothing to fix")
        if n is None or n < 1:
            raise ValueError(f"n must be a positive number of patients; got {n}")
        if self.config.image.use_background:
            raise ValueError(
                "this ImageGAN fuses real backgrounds (image.use_background): it draws images "
                "for given patients only, generate_for(adata)"
            )
        rng = np.random.default_rng(seed)
        X = np.zeros((n, 0))
        if self.samples_need_cohort:
            data = self._need_image_data("drawing profiles and masks from the training patients")
            train = np.asarray(data.train)
        if self.genes:
            pool = train[data.present[train].numpy()]  # training patients only
            if not len(pool):
                raise ValueError("no training patient has expression to draw profiles from")
            X = self.scaler.inverse_transform(data.expression[rng.choice(pool, size=n)].numpy())
        expression = ad.AnnData(
            X=np.asarray(X, np.float32),
            obs=pd.DataFrame(index=[f"synthetic-{i:06d}" for i in range(n)]),
            var=pd.DataFrame(index=pd.Index(self.genes, dtype=str)),
        )
        if not self.config.image.use_mask and self.sampler.mask is None:
            # images that no mask shaped: the whole patch is the region of interest
            m = torch.ones(n, 1, *self.meta["image_size"])
        elif self.sampler.mask is None:
            m = data.masks[torch.as_tensor(rng.choice(train, size=n))]
        else:
            m = self.sample_masks(expression, n, seed=seed)
        images = self.generate(m.numpy(), expression, seed=seed)
        adata = expression
        adata.obs[K.HAS_EXPRESSION] = bool(self.genes)
        adata.obs[K.HAS_IMAGE] = True
        adata.obs[K.HAS_MASK] = True
        rg = {
            K.SPATIAL_DIMS: self.meta["spatial_dims"],
            K.IMAGE_SIZE: self.meta["image_size"],
            K.CHANNELS: self.meta["channels"],
            K.PROVENANCE: {"library": "radiogenomics", "source": "ImageGAN"},
            K.SYNTHETIC: {"model": "ImageGAN", "seed": int(seed)},
        }
        # the training cohort's default spacing, on the model's grid: the images come from no
        # scan of these patients, so a spacing of theirs does not apply
        if self.meta.get("spacing"):
            rg[K.SPACING] = self.meta["spacing"]
        adata.uns[K.UNS] = rg
        return SyntheticCohort(adata, images, m.numpy().astype(np.uint8))

    def __repr__(self) -> str:
        i = self.config.image
        return (
            f"ImageGAN({self.meta['spatial_dims']}D {self.meta['image_size']}x{self.meta['channels']}, "
            f"mask={i.use_mask}, genes={len(self.genes)}, background={i.use_background}, "
            f"mask_generator={i.train_masks}, objective={i.objective}, "
            + ("backend=flow, " if i.backend == "flow" else "")
            + f"trained={self.trained})"
        )
