"""Voxel spacing of a cohort's images (docs/design.md, section 2): per patient in `obs["spacing"]` as
text ("0.5,0.7,2"), the cohort default in `uns["rg"]["spacing"]`.

Both refer to the cohort's grid, `uns["rg"]["image_size"]`: the models see every image resized
to it, so a file of another shape has its spacing scaled (the same field of view). Images made
on another grid (a model's data.image_size) move the spacing with `regrid`.
"""

from __future__ import annotations

from collections import Counter

import anndata as ad
import numpy as np

from radiogenomics import _keys as K


def record_spacing(adata: ad.AnnData, seen: dict, size: list[int]) -> None:
    """obs["spacing"] and the cohort default uns["rg"]["spacing"] from the files' affines, on
    the cohort's grid `size`: a file of another shape is resized to it by the dataset, so its
    spacing scales (the same field of view). Formats without geometry leave them as they were."""
    on_grid = {
        pid: _regrid(spacing, shape, size)
        for pid, (_, _, shape, spacing) in seen.items()
        if spacing is not None and len(shape) == len(size)
    }
    if not on_grid:
        return
    adata.obs[K.SPACING] = [format_spacing(on_grid.get(pid)) for pid in adata.obs_names]
    native = [tuple(on_grid[p]) for p, v in seen.items() if p in on_grid and list(v[2]) == size]
    default = Counter(native or map(tuple, on_grid.values())).most_common(1)[0][0]
    adata.uns[K.UNS][K.SPACING] = list(default)


def format_spacing(spacing) -> str:
    """Spacing as obs text, "0.5,0.7,2"; "" for none."""
    return "" if spacing is None else ",".join(f"{float(v):.6g}" for v in spacing)


def parse_spacing(value) -> tuple[float, ...] | None:
    """A spacing from obs text or an uns list; None for "", NaN or None."""
    if value is None or isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("", "nan", "none"):
            return None
        value = value.split(",")
    try:
        spacing = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"spacing {value!r} is not like '0.5,0.7,2'") from None
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"spacing {value!r} must be positive numbers")
    return spacing


def _regrid(spacing, shape, size) -> tuple[float, ...]:
    return tuple(float(f"{s * n / g:.6g}") for s, n, g in zip(spacing, shape, size, strict=True))


def default_spacing(adata_or_rg, image_size: list[int]) -> list[float] | None:
    """The cohort's default spacing moved onto the grid `image_size`; None when unknown."""
    rg = adata_or_rg.uns.get(K.UNS, {}) if hasattr(adata_or_rg, "uns") else adata_or_rg
    spacing = parse_spacing(rg.get(K.SPACING))
    old = list(rg.get(K.IMAGE_SIZE, image_size))
    if spacing is None or len(old) != len(image_size):
        return spacing if spacing is None else list(spacing)
    return list(_regrid(spacing, old, image_size))


def regrid(adata: ad.AnnData, image_size: list[int]) -> ad.AnnData:
    """Set `uns["rg"]["image_size"]` of a cohort whose images are (re)made on the grid
    `image_size` (a model's data.image_size), scaling its spacing (obs and uns) to keep each
    patient's field of view."""
    rg = adata.uns.setdefault(K.UNS, {})
    old = [int(v) for v in rg.get(K.IMAGE_SIZE, image_size)]
    size = [int(v) for v in image_size]
    if old != size and len(old) == len(size):
        if rg.get(K.SPACING) is not None:
            rg[K.SPACING] = list(_regrid(parse_spacing(rg[K.SPACING]), old, size))
        if K.SPACING in adata.obs:
            adata.obs[K.SPACING] = [
                format_spacing(None if sp is None else _regrid(sp, old, size))
                for sp in map(parse_spacing, adata.obs[K.SPACING])
            ]
    rg[K.IMAGE_SIZE] = size
    return adata


def patient_spacings(adata: ad.AnnData) -> list:
    """Each patient's spacing: its own (obs), else the cohort default (uns), else None."""
    default = parse_spacing(adata.uns.get(K.UNS, {}).get(K.SPACING))
    if K.SPACING not in adata.obs:
        return [default] * adata.n_obs
    out = []
    for pid, value in adata.obs[K.SPACING].items():
        try:
            out.append(parse_spacing(value) or default)
        except ValueError as err:
            raise ValueError(f"patient '{pid}': obs column '{K.SPACING}': {err}") from None
    return out
