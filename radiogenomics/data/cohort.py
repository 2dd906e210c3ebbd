"""Paired cohorts on AnnData: build, set up, validate and split (docs/design.md, section 2); reading and
writing them is `data.h5ad`.

Expression is `X` (patients x genes, float32); rows of patients without expression are NaN and
flagged `has_expression=False`. `obs` holds covariates and the `image`/`mask` paths (relative to
the cohort's root, the folder of its h5ad, or absolute). `uns["rg"]` holds the setup.
"""

from __future__ import annotations

import datetime
import logging
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics._version import __version__
from radiogenomics.data.io import read_image, read_slices
from radiogenomics.data.spacing import record_spacing

log = logging.getLogger(__name__)
_MAX_LISTED = 10


class CohortError(ValueError):
    """A cohort failed validation; the message lists every problem found (patient, column, file)."""


def _fail(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  - ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise CohortError(f"{what}: {len(problems)} problem(s):\n  - {shown}{more}")


def make_cohort(
    expression: pd.DataFrame | None,
    obs: pd.DataFrame,
    *,
    spatial_dims: int = 2,
    categorical: list[str] | tuple = (),
    numeric: list[str] | tuple = (),
    provenance: dict | None = None,
    slice_axis: int | None = None,
) -> ad.AnnData:
    """Assemble a cohort from an expression table (patients x genes) and a per-patient table.

    `obs` is indexed by patient id and may hold `image`/`mask` path columns and covariates.
    Patients in `obs` but not in `expression` get NaN rows and `has_expression=False`; patients
    in `expression` but not in `obs` are added. The setup is written with `setup_cohort`
    (`slice_axis`: the image files stack 2D slices along this axis, see there).
    """
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    # obs first: without an expression table its index is obs's, and the error should say so
    _check_unique(obs.index, "patient table ids")
    if expression is None:
        expression = pd.DataFrame(index=obs.index, dtype=np.float32)
    expression = expression.copy()
    expression.index = expression.index.astype(str)
    expression.columns = expression.columns.astype(str)
    _check_unique(expression.index, "expression table patient ids")
    _check_unique(expression.columns, "gene names")
    bad = [g for g in expression.columns if not pd.api.types.is_numeric_dtype(expression[g])]
    if bad:
        examples = {
            g: expression[g][pd.to_numeric(expression[g], errors="coerce").isna()].iloc[:1].tolist()
            for g in bad[:3]
        }
        raise CohortError(
            f"non-numeric expression for gene(s) {bad[:_MAX_LISTED]}: e.g. {examples}"
        )
    ids = list(obs.index) + [i for i in expression.index if i not in obs.index]
    obs = obs.reindex(ids)
    X = expression.reindex(ids).to_numpy(dtype=np.float32)
    obs[K.HAS_EXPRESSION] = pd.Index(ids).isin(expression.index) if expression.shape[1] else False
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=expression.columns))
    setup_cohort(
        adata,
        spatial_dims=spatial_dims,
        categorical=categorical,
        numeric=numeric,
        provenance=provenance,
        slice_axis=slice_axis,
    )
    return adata


def _check_unique(index: pd.Index, what: str) -> None:
    dup = index[index.duplicated()].unique().tolist()
    if dup:
        raise CohortError(f"duplicate {what}: {dup[:_MAX_LISTED]}")


def setup_cohort(
    adata: ad.AnnData,
    *,
    spatial_dims: int | None = None,
    categorical: list[str] | tuple | None = None,
    numeric: list[str] | tuple | None = None,
    image_key: str | None = None,
    mask_key: str | None = None,
    provenance: dict | None = None,
    slice_axis: int | None = None,
) -> ad.AnnData:
    """Set an AnnData up as a cohort: write `uns["rg"]` (covariate vocabularies and statistics,
    spatial_dims, provenance) and the modality flags, in place.

    Categorical covariates become pandas categoricals (their categories are the vocabulary);
    numeric ones keep the user's scale in `obs` and their mean/std go to `uns` for the models.
    A sparse or non-float32 `X` becomes dense float32 (the contract: NaN rows for patients
    without expression). Gene statistics are not fitted here: `pp.standardize` stores them,
    and a model of a cohort without them fits its own.

    Parameters
    ----------
    adata
        Expression (patients x genes) with the patients' covariates and image/mask paths in
        `obs`; changed in place.
    spatial_dims
        2 or 3, the images' dimensionality (None: keep the stored one, else 2).
    categorical
        obs columns of categorical covariates (None: keep the stored ones).
    numeric
        obs columns of numeric covariates (None: keep the stored ones).
    image_key, mask_key
        obs columns with the image and mask paths, copied to `obs["image"]`/`obs["mask"]`
        (None: those columns, where present).
    provenance
        Entries added to `uns["rg"]["provenance"]` (values as strings).
    slice_axis
        0, 1 or 2: every image and mask file stacks 2D slices along this spatial axis of the
        file (2: the axial slices of a NIfTI volume), each slice one training image of its
        patient (`uns["rg"]["slice_axis"]`; needs spatial_dims 2). None: keep the stored
        setting (absent: one image per file).

    Returns
    -------
    `adata` itself, set up.

    Examples
    --------
    >>> import anndata as ad
    >>> import numpy as np
    >>> import pandas as pd
    >>> from radiogenomics.data.cohort import setup_cohort
    >>> obs = pd.DataFrame({"sex": ["F", "M", "F"], "age": [61, 45, 70]},
    ...                    index=["P1", "P2", "P3"])
    >>> adata = ad.AnnData(np.ones((3, 2), np.float32), obs=obs)
    >>> adata = setup_cohort(adata, categorical=["sex"], numeric=["age"])
    >>> adata.uns["rg"]["covariates"]["categorical"]
    {'sex': ['F', 'M']}
    >>> adata.obs["has_expression"].tolist()
    [True, True, True]
    """
    rg = dict(adata.uns.get(K.UNS, {}))
    old_cov = rg.get(K.COVARIATES, {})
    categorical = list(old_cov.get(K.CATEGORICAL, {}) if categorical is None else categorical)
    numeric = list(old_cov.get(K.NUMERIC, {}) if numeric is None else numeric)
    spatial_dims = int(rg.get(K.SPATIAL_DIMS, 2) if spatial_dims is None else spatial_dims)
    if spatial_dims not in (2, 3):
        raise CohortError(f"spatial_dims must be 2 or 3; got {spatial_dims}")
    obs = adata.obs
    for key, col in ((image_key, K.IMAGE), (mask_key, K.MASK)):
        if key is not None and key != col:
            if key not in obs.columns:
                raise CohortError(
                    f"{col} column '{key}' not found in obs; columns: {list(obs.columns)}"
                )
            obs[col] = obs[key]
    if adata.X is not None and adata.n_vars:
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        if not np.issubdtype(X.dtype, np.number):
            raise CohortError(f"expression X has non-numeric dtype {X.dtype}")
        adata.X = X.astype(np.float32, copy=False)
    for key in list(categorical) + list(numeric):
        if key not in obs.columns:
            raise CohortError(
                f"covariate column '{key}' not found in obs; columns: {list(obs.columns)}"
            )
    both = set(categorical) & set(numeric)
    if both:
        raise CohortError(f"covariate(s) {sorted(both)} declared both categorical and numeric")
    cov_cat, cov_num = {}, {}
    for key in categorical:
        col = obs[key]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("string").astype("category")
        col = col.cat.remove_unused_categories()
        obs[key] = col.cat.rename_categories([str(c) for c in col.cat.categories])
        cov_cat[key] = [str(c) for c in obs[key].cat.categories]
    for key in numeric:
        values = pd.to_numeric(obs[key], errors="coerce")
        bad = obs.index[values.isna() & obs[key].notna()].tolist()
        if bad:
            raise CohortError(
                f"numeric covariate '{key}' has non-numeric values for patient(s) {bad[:_MAX_LISTED]}: {obs.loc[bad[:3], key].tolist()}"
            )
        obs[key] = values.astype(np.float64)
        mean, std = float(np.nanmean(values)), float(np.nanstd(values))
        cov_num[key] = {"mean": mean, "std": std if std > 0 else 1.0}
    for col in (K.IMAGE, K.MASK):
        if col in obs.columns:
            obs[col] = (
                obs[col]
                .astype(object)
                .where(obs[col].notna(), None)
                .map(lambda v: "" if v is None else str(v))
            )
    if K.HAS_EXPRESSION not in obs.columns:
        obs[K.HAS_EXPRESSION] = (
            np.isfinite(np.asarray(adata.X)).any(axis=1) if adata.n_vars else False
        )
    obs[K.HAS_IMAGE] = (obs[K.IMAGE] != "").to_numpy() if K.IMAGE in obs.columns else False
    obs[K.HAS_MASK] = (obs[K.MASK] != "").to_numpy() if K.MASK in obs.columns else False
    for col in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK):
        obs[col] = obs[col].astype(bool)
    rg[K.SPATIAL_DIMS] = spatial_dims
    if slice_axis is not None:
        if slice_axis not in (0, 1, 2) or spatial_dims != 2:
            raise CohortError(
                f"slice_axis={slice_axis!r}: a cohort of slice stacks has spatial_dims 2 (got "
                f"{spatial_dims}) and a slice_axis of 0, 1 or 2 (a spatial axis of its files)"
            )
        rg[K.SLICE_AXIS] = int(slice_axis)
    rg[K.COVARIATES] = {K.CATEGORICAL: cov_cat, K.NUMERIC: cov_num}
    prov = dict(rg.get(K.PROVENANCE, {}))
    prov.setdefault(
        "created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    )
    prov.setdefault("library", f"radiogenomics {__version__}")
    prov.update({k: str(v) for k, v in (provenance or {}).items()})
    rg[K.PROVENANCE] = prov
    adata.uns[K.UNS] = rg
    return adata


def cohort_root(adata: ad.AnnData, root: str | Path | None = None) -> Path:
    """The folder relative image/mask paths are resolved against."""
    if root is not None:
        return Path(root)
    return Path(adata.uns.get(K.UNS, {}).get(K.ROOT, "."))


def resolve(adata: ad.AnnData, value: str, root: str | Path | None = None) -> Path:
    path = Path(value)
    return path if path.is_absolute() else cohort_root(adata, root) / path


def covariate_keys(adata: ad.AnnData) -> tuple[list[str], list[str]]:
    cov = adata.uns.get(K.UNS, {}).get(K.COVARIATES, {})
    return list(cov.get(K.CATEGORICAL, {})), list(cov.get(K.NUMERIC, {}))


def _given(paths: pd.Series) -> np.ndarray:
    return (paths.notna() & (paths.astype(str) != "")).to_numpy(bool)


def modality_flags(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """`has_expression`, `has_image`, `has_mask` per patient; a flag absent from `obs` (a cohort
    written by another tool, or an older GeneGAN sample) is derived from the data: finite
    expression, a non-empty `image`/`mask` path."""
    obs = adata.obs
    flags = {}
    for flag, col in ((K.HAS_IMAGE, K.IMAGE), (K.HAS_MASK, K.MASK)):
        if flag in obs.columns:
            flags[flag] = obs[flag].fillna(False).to_numpy(bool)
        elif col in obs.columns:
            flags[flag] = _given(obs[col])
        else:
            flags[flag] = np.zeros(adata.n_obs, bool)
    if K.HAS_EXPRESSION in obs.columns:
        flags[K.HAS_EXPRESSION] = obs[K.HAS_EXPRESSION].fillna(False).to_numpy(bool)
    elif adata.n_vars:
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        numeric = np.issubdtype(X.dtype, np.number)
        flags[K.HAS_EXPRESSION] = (
            np.isfinite(X).any(axis=1) if numeric else np.ones(adata.n_obs, bool)
        )
    else:
        flags[K.HAS_EXPRESSION] = np.zeros(adata.n_obs, bool)
    return {k: flags[k] for k in (K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK)}


def add_modality_flags(adata: ad.AnnData) -> ad.AnnData:
    """Write the flags `modality_flags` derives into `obs` where they are absent (in place)."""
    for key, values in modality_flags(adata).items():
        if key not in adata.obs.columns:
            adata.obs[key] = values
    return adata


# --------------------------------------------------------------------------------------------
# validation


def validate_cohort(
    adata: ad.AnnData,
    *,
    root: str | Path | None = None,
    check_files: bool = True,
    progress: bool = True,
) -> dict:
    """Check a cohort against the data contract; raise CohortError listing every problem.

    Checks: unique patient ids, numeric finite expression for patients flagged with expression,
    declared covariates present with their vocabularies, image/mask files present and readable
    with `spatial_dims` spatial axes, masks with the image's spatial shape and integer labels.
    In a cohort of slice stacks (`uns["rg"]["slice_axis"]`), each mask stacks as many slices
    as its image. With `check_files`, also records `image_size`, `channels` and mask labels in
    `uns["rg"]` (and each patient's slice count in `obs["n_slices"]`). Returns a summary dict
    (with `slices` and `slices_per_patient` for a cohort of slice stacks).
    """
    if K.UNS not in adata.uns:
        raise CohortError(
            "cohort has no uns['rg'] setup; build it with make_cohort or setup_cohort (command "
            "line: radiogenomics cohort setup IN.h5ad --categorical ... --numeric ... --out OUT.h5ad)"
        )
    rg = adata.uns[K.UNS]
    flags = modality_flags(adata)
    problems: list[str] = []
    if adata.n_obs == 0:
        problems.append("the cohort has no patients")
    dup = adata.obs_names[adata.obs_names.duplicated()].unique().tolist()
    if dup:
        problems.append(f"duplicate patient ids: {dup[:_MAX_LISTED]}")
    dupg = adata.var_names[adata.var_names.duplicated()].unique().tolist()
    if dupg:
        problems.append(f"duplicate gene names: {dupg[:_MAX_LISTED]}")
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    if adata.n_vars and not np.issubdtype(X.dtype, np.number):
        problems.append(f"expression X has non-numeric dtype {X.dtype}")
    elif adata.n_vars:
        flagged = flags[K.HAS_EXPRESSION]
        rows, cols = np.nonzero(~np.isfinite(X) & flagged[:, None])
        for r, c in list(zip(rows, cols, strict=True))[:_MAX_LISTED]:
            problems.append(
                f"patient '{adata.obs_names[r]}': expression of gene '{adata.var_names[c]}' is {X[r, c]}"
            )
        if len(rows) > _MAX_LISTED:
            problems.append(f"... {len(rows)} non-finite expression values in all")
    for key, vocab in rg.get(K.COVARIATES, {}).get(K.CATEGORICAL, {}).items():
        if key not in adata.obs.columns:
            problems.append(f"covariate column '{key}' declared in uns['rg'] is missing from obs")
            continue
        unseen = sorted(set(adata.obs[key].dropna().astype(str)) - set(map(str, vocab)))
        if unseen:
            problems.append(
                f"covariate '{key}' has values {unseen} outside its vocabulary {list(vocab)}"
            )
        problems += _missing_covariate(adata, key, flags)
    for key in rg.get(K.COVARIATES, {}).get(K.NUMERIC, {}):
        if key not in adata.obs.columns:
            problems.append(f"covariate column '{key}' declared in uns['rg'] is missing from obs")
        elif not pd.api.types.is_numeric_dtype(adata.obs[key]):
            problems.append(f"numeric covariate '{key}' has dtype {adata.obs[key].dtype}")
        else:
            problems += _missing_covariate(adata, key, flags)
    for flag, col in ((K.HAS_IMAGE, K.IMAGE), (K.HAS_MASK, K.MASK)):
        paths = adata.obs[col] if col in adata.obs.columns else pd.Series("", adata.obs_names)
        empty = adata.obs_names[flags[flag] & ~_given(paths)].tolist()
        if empty:
            problems.append(f"patient(s) {empty[:_MAX_LISTED]}: {flag} is True but no {col} path")
    summary = {
        "patients": adata.n_obs,
        "genes": adata.n_vars,
        "with_expression": int(flags[K.HAS_EXPRESSION].sum()),
        "with_image": int(flags[K.HAS_IMAGE].sum()),
        "with_mask": int(flags[K.HAS_MASK].sum()),
        "paired": int((flags[K.HAS_EXPRESSION] & flags[K.HAS_IMAGE]).sum()),
        "spatial_dims": int(rg.get(K.SPATIAL_DIMS, 2)),
    }
    slice_axis = rg.get(K.SLICE_AXIS)
    if slice_axis is not None and (
        summary["spatial_dims"] != 2 or str(slice_axis) not in ("0", "1", "2")
    ):
        problems.append(
            f"uns['rg']['slice_axis'] is {slice_axis!r}: a cohort of slice stacks has "
            f"spatial_dims 2 (it has {summary['spatial_dims']}) and a slice_axis of 0, 1 or 2"
        )
        check_files = False  # the files cannot be read as stacks of such a setup
    if check_files and summary["with_image"] + summary["with_mask"]:
        problems += _check_files(adata, flags, root, progress, summary)
    _fail(problems, "cohort validation failed")
    return summary


def _missing_covariate(adata, key: str, flags: dict) -> list[str]:
    # covariates condition the expression: a patient without expression (an image-only
    # patient of a merged cohort, say) may lack the expression cohort's covariates
    missing = adata.obs_names[adata.obs[key].isna().to_numpy() & flags[K.HAS_EXPRESSION]].tolist()
    if not missing:
        return []
    return [
        f"covariate '{key}' is missing for patient(s) {missing[:_MAX_LISTED]} (fill or drop them: the models need every covariate)"
    ]


def slice_axis_of(adata_or_rg) -> int | None:
    """The axis along which a cohort's files stack 2D slices (`uns["rg"]["slice_axis"]`), or
    None for a cohort of one image per file."""
    rg = adata_or_rg.uns.get(K.UNS, {}) if hasattr(adata_or_rg, "uns") else adata_or_rg
    axis = rg.get(K.SLICE_AXIS)
    return None if axis is None else int(axis)


def _read(path, spatial_dims: int, slice_axis: int | None):
    """A file as `(C, *spatial)`, or a stack as `(C, S, H, W)`, with its spacing."""
    if slice_axis is None:
        return read_image(path, spatial_dims)
    stack, spacing = read_slices(path, slice_axis)
    return np.moveaxis(stack, 0, 1), spacing


def _check_files(adata, flags, root, progress, summary) -> list[str]:
    rg = adata.uns[K.UNS]
    spatial_dims = int(rg.get(K.SPATIAL_DIMS, 2))
    slice_axis = slice_axis_of(rg)
    first = 1 if slice_axis is None else 2  # where the spatial axes of what `_read` gives begin
    n_slices: dict[str, int] = {}
    obs = adata.obs
    problems: list[str] = []
    shapes: Counter = Counter()
    channels: Counter = Counter()
    labels: set = set()
    # per patient with an image: (channels, file, spatial shape, spacing from the file or None)
    seen: dict[str, tuple] = {}
    rows = np.flatnonzero(flags[K.HAS_IMAGE] | flags[K.HAS_MASK])
    for i in tqdm(rows, desc="checking images", disable=not progress, leave=False):
        pid, row = obs.index[i], obs.iloc[i]
        image = mask = None
        if flags[K.HAS_MASK][i] and not flags[K.HAS_IMAGE][i]:
            problems.append(f"patient '{pid}': has a mask but no image")
        for col, flag in ((K.IMAGE, K.HAS_IMAGE), (K.MASK, K.HAS_MASK)):
            value = row.get(col)
            if not flags[flag][i] or not isinstance(value, str) or not value:
                continue  # a flag without a path is reported above
            path = resolve(adata, row[col], root)
            try:
                arr, spacing = _read(path, spatial_dims, slice_axis)
            except (OSError, ValueError) as err:
                problems.append(f"patient '{pid}', {col} {path}: {err}")
                continue
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:  # a NaN voxel would shift every feature and statistic computed on it
                problems.append(
                    f"patient '{pid}', {col} {path}: {bad} non-finite voxel(s) (NaN or inf)"
                )
                continue
            if col == K.IMAGE:
                image = arr
                seen[pid] = (arr.shape[0], row[col], tuple(arr.shape[first:]), spacing)
                if slice_axis is not None:
                    n_slices[pid] = int(arr.shape[1])
            else:
                mask = arr
        if image is not None:
            shapes[tuple(image.shape[first:])] += 1
            channels[image.shape[0]] += 1
        if mask is not None:
            if mask.shape[0] != 1:
                problems.append(
                    f"patient '{pid}': mask {row[K.MASK]} has {mask.shape[0]} channels; a mask has one"
                )
            if slice_axis is not None and image is not None and mask.shape[1] != image.shape[1]:
                problems.append(
                    f"patient '{pid}': image {row[K.IMAGE]} stacks {image.shape[1]} slices but "
                    f"mask {row[K.MASK]} stacks {mask.shape[1]} (slice_axis {slice_axis}); "
                    "every slice needs its mask"
                )
            elif image is not None and mask.shape[first:] != image.shape[first:]:
                problems.append(
                    f"patient '{pid}': image {row[K.IMAGE]} has spatial shape "
                    f"{tuple(image.shape[first:])} but mask {row[K.MASK]} has "
                    f"{tuple(mask.shape[first:])}"
                )
            # The models read a mask as lesion (> 0.5) or not: 0.5 would vanish and labels
            # {1, 2} would merge into one lesion, so only binary masks pass (0/1, or 0/255 as
            # 8-bit images store them). rint: 0.9999999 read back is 1.
            values = np.unique(mask)
            found = {int(v) for v in np.rint(values)}
            if not np.allclose(values, np.rint(values)) or not (
                found <= {0, 1} or found <= {0, 255}
            ):
                shown = [round(float(v), 4) for v in values[:6]]
                more = "..." if len(values) > 6 else ""
                problems.append(
                    f"patient '{pid}': mask {row[K.MASK]} is not binary (values {shown}{more}); "
                    "a mask is 0 outside the lesion and 1 (or 255) inside: threshold it, or "
                    "keep one lesion label"
                )
            else:
                labels.update(found)
    if shapes:
        size = list(shapes.most_common(1)[0][0])
        common = int(channels.most_common(1)[0][0])
        rg[K.IMAGE_SIZE] = size
        rg[K.CHANNELS] = common
        summary["image_size"] = size
        summary["image_sizes_seen"] = len(shapes)
        problems += [
            f"patient '{pid}': image {file} has {c} channel(s) but the cohort's other images have "
            f"{common} (images differ in channel count: {dict(channels)})"
            for pid, (c, file, _, _) in seen.items()
            if c != common
        ]
        names = rg.get(K.CHANNEL_NAMES)
        if names is not None and len(names) != common:
            problems.append(
                f"uns['rg']['{K.CHANNEL_NAMES}'] names {len(names)} channel(s) {list(names)} "
                f"but the images have {common}"
            )
        record_spacing(adata, seen, size)
    if labels:
        rg[K.MASK_LABELS] = sorted(labels)
        summary["mask_labels"] = sorted(labels)
    if slice_axis is not None:
        adata.obs[K.N_SLICES] = [n_slices.get(pid, 0) for pid in obs.index]
        counts = np.array(list(n_slices.values()) or [0])
        summary["slices"] = int(counts.sum())
        summary["slices_per_patient"] = {
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "max": int(counts.max()),
        }
    return problems


def check_covariates(adata_or_uns, values: dict) -> dict:
    """Check requested covariate values (at sampling time) against the cohort's vocabularies."""
    uns = adata_or_uns.uns if hasattr(adata_or_uns, "uns") else adata_or_uns
    cov = uns.get(K.UNS, uns).get(K.COVARIATES, {})
    cat, num = cov.get(K.CATEGORICAL, {}), cov.get(K.NUMERIC, {})
    out = {}
    for key, value in values.items():
        if key in cat:
            allowed = [str(v) for v in cat[key]]
            if str(value) not in allowed:
                raise ValueError(
                    f"covariate '{key}' has no category {value!r}; the cohort's categories are {allowed}"
                )
            out[key] = str(value)
        elif key in num:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"numeric covariate '{key}' needs a number; got {value!r}"
                ) from None
        else:
            raise ValueError(
                f"unknown covariate '{key}'; the cohort's covariates are {sorted(cat) + sorted(num)}"
            )
    return out


def split_cohort(
    adata: ad.AnnData,
    test_fraction: float = 0.2,
    *,
    stratify: str | None = None,
    group: str | None = None,
    seed: int = 0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Patient-level (train, test) split by `radiogenomics.data.split.held_out` (the split the
    models use too): `stratify` names a categorical obs column, `group` one whose rows stay on
    one side. Both halves keep the cohort's setup (covariate vocabularies and statistics), so
    a model trained on one accepts the other; gene statistics (`pp.standardize`) are dropped.
    """
    from radiogenomics.data.split import held_out

    test = held_out(adata.obs, test_fraction, seed, stratify=stratify, group=group)
    train, test = adata[~test].copy(), adata[test].copy()
    for half in (train, test):
        # gene statistics of the whole cohort would carry the test patients into the
        # training scale: each half fits its own when a model needs it
        half.uns.get(K.UNS, {}).pop(K.GENE_STATS, None)
    return train, test
