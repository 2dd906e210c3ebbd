"""Does a trained image model carry the phantom's planted genetics? (docs/design.md, section 5)

The phantom plants one lesion phenotype per gene program (size ... necrosis). These checks
measure the phenotypes on generated images (radiomap.features, pixels only) and compare them
with the programs of the patients whose expression conditioned the images:

- `planted_features`: Spearman of each measured phenotype with its program, for real images,
  for images generated from the real masks, and (with a mask generator) for fully synthetic
  patients whose masks are generated from the genes too.
- `partner_swap`: with mask and noise fixed, give each patient another patient's genes; the change
  in each phenotype should follow the change in its own program and no other.
- `mask_fidelity`: do generated images respect their masks? A segmentation net's Dice on them
  against the masks they were generated from (any cohort, not only the phantom).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from radiogenomics import _keys as K
from radiogenomics.data.phantom import FEATURES, PROGRAMS
from radiogenomics.radiomap.features import lesion_feature_table

# Phenotypes set by the mask (a generator conditioned on a real mask cannot change them) and
# those the image generator must draw from the genes.
SHAPE = ("size", "elongation", "margin")
INTENSITY = ("contrast", "texture", "necrosis")


def _rows(model, adata, patients):
    """The real images and masks of `patients` (default: the held-out ones with expression)
    as the model holds them (`model.real_images`), and their cohort rows."""
    if K.PHANTOM not in adata.uns.get(K.UNS, {}):
        raise ValueError("the cohort is not a phantom (no uns['rg']['phantom'] ground truth)")
    patients = list(model.meta.get("held_out", [])) if patients is None else list(patients)
    # only patients with expression: an image-only patient's image follows the "no genes" code
    expressed = set(adata.obs_names[adata.obs[K.HAS_EXPRESSION].to_numpy(bool)])
    patients = [p for p in patients if p in expressed]
    if len(patients) < 5:
        raise ValueError(f"need >= 5 patients to correlate; got {len(patients)}")
    images, masks = model.real_images(patients)
    return images, masks, adata[patients]


def _spearman(x, y) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 5 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok])[0])


def planted_features(model, adata, patients=None, *, seed: int = 0) -> pd.DataFrame:
    """Spearman (phenotype measured on images, planted program), one row per phenotype.

    Columns: `real` (the patients' own images: the ceiling the phantom's noise allows),
    `synthetic` (generated from the real masks and genes), and, where the model has a mask
    generator, `fully_synthetic` (mask and image generated from the genes).
    """
    images, masks, sub = _rows(model, adata, patients)
    programs = sub.obsm[K.PROGRAMS]
    bg = images.numpy() if model.config.image.use_background else None
    fake = model.generate(masks.numpy(), sub, backgrounds=bg, seed=seed)
    tables = {
        "real": lesion_feature_table(images[:, :1].numpy(), masks.numpy()),
        "synthetic": lesion_feature_table(fake[:, :1], masks.numpy()),
    }
    if model.image_side.mask is not None and not model.config.image.use_background:
        gen_masks = model.sample_masks(sub, sub.n_obs, seed=seed + 1)
        full = model.generate(gen_masks.numpy(), sub, seed=seed + 1)
        tables["fully_synthetic"] = lesion_feature_table(full[:, :1], gen_masks.numpy())
    return pd.DataFrame(
        {
            name: [_spearman(t[f].to_numpy(), programs[f].to_numpy()) for f in FEATURES]
            for name, t in tables.items()
        },
        index=pd.Index(FEATURES, name="phenotype"),
    )


def partner_swap(model, adata, patients=None, *, seed: int = 0) -> pd.DataFrame:
    """Spearman (change in phenotype, change in program) when patient i's genes are replaced
    by patient i+1's with mask and noise fixed; phenotypes x programs.

    The intensity phenotypes should follow their own program (the diagonal) and no other; the
    shape phenotypes cannot change (the mask is fixed), so their rows are NaN.
    """
    images, masks, sub = _rows(model, adata, patients)
    masks = masks.numpy()
    bg = images.numpy() if model.config.image.use_background else None
    partner = np.roll(np.arange(sub.n_obs), -1)
    own = model.generate(masks, sub, backgrounds=bg, seed=seed)
    swapped = model.generate(masks, sub[partner], backgrounds=bg, seed=seed)  # same noise
    delta_f = lesion_feature_table(swapped[:, :1], masks) - lesion_feature_table(own[:, :1], masks)
    prog = sub.obsm[K.PROGRAMS][list(PROGRAMS)].to_numpy()
    delta_p = prog[partner] - prog
    return pd.DataFrame(
        [
            [_spearman(delta_f[f].to_numpy(), delta_p[:, j]) for j in range(len(PROGRAMS))]
            for f in FEATURES
        ],
        index=pd.Index(FEATURES, name="phenotype"),
        columns=pd.Index(PROGRAMS, name="program swapped"),
    )


def mask_fidelity(model, adata, segmenter, patients=None, *, seed: int = 0) -> pd.DataFrame:
    """Dice (and IoU) of `segmenter`'s masks on the held-out patients' real images and on
    images generated from their masks and genes, against those masks (MONAI metrics).

    `patients` default to the model's validation patients (`meta["held_out"]`).
    """
    from radiogenomics.evaluate.images import mask_dice

    patients = list(model.meta.get("held_out", [])) if patients is None else list(patients)
    if not patients:
        raise ValueError("no patients to score (the model kept no validation patients)")
    images, masks = model.real_images(patients)
    bg = images.numpy() if model.config.image.use_background else None
    fake = model.generate(masks.numpy(), adata[patients], backgrounds=bg, seed=seed)
    threshold = segmenter.config.segment.threshold
    rows = {}
    for name, x in (("real", images), ("synthetic", torch.from_numpy(fake))):
        pred = segmenter.predict_tensor(x) > threshold
        scores = mask_dice(pred.float().numpy(), masks.numpy())
        rows[name] = {"dice": scores["dice"], "iou": scores["iou"], "n": len(patients)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("images")
