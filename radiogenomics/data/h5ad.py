"""Cohorts on disk: the h5ad and its image folder, read (and validated) and written whole.

`read_cohort` resolves relative image paths against the h5ad's folder; `write_cohort` writes
atomically; `write_patients` writes in-memory patients as a cohort folder (h5ad + images +
masks), replaced together or not at all. Everything written here validates and reads back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics._atomic import atomic_write
from radiogenomics.data.cohort import CohortError, add_modality_flags, setup_cohort, validate_cohort
from radiogenomics.data.folders import COHORT_FILE, cohort_folder, file_stems
from radiogenomics.data.spacing import format_spacing, patient_spacings, regrid

log = logging.getLogger(__name__)


@dataclass
class SyntheticCohort:
    """Synthetic patients in memory: `images` `(n, C, *spatial)` in [-1, 1], `masks`
    `(n, 1, *spatial)` uint8, and the cohort AnnData (expression, if any, in `X`). A gene-only
    sample has `images` and `masks` None."""

    adata: ad.AnnData
    images: np.ndarray | None
    masks: np.ndarray | None

    def files(self):
        """(adata, images in [0, 1] float32, masks): what `write_patient_batches` takes."""
        if self.images is None:
            return self.adata, None, None
        images = (np.clip(self.images, -1, 1) + 1) / 2
        return self.adata, images.astype(np.float32), self.masks

    def write(
        self,
        out_dir: str | Path,
        image_format: str = "nii.gz",
        progress: bool = True,
        *,
        overwrite: bool = False,
    ):
        """Write as a cohort (h5ad + image and mask files) that `read_cohort` reads back; the
        images are stored in [0, 1]. The folder is written whole (see `write_patients`)."""
        return write_patient_batches(
            [self.files()],
            out_dir,
            image_format,
            progress,
            total=self.adata.n_obs,
            desc="writing synthetic patients",
            overwrite=overwrite,
        )


def write_patients(
    adata: ad.AnnData,
    images: np.ndarray,
    masks: np.ndarray,
    out_dir: str | Path,
    image_format: str = "nii.gz",
    progress: bool = True,
    desc: str = "writing images",
    *,
    overwrite: bool = False,
) -> Path:
    """Write in-memory patients as a cohort: `out_dir/cohort.h5ad` plus `images/` and `masks/`.

    `images` and `masks` are `(n_obs, C, *spatial)` arrays in `adata`'s row order; rows whose
    `has_image` is False are not written. Float images go to PNG only if they lie in [0, 1].
    NIfTI and DICOM files get each patient's spacing (obs), else the cohort default (uns).
    File names come from the patient ids made safe (`file_stems`); `obs_names` keep the ids.
    The folder is written whole (`cohort_folder`): an existing non-empty `out_dir` is refused
    unless `overwrite`, and then replaced together with its h5ad, never mixed with it.
    """
    return write_patient_batches(
        [(adata, images, masks)],
        out_dir,
        image_format,
        progress,
        total=adata.n_obs,
        desc=desc,
        overwrite=overwrite,
    )


def write_patient_batches(
    batches,
    out_dir: str | Path,
    image_format: str = "nii.gz",
    progress: bool = True,
    *,
    total: int | None = None,
    desc: str = "writing patients",
    overwrite: bool = False,
) -> Path:
    """`write_patients` for patients that come in batches of `(adata, images, masks)` (e.g.
    `SyntheticCohort.files()` of a sampler's batches), so a cohort larger than memory is
    written one batch at a time; the h5ad (expression and obs, which are small) is written
    last. `images`/`masks` None: a batch without images (gene-only patients)."""
    from radiogenomics.data.io import FORMATS

    if image_format not in FORMATS:
        raise ValueError(f"image_format must be one of {sorted(FORMATS)}; got {image_format!r}")
    suffix = FORMATS[image_format]
    with (
        cohort_folder(out_dir, overwrite) as tmp,
        tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar,
    ):
        parts = [_write_files(*batch, tmp, suffix, bar) for batch in batches]
        if not parts:
            raise ValueError("no patients to write")
        adata = parts[0] if len(parts) == 1 else ad.concat(parts, merge="same")
        adata.uns = parts[0].uns
        if not adata.obs_names.is_unique:
            raise ValueError("the batches repeat patient ids; each patient needs its own id")
        adata.uns[K.UNS][K.ROOT] = str(tmp.resolve())  # paths stay relative: "images/..."
        write_cohort(adata, tmp / COHORT_FILE)
    return Path(out_dir) / COHORT_FILE


def _write_files(adata, images, masks, tmp: Path, suffix: str, bar) -> ad.AnnData:
    """Write one batch's image and mask files into the cohort folder `tmp`; its AnnData
    (a copy) with the file columns and flags set."""
    from radiogenomics.data.io import save_image

    adata = adata.copy()
    adata.uns[K.UNS] = dict(adata.uns.get(K.UNS, {}))
    if images is None:
        adata.obs[K.HAS_IMAGE] = False
        adata.obs[K.HAS_MASK] = False
        bar.update(adata.n_obs)
        return adata
    if len(images) != adata.n_obs or len(masks) != adata.n_obs:
        raise ValueError(
            f"{len(images)} images and {len(masks)} masks for a cohort of {adata.n_obs} patients"
        )
    has_image = (
        adata.obs[K.HAS_IMAGE].to_numpy(bool)
        if K.HAS_IMAGE in adata.obs
        else np.ones(adata.n_obs, bool)
    )
    if K.IMAGE_SIZE in adata.uns[K.UNS]:  # the spacing refers to it: move both
        regrid(adata, list(np.shape(images)[2:]))
    spacings = patient_spacings(adata)
    image_col, mask_col = [], []
    rows = zip(file_stems(adata.obs_names), has_image, images, masks, spacings, strict=True)
    for stem, present, image, mask, spacing in rows:
        bar.update(1)
        if not present:
            image_col.append("")
            mask_col.append("")
            continue
        image_rel, mask_rel = f"images/{stem}{suffix}", f"masks/{stem}{suffix}"
        save_image(image, tmp / image_rel, spacing)
        save_image(mask, tmp / mask_rel, spacing)
        image_col.append(image_rel)
        mask_col.append(mask_rel)
    adata.obs[K.IMAGE] = image_col
    adata.obs[K.MASK] = mask_col
    adata.obs[K.HAS_IMAGE] = has_image
    adata.obs[K.HAS_MASK] = has_image
    if any(sp is not None for sp in spacings):
        adata.obs[K.SPACING] = [
            format_spacing(sp) if p else "" for sp, p in zip(spacings, has_image, strict=True)
        ]
    return adata


def write_cohort(adata: ad.AnnData, path: str | Path) -> Path:
    """Write a cohort as h5ad, atomically. Relative image paths stay relative to its folder."""
    path = Path(path)
    rg = dict(adata.uns.get(K.UNS, {}))
    # A cohort never read from disk resolves relative paths against the working folder.
    root = rg.pop(K.ROOT, ".")
    out = add_modality_flags(adata.copy())  # the contract's flags, even where a writer left them
    out.uns[K.UNS] = rg
    if Path(root).resolve() != path.parent.resolve():
        for col in (K.IMAGE, K.MASK):
            if col in out.obs.columns:
                out.obs[col] = [_relocate(v, Path(root), path.parent) for v in out.obs[col]]
    return atomic_write(path, lambda tmp: out.write_h5ad(tmp))


def _relocate(value: str, old_root: Path, new_root: Path) -> str:
    if not value or Path(value).is_absolute():
        return value
    import os

    absolute = (old_root / value).resolve()
    try:
        return os.path.relpath(absolute, new_root.resolve())
    except ValueError:  # other drive on Windows
        return str(absolute)


def read_cohort(path: str | Path) -> ad.AnnData:
    """Read a cohort h5ad; relative image and mask paths resolve against its folder.

    Parameters
    ----------
    path
        An h5ad written by this library (`write_cohort`, `radiogenomics cohort`, a synthetic
        cohort) or set up with `setup_cohort`.

    Returns
    -------
    The cohort, its folder recorded as the root of its relative paths. A plain AnnData
    without `uns["rg"]` is refused with the `radiogenomics cohort setup` command that sets
    it up.

    Examples
    --------
    >>> import tempfile
    >>> from radiogenomics.data.h5ad import read_cohort
    >>> from radiogenomics.data.phantom import make_phantom, write_phantom
    >>> path = write_phantom(make_phantom(4, 2, progress=False), tempfile.mkdtemp(), progress=False)
    >>> adata = read_cohort(path)
    >>> adata.n_obs, int(adata.uns["rg"]["spatial_dims"])
    (4, 2)
    """
    path = Path(path)
    adata = read_h5ad(path)
    if K.UNS not in adata.uns:
        raise CohortError(
            f"{path} is an AnnData without uns['rg'] (not set up as a cohort); set it up with "
            f"`{setup_command(path, adata.obs)}`"
        )
    return _loaded(adata, path)


def setup_h5ad(path: str | Path, **setup) -> ad.AnnData:
    """Read an h5ad written by any tool (scanpy: categorical obs columns, no uns['rg']) and set
    it up as a cohort with `setup_cohort(adata, **setup)`; relative image paths resolve against
    its folder. `radiogenomics cohort setup` runs this, validates and writes the cohort."""
    path = Path(path)
    adata = _loaded(read_h5ad(path), path)
    return setup_cohort(adata, **setup)


def setup_command(path: str | Path, obs: pd.DataFrame | None = None) -> str:
    """The `radiogenomics cohort setup` command for a plain h5ad, its categorical obs columns
    as --categorical and numeric ones as --numeric (a suggestion: keep the covariates)."""
    import shlex

    path = Path(path)
    obs = pd.DataFrame() if obs is None else obs
    own = {K.IMAGE, K.MASK, K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK, K.SPACING, K.N_SLICES}
    cols = [c for c in obs.columns if c not in own]
    cat = [c for c in cols if isinstance(obs[c].dtype, pd.CategoricalDtype)]
    num = [
        c
        for c in cols
        if pd.api.types.is_numeric_dtype(obs[c]) and not pd.api.types.is_bool_dtype(obs[c])
    ]
    parts = ["radiogenomics cohort setup", shlex.quote(str(path))]
    for flag, names in (("--categorical", cat), ("--numeric", num)):
        if names:
            parts += [flag, shlex.quote(",".join(map(str, names)))]
    out = path.with_name(f"{path.stem}_cohort.h5ad")
    return " ".join([*parts, "--out", shlex.quote(str(out))])


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Any AnnData h5ad as it is (no setup checked); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cohort file not found: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py raises OSError/KeyError variants for non-h5ad files
        raise ValueError(f"cannot read cohort {path} as h5ad: {err}") from err


def _loaded(adata: ad.AnnData, path: Path) -> ad.AnnData:
    rg = _as_lists(dict(adata.uns.get(K.UNS, {})))
    for key in (K.IMAGE_SIZE, K.MASK_LABELS):
        if key in rg:
            rg[key] = [int(v) for v in rg[key]]
    if rg.get(K.SPACING) is not None:
        rg[K.SPACING] = [float(v) for v in rg[K.SPACING]]
    if rg.get(K.SLICE_AXIS) is not None:
        rg[K.SLICE_AXIS] = int(rg[K.SLICE_AXIS])
    rg[K.ROOT] = str(path.parent.resolve())
    adata.uns[K.UNS] = rg
    # h5ad stores repeated strings as categoricals; paths and spacings are text
    for col in (K.IMAGE, K.MASK, K.SPACING):
        if col in adata.obs.columns:
            adata.obs[col] = adata.obs[col].astype(str).to_numpy(dtype=object)
    return adata


def validate_cohort_file(
    path: str | Path, *, check_files: bool = True, progress: bool = False
) -> tuple[ad.AnnData, dict]:
    """`read_cohort` then `validate_cohort`; problems are prefixed with the file. Returns the
    cohort (absent modality flags added, image size recorded) and the summary."""
    adata = read_cohort(path)
    try:
        summary = validate_cohort(adata, check_files=check_files, progress=progress)
    except CohortError as err:
        raise CohortError(f"{path}: {err}") from None
    return add_modality_flags(adata), summary


def read_valid_cohort(
    path: str | Path, *, check_files: bool = True, progress: bool = False
) -> ad.AnnData:
    """Read a cohort and refuse it, as `radiogenomics cohort validate` would and with the same
    message, unless it meets the contract. Every CLI verb reads its cohorts through this, so
    none trains on, samples like or scores a cohort that `validate` refuses."""
    return validate_cohort_file(path, check_files=check_files, progress=progress)[0]


def _as_lists(node):
    """h5ad returns lists of strings as numpy arrays; give vocabularies back as lists."""
    if isinstance(node, dict):
        return {k: _as_lists(v) for k, v in node.items()}
    if isinstance(node, np.ndarray) and node.ndim == 1 and node.dtype.kind in "OUS":
        return [str(v) for v in node]
    return node
