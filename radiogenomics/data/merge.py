"""Merging cohorts: one cohort holding the patients of several (e.g. a gene-only and an
image-only one), and their image paths made relative to where the merged h5ad goes."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from radiogenomics import _keys as K
from radiogenomics.data.cohort import (
    _MAX_LISTED,
    CohortError,
    modality_flags,
    resolve,
    setup_cohort,
)

log = logging.getLogger(__name__)


def merge_cohorts(
    cohorts,
    *,
    names: list[str] | None = None,
    prefix: bool = False,
) -> ad.AnnData:
    """One cohort holding the patients of several, e.g. a gene-only and an image-only cohort
    (the combined-GANs setting: `joint.mode: separate`, `image.use_genes: false`).

    `cohorts`: AnnData cohorts as `data.h5ad.read_cohort` gives them (their relative image paths
    resolve against their own root). `names` (default `cohort0`, `cohort1`, ...) name them in
    errors and, with `prefix`, prefix each patient id (`NAME-ID`); patient ids must otherwise
    be unique across the inputs. Rules:

    - genes: every input with expression must have the same genes (the first's order); a union
      would leave NaN expression on patients flagged with expression, which the contract
      refuses, and an intersection would drop genes silently. Inputs without expression add
      patients with NaN rows and `has_expression` False.
    - obs: the union of the columns (NaN where an input lacks one); modality flags per input.
    - covariates: a covariate declared by any input stays one if every patient with expression
      has a value (covariates condition the expression; patients without expression need none);
      one that patients with expression lack (e.g. an image-only cohort's lesion annotations)
      stays an obs column but is no longer declared (logged). Categorical vocabularies are the
      union, numeric statistics recomputed (`setup_cohort`). A column categorical in one input
      and numeric in another is an error.
    - images: `spatial_dims`, `image_size` and `channels` must agree among the inputs with
      images (gene-only inputs take them); image and mask paths become absolute
      (`relative_paths` makes them relative to the folder the merged h5ad goes to).
    - `uns["rg"]`: gene statistics are dropped (refitted when a model needs them), a phantom's
      ground truth only kept when every input carries the same one; provenance lists the inputs.
    The result is set up but not validated: validate it (`validate_cohort`) before use.
    """
    cohorts = list(cohorts)
    if len(cohorts) < 2:
        raise CohortError(f"merge needs at least two cohorts; got {len(cohorts)}")
    names = [f"cohort{i}" for i in range(len(cohorts))] if names is None else list(names)
    if len(names) != len(cohorts):
        raise ValueError(f"{len(names)} names for {len(cohorts)} cohorts")
    for name, adata in zip(names, cohorts, strict=True):
        if K.UNS not in adata.uns:
            raise CohortError(f"{name}: an AnnData without uns['rg'] (not set up as a cohort)")
    flags = [modality_flags(a) for a in cohorts]

    # patient ids
    ids = [
        [f"{n}-{i}" for i in a.obs_names] if prefix else [str(i) for i in a.obs_names]
        for n, a in zip(names, cohorts, strict=True)
    ]
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for name, these in zip(names, ids, strict=True):
        for pid in these:
            if pid in seen:
                clashes.append(f"'{pid}' ({seen[pid]} and {name})")
            else:
                seen[pid] = name
    if clashes:
        raise CohortError(
            f"patient id(s) in more than one input: {', '.join(clashes[:_MAX_LISTED])}"
            + (f" and {len(clashes) - _MAX_LISTED} more" if len(clashes) > _MAX_LISTED else "")
            + "; rename them, or prefix each input's ids with its name (--prefix)"
        )

    # genes
    expressed = [i for i, f in enumerate(flags) if f[K.HAS_EXPRESSION].any()]
    genes = list(map(str, cohorts[expressed[0]].var_names)) if expressed else []
    for i in expressed[1:]:
        other = list(map(str, cohorts[i].var_names))
        if set(other) != set(genes):
            only_a = [g for g in genes if g not in set(other)]
            only_b = [g for g in other if g not in set(genes)]
            raise CohortError(
                f"{names[expressed[0]]} and {names[i]} both have expression but not the same "
                f"genes ({len(only_a)} only in {names[expressed[0]]}: {only_a[:5]}; "
                f"{len(only_b)} only in {names[i]}: {only_b[:5]}); patients with expression "
                "need every gene: select a common gene set first (select-genes)"
            )
    blocks = []
    for adata, f in zip(cohorts, flags, strict=True):
        block = np.full((adata.n_obs, len(genes)), np.nan, np.float32)
        rows = np.flatnonzero(f[K.HAS_EXPRESSION])
        if len(rows) and genes:
            X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
            cols = pd.Index(map(str, adata.var_names)).get_indexer(genes)
            block[rows] = X[rows][:, cols]
        blocks.append(block)

    # images
    imaged = [i for i, f in enumerate(flags) if (f[K.HAS_IMAGE] | f[K.HAS_MASK]).any()]
    rgs = [a.uns[K.UNS] for a in cohorts]
    spatial = {names[i]: int(rgs[i].get(K.SPATIAL_DIMS, 2)) for i in imaged}
    for key, what in ((K.IMAGE_SIZE, "image_size"), (K.CHANNELS, "channels")):
        values = {}
        for i in imaged:
            if rgs[i].get(key) is not None:
                v = rgs[i][key]
                values[names[i]] = list(map(int, v)) if key == K.IMAGE_SIZE else int(v)
        if len({str(v) for v in values.values()}) > 1:
            raise CohortError(
                f"the inputs' images differ in {what}: {values}; merge cohorts whose images "
                "have one size and channel count (resize them first)"
            )
    if len(set(spatial.values())) > 1:
        raise CohortError(f"the inputs' images differ in spatial_dims: {spatial}")
    stacks = {names[i]: rgs[i].get(K.SLICE_AXIS) for i in imaged}
    if len({None if v is None else int(v) for v in stacks.values()}) > 1:
        raise CohortError(
            f"the inputs' image files differ in slice_axis (None: one image per file): {stacks}; "
            "merge cohorts whose files all hold one image or all stack slices the same way"
        )
    dims = next(iter(spatial.values())) if spatial else int(rgs[0].get(K.SPATIAL_DIMS, 2))
    gene_dims = {n: int(r.get(K.SPATIAL_DIMS, 2)) for n, r in zip(names, rgs, strict=True)}
    if not spatial and len(set(gene_dims.values())) > 1:
        raise CohortError(f"the inputs differ in spatial_dims: {gene_dims}")

    def placed(adata, col: str) -> list[str]:
        out = []
        for value in adata.obs[col].astype(object) if col in adata.obs else [""] * adata.n_obs:
            if not isinstance(value, str) or not value or value == "nan":
                out.append("")
                continue
            out.append(str(resolve(adata, value).resolve()))
        return out

    # obs
    parts, kinds = [], {}
    for name, adata, these, f in zip(names, cohorts, ids, flags, strict=True):
        obs = adata.obs.copy()
        obs.index = pd.Index(these, name=adata.obs.index.name)
        for col in (K.IMAGE, K.MASK):
            obs[col] = placed(adata, col)
        for key, values in f.items():
            obs[key] = values
        cov = adata.uns[K.UNS].get(K.COVARIATES, {})
        for kind in (K.CATEGORICAL, K.NUMERIC):
            for key in cov.get(kind, {}):
                if kinds.setdefault(key, (kind, name))[0] != kind:
                    raise CohortError(
                        f"covariate '{key}' is {kinds[key][0]} in {kinds[key][1]} but {kind} "
                        f"in {name}"
                    )
        parts.append(obs)
    categoricals = {
        c for p in parts for c in p.columns if isinstance(p[c].dtype, pd.CategoricalDtype)
    }
    obs = pd.concat(
        [p.astype({c: object for c in p.columns if c in categoricals}) for p in parts],
        axis=0,
        join="outer",
    )
    for col in categoricals:  # the union of the inputs' categories
        obs[col] = obs[col].astype("category")
    for col in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        obs[col] = obs[col].astype(bool)
    if K.SPACING in obs.columns:
        obs[K.SPACING] = obs[K.SPACING].astype(object).where(obs[K.SPACING].notna(), "")
        obs[K.SPACING] = obs[K.SPACING].map(lambda v: "" if str(v) == "nan" else str(v))

    has_expression = obs[K.HAS_EXPRESSION].to_numpy(bool)
    keep = {K.CATEGORICAL: [], K.NUMERIC: []}
    for key, (kind, _) in kinds.items():
        lacking = obs.index[has_expression & obs[key].isna().to_numpy()].tolist()
        if lacking:
            log.warning(
                "covariate '%s' is missing for %d patient(s) with expression (e.g. %s): kept as "
                "an obs column, no longer a covariate",
                key, len(lacking), lacking[:3],
            )  # fmt: skip
        else:
            keep[kind].append(key)

    # uns
    rg: dict = {K.SPATIAL_DIMS: dims}
    if imaged:
        first = rgs[imaged[0]]
        for key in (K.IMAGE_SIZE, K.CHANNELS, K.SPACING, K.SLICE_AXIS):
            if first.get(key) is not None:
                rg[key] = first[key]
        labels = sorted({int(v) for i in imaged for v in rgs[i].get(K.MASK_LABELS, [])})
        if labels:
            rg[K.MASK_LABELS] = labels
    truths = [r.get(K.PHANTOM) for r in rgs]
    if all(t is not None for t in truths) and all(
        t.get("seed") == truths[0].get("seed") for t in truths
    ):
        rg[K.PHANTOM] = truths[0]
    elif any(t is not None for t in truths):
        log.info("the merged cohort drops the phantom ground truth of some inputs")
    rg[K.PROVENANCE] = {"merged_from": ", ".join(names)}

    merged = ad.AnnData(
        X=np.concatenate(blocks, axis=0),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes, name=cohorts[expressed[0]].var_names.name)
                         if expressed else pd.Index([], dtype=str)),
    )  # fmt: skip
    shared = set.intersection(*(set(a.obsm.keys()) for a in cohorts))
    for key in shared:  # e.g. a phantom's programs, when every input has them
        values = [a.obsm[key] for a in cohorts]
        if all(isinstance(v, pd.DataFrame) for v in values):
            merged.obsm[key] = pd.concat(values, axis=0).set_axis(merged.obs_names)
        elif len({np.shape(v)[1:] for v in values}) == 1:
            merged.obsm[key] = np.concatenate([np.asarray(v) for v in values], axis=0)
    merged.uns[K.UNS] = rg
    return setup_cohort(
        merged, spatial_dims=dims, categorical=keep[K.CATEGORICAL], numeric=keep[K.NUMERIC]
    )


def relative_paths(adata: ad.AnnData, folder: str | Path) -> ad.AnnData:
    """Make the cohort's absolute image and mask paths relative to `folder` (where its h5ad
    will be written, which need not exist yet), in place; `write_cohort` then keeps them, so
    the cohort moves with its images."""
    import os

    folder = Path(folder).resolve()
    for col in (K.IMAGE, K.MASK):
        if col not in adata.obs.columns:
            continue
        values = []
        for value in adata.obs[col].astype(object):
            path = resolve(adata, value) if isinstance(value, str) and value else None
            try:
                values.append("" if path is None else os.path.relpath(path.resolve(), folder))
            except ValueError:  # another drive (Windows): stays absolute
                values.append(str(path.resolve()))
        adata.obs[col] = values
    adata.uns[K.UNS][K.ROOT] = str(folder)
    return adata
