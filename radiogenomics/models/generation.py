"""What every model with an image side offers for given patients (ImageGAN, JointGAN):
`generate_for(adata)` (images, and masks where missing, for these patients' expression) and
`real_images(patients)` (the training cohort's own images, for evaluation).

A subclass sets `image_side` (the image side its samples come from), `image_data`
(`models.data.ImageData`, once a cohort is attached), `genes`, `scaler`, `config`, `meta`
and `device`.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import torch

from radiogenomics import _keys as K
from radiogenomics.data.h5ad import SyntheticCohort
from radiogenomics.data.spacing import regrid
from radiogenomics.data.view import CohortView
from radiogenomics.models.image_training import images_for, masks_for

log = logging.getLogger(__name__)
_MAX_LISTED = 10


class ImageSampler:
    """Mixin: `generate_for`, `real_images` and the image side's shared helpers."""

    def real_images(self, patients) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (N, C, *S) in [-1, 1] and masks (N, 1, *S) of the model's image
        patients `patients` (ids), as it trained on them.

        Parameters
        ----------
        patients : sequence of str
            Patient ids among `model.image_data.patients`.

        Returns
        -------
        images, masks : torch.Tensor
        """
        data = self._need_image_data("reading the real images")
        idx = data.positions(list(patients))
        return data.images[idx], data.masks[idx]

    def _need_image_data(self, why: str):
        data = getattr(self, "image_data", None)
        if data is None:
            raise ValueError(
                f"{why} needs the cohort: load the model with it, "
                f"{type(self).__name__}.load(run_dir, adata)"
            )
        return data

    @property
    def patients(self) -> list[str]:
        """Ids of the image patients the model holds (empty without a cohort)."""
        data = getattr(self, "image_data", None)
        return [] if data is None else list(data.patients)

    def generate_for(self, adata: ad.AnnData, *, seed: int = 0) -> SyntheticCohort:
        """One synthetic image per patient of `adata` with expression (per patient with an
        image and a mask, for a model without genes): drawn from that patient's expression in
        its own mask where it has one, else in a mask the mask generator draws from its
        genes; a model that fuses backgrounds takes each patient's own image as background.

        Parameters
        ----------
        adata : AnnData
            A cohort in the library's contract with the model's genes (a real cohort, or a
            gene model's sample).
        seed : int
            Seeds the image noise (and, from `seed + MASK_SEED_OFFSET`, the mask noise).

        Returns
        -------
        SyntheticCohort
            The patients (ids with '-syn'), their covariates and expression, the images in
            [-1, 1] and the masks they were drawn in.

        Examples
        --------
        >>> synth = model.generate_for(test_cohort, seed=0)  # doctest: +SKIP
        >>> synth.images.shape  # doctest: +SKIP
        (64, 1, 32, 32)
        """
        if not getattr(self, "trained", False):
            log.warning("generating images with an untrained %s", type(self).__name__)
        side = self.image_side
        if side is None:
            raise ValueError(f"this {type(self).__name__} makes no images")
        self.check_cohort(adata)
        view = CohortView(
            adata, genes=self.genes, covariates=[], log1p=self.config.gene.log1p,
            scaler=self.scaler,
        )  # fmt: skip
        with_mask = view.has_image & view.has_mask
        fuses = side.image.background_channels > 0
        keep = view.has_expression.copy() if self.genes else with_mask.copy()
        if fuses:
            keep &= with_mask  # the background is the patient's own image
        own_mask_only = side.mask is None and side.image.use_mask
        if own_mask_only:
            keep &= with_mask  # no mask generator: only the patient's own mask
        why = "expression" if self.genes else "an image and a mask"
        if self.genes and (fuses or own_mask_only):
            why += " and an image and mask of their own"
        skipped = [str(p) for p in view.ids[~keep]]
        if skipped:
            log.warning(
                "%d of the %d patients have no %s and get no image: %s",
                len(skipped), view.n, why, skipped[:_MAX_LISTED],
            )  # fmt: skip
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise ValueError(
                f"no patient of the cohort has {why}, which this {type(self).__name__} "
                "generates from"
            )
        Z, present = view.tensor(rows)
        size = self.meta["image_size"]
        masks = torch.zeros(len(rows), 1, *size)
        backgrounds = torch.zeros(len(rows), self.meta["channels"], *size) if fuses else None
        real = with_mask[rows]
        if real.any():
            images, own = view.images(rows[real], self.config.data)
            masks[torch.as_tensor(real)] = own
            if fuses:
                backgrounds[torch.as_tensor(real)] = images
        if (~real).any() and side.mask is None:  # images no mask shapes: the whole patch
            masks[torch.as_tensor(~real)] = 1.0
        elif (~real).any():  # masks drawn from the genes, as for fully synthetic patients
            idx = torch.as_tensor(np.flatnonzero(~real))
            masks[idx] = masks_for(side, Z[idx], present[idx], device=self.device, seed=seed)
        images = images_for(
            side, Z, present, masks, backgrounds,
            margin=self.config.image.background_margin, device=self.device, seed=seed,
        )  # fmt: skip
        return SyntheticCohort(
            self._synthetic_of(adata[rows], seed, own_masks=real),
            images.numpy(),
            masks.numpy().astype(np.uint8),
        )

    def _synthetic_of(self, sub: ad.AnnData, seed: int, *, own_masks: np.ndarray) -> ad.AnnData:
        """The AnnData of images generated for the patients `sub`: ids with '-syn', their
        covariates and expression, no file paths, the model's grid. A patient drawn in its
        own mask keeps its spacing (moved onto the grid: the mask is its anatomy); one drawn
        in a generated mask takes the training cohort's default (`uns`)."""
        out = sub.copy()
        out.obs_names = [f"{p}-syn" for p in out.obs_names]
        # one 2D image per synthetic patient, also from a cohort of slice stacks
        own = (K.IMAGE, K.MASK, K.N_SLICES)
        out.obs = out.obs.drop(columns=[c for c in own if c in out.obs])
        out.obs[K.HAS_IMAGE] = True
        out.obs[K.HAS_MASK] = True
        out.uns[K.UNS] = {
            k: v
            for k, v in out.uns.get(K.UNS, {}).items()
            if k not in (K.ROOT, K.PHANTOM, K.SLICE_AXIS)
        }
        regrid(out, self.meta["image_size"])  # image_size, and each patient's spacing
        if K.SPACING in out.obs:
            spacing = out.obs[K.SPACING].astype(str).to_numpy(dtype=object)
            spacing[~np.asarray(own_masks, bool)] = ""
            out.obs[K.SPACING] = spacing
        rg = out.uns[K.UNS]
        rg[K.CHANNELS] = self.meta["channels"]
        if self.meta.get("spacing"):
            rg[K.SPACING] = self.meta["spacing"]
        made = {"model": type(self).__name__, "seed": int(seed), **self._provenance()}
        if rg.get(K.SYNTHETIC):  # the expression was synthetic too (e.g. a GeneGAN sample)
            made["expression"] = rg[K.SYNTHETIC]
        rg[K.SYNTHETIC] = made
        return out

    def _provenance(self) -> dict:
        """Extra fields of `uns['rg']['synthetic']` (a subclass's own, e.g. its mode)."""
        return {}
