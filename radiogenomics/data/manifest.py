"""Manifests: where a cohort's expression, clinical and image files are and how they join.

A YAML manifest follows the `Manifest` dataclasses below (schema and examples in
`data_manifests/README.md`); a CSV manifest is a patient table with an `id` column, optional
`image`/`mask` path columns, and covariate columns (numeric dtype = numeric covariate, anything
else = categorical). Paths are relative to the manifest's `root`, itself relative to the manifest,
or to the `root=` folder given to `build_cohort`, which overrides it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import yaml

from radiogenomics import _keys as K
from radiogenomics.config import from_dict
from radiogenomics.data.cohort import CohortError, make_cohort

log = logging.getLogger(__name__)


@dataclass
class IdRule:
    """How raw ids in a table become patient ids (applied in this order)."""

    # Keep the first group of this regex, e.g. '^(TCGA-..-....)' turns sample barcodes into patients.
    id_regex: str | None = None
    # Literal replacements, e.g. {'_': '-'}.
    id_replace: dict[str, str] = field(default_factory=dict)


@dataclass
class ExpressionSpec(IdRule):
    path: str = ""
    orientation: Literal["samples_x_genes", "genes_x_samples"] = "samples_x_genes"
    # Column with sample ids (samples_x_genes) or gene symbols (genes_x_samples); default: the first.
    index_column: str | None = None
    # Columns to ignore (annotation columns of a genes x samples table, say).
    drop_columns: list[str] = field(default_factory=list)
    # Rows of a genes x samples table that are per-sample annotations, as {row label: obs column}.
    covariate_rows: dict[str, str] = field(default_factory=dict)
    sep: str | None = None
    # NaN expression: error names the cells; drop_genes removes genes with any NaN;
    # impute_median fills each gene's NaN with its median (recorded in provenance).
    missing: Literal["error", "drop_genes", "impute_median"] = "error"
    # Several samples of one patient after id_regex: error, or keep the first.
    duplicates: Literal["error", "first"] = "error"


@dataclass
class ClinicalSpec(IdRule):
    path: str = ""
    id_column: str = ""
    sep: str | None = None
    # 0-based data rows to skip after the header (extra header lines of TCGA BCR tables).
    skip_rows: list[int] = field(default_factory=list)
    na_values: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    # Value recoding per column, e.g. {gender: {1: female, 2: male}}.
    recode: dict[str, dict] = field(default_factory=dict)
    # Columns (the table's names) carried into obs under those names as text labels, also when
    # `rename` makes a covariate of them: annotations for maps (`map --subtypes`), never
    # covariates.
    annotations: list[str] = field(default_factory=list)


@dataclass
class ImageSpec(IdRule):
    # A table of patients with image (and mask) path columns; or leave it empty and give templates.
    table: str | None = None
    id_column: str = "id"
    # Column name in `table`, or a path template with {id}, e.g. 'images/{id}.nii.gz'.
    image: str = "image"
    mask: str | None = None
    # The channels' names in order (MRI sequences, say), shown on the figures; recorded in
    # uns['rg']['channel_names'].
    channel_names: list[str] = field(default_factory=list)


@dataclass
class CovariateSpec:
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    # error names the patients; drop_patients removes them; fill uses an 'unknown' category or
    # the median (recorded in provenance).
    missing: Literal["error", "drop_patients", "fill"] = "error"


@dataclass
class Manifest:
    name: str = "cohort"
    description: str = ""
    root: str = "."
    spatial_dims: Literal[2, 3] = 2
    # Every image and mask file stacks 2D slices along this spatial axis of the file (2: the
    # axial slices of a NIfTI volume), each slice one image of its patient; none: one image
    # per file. Declared, never guessed from a file's shape (docs/data.md).
    slice_axis: Literal[0, 1, 2] | None = None
    expression: ExpressionSpec | None = None
    clinical: ClinicalSpec | None = None
    images: ImageSpec | None = None
    covariates: CovariateSpec = field(default_factory=CovariateSpec)
    # Which patients make the cohort: everyone with expression or an image (union), both
    # (paired), expression only, images only, or every row of the clinical table.
    patients: Literal["union", "paired", "expression", "images", "clinical"] = "union"


def load_manifest(path: str | Path) -> tuple[Manifest, Path]:
    """Parse a YAML manifest; return it and its resolved root folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        manifest = from_dict(Manifest, data)
    except UnicodeDecodeError:
        raise ValueError(
            f"manifest {path} is not a text file; a manifest is YAML or CSV "
            "(data_manifests/README.md)"
        ) from None
    except (yaml.YAMLError, ValueError) as err:
        raise ValueError(f"manifest {path}: {err}") from None
    return manifest, (path.parent / manifest.root).resolve()


def build_cohort(
    path: str | Path, *, spatial_dims: int | None = None, root: str | Path | None = None
) -> ad.AnnData:
    """Build a cohort AnnData from a YAML or CSV manifest (not yet validated against its files).

    `root` overrides the folder the manifest's paths are relative to (its `root` key, or the CSV
    manifest's folder), e.g. a folder written by `prepare_shared` or data kept elsewhere.
    """
    path = Path(path)
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(f"cohort root folder not found: {root}")
    if path.suffix.lower() == ".h5ad":
        _not_a_manifest(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return _build_from_table(path, spatial_dims, None if root is None else Path(root).resolve())
    manifest, manifest_root = load_manifest(path)
    root = manifest_root if root is None else Path(root).resolve()
    if spatial_dims is not None:
        manifest.spatial_dims = spatial_dims
    try:
        return _build(manifest, root, source=path)
    except (CohortError, FileNotFoundError):
        raise
    except ValueError as err:
        raise ValueError(f"manifest {path}: {err}") from None


def _not_a_manifest(path: Path) -> None:
    """An .h5ad is already an AnnData: say which command takes it instead of `build`."""
    from radiogenomics.data.h5ad import read_h5ad, setup_command

    adata = read_h5ad(path)
    if K.UNS in adata.uns:
        raise ValueError(
            f"{path} is already a cohort .h5ad, not a manifest; check it with "
            f"`radiogenomics cohort validate {path}`"
        )
    raise ValueError(
        f"{path} is an AnnData .h5ad, not a manifest; set it up as a cohort with "
        f"`{setup_command(path, adata.obs)}`"
    )


def _map_ids(ids, rule: IdRule, what: str) -> list[str]:
    out = []
    pattern = re.compile(rule.id_regex) if rule.id_regex else None
    for raw in ids:
        value = str(raw).strip()
        if pattern is not None:
            m = pattern.search(value)
            if m is None:
                raise ValueError(f"{what}: id {value!r} does not match id_regex {rule.id_regex!r}")
            value = m.group(1) if m.groups() else m.group(0)
        for old, new in rule.id_replace.items():
            value = value.replace(str(old), str(new))
        out.append(value)
    return out


def _sep(path: Path, sep: str | None) -> str | None:
    if sep is not None:
        return sep
    name = path.name.lower()
    return "\t" if name.endswith((".tsv", ".txt", ".tsv.gz", ".txt.gz")) else ","


def _file(root: Path, rel: str, what: str) -> Path:
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


def read_expression(spec: ExpressionSpec, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an expression table as (patients x genes, per-patient annotations): the annotations
    are the covariate_rows of a table, or the obs columns of an .h5ad."""
    path = _file(root, spec.path, "expression")
    if path.suffix == ".h5ad":
        a = ad.read_h5ad(path)
        X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
        table = pd.DataFrame(X, index=a.obs_names.astype(str), columns=a.var_names)
        # the library's own columns (paths relative to that h5ad, flags) are rebuilt here
        own = [K.IMAGE, K.MASK, K.HAS_EXPRESSION, K.HAS_IMAGE, K.HAS_MASK, K.SPACING]
        annotations = a.obs.drop(columns=[c for c in own if c in a.obs.columns])
        annotations.index = table.index
    else:
        raw = pd.read_csv(path, sep=_sep(path, spec.sep), dtype=str, keep_default_na=True)
        index_col = spec.index_column or raw.columns[0]
        if index_col not in raw.columns:
            raise ValueError(
                f"expression table {path} has no column '{index_col}'; columns start {list(raw.columns[:5])}"
            )
        missing_drop = [c for c in spec.drop_columns if c not in raw.columns]
        if missing_drop:
            raise ValueError(f"expression table {path}: drop_columns {missing_drop} not found")
        raw = raw.drop(columns=spec.drop_columns).set_index(index_col)
        if spec.orientation == "genes_x_samples":
            absent = [r for r in spec.covariate_rows if r not in raw.index]
            if absent:
                raise ValueError(
                    f"expression table {path}: covariate_rows {absent} not found in '{index_col}'"
                )
            annotations = raw.loc[list(spec.covariate_rows)].T.rename(columns=spec.covariate_rows)
            raw = raw.drop(index=list(spec.covariate_rows)).T
        else:
            annotations = pd.DataFrame(index=raw.index)
        table = raw.apply(pd.to_numeric, errors="coerce")
        bad = table.isna() & raw.notna()
        if bad.any().any():
            gene = bad.any().idxmax()
            sample = bad[gene].idxmax()
            raise CohortError(
                f"expression table {path}: non-numeric value {raw.loc[sample, gene]!r} for gene '{gene}', sample '{sample}'"
            )
        table.index = table.index.astype(str)
        annotations.index = table.index
    ids = _map_ids(table.index, spec, f"expression table {path}")
    table.index = ids
    annotations.index = ids
    dup = table.index[table.index.duplicated()].unique().tolist()
    if dup and spec.duplicates == "error":
        raise CohortError(
            f"expression table {path}: several samples map to patient(s) {dup[:10]}; set expression.duplicates: first to keep the first"
        )
    keep = ~table.index.duplicated()
    table, annotations = table[keep], annotations[keep]
    dupg = table.columns[table.columns.duplicated()].unique().tolist()
    if dupg:
        raise CohortError(f"expression table {path}: duplicate gene names {dupg[:10]}")
    return table.astype(np.float32), annotations


def _handle_missing_expression(table: pd.DataFrame, how: str, provenance: dict) -> pd.DataFrame:
    nan = table.isna()
    if not nan.any().any():
        return table
    if how == "error":
        cells = [(p, g) for g in table.columns[nan.any()] for p in table.index[nan[g]]][:10]
        raise CohortError(
            f"expression has {int(nan.sum().sum())} missing values, e.g. (patient, gene) {cells}; "
            f"set expression.missing to drop_genes or impute_median"
        )
    if how == "drop_genes":
        dropped = table.columns[nan.any()].tolist()
        provenance["expression_missing"] = f"dropped {len(dropped)} genes with missing values"
        return table.drop(columns=dropped)
    provenance["expression_missing"] = (
        f"imputed {int(nan.sum().sum())} missing values with gene medians"
    )
    return table.fillna(table.median())


def read_clinical(spec: ClinicalSpec, root: Path) -> pd.DataFrame:
    path = _file(root, spec.path, "clinical")
    skip = [r + 1 for r in spec.skip_rows]  # +1: pandas counts the header line
    # ids as text: '001' must stay '001' to join the (text) expression and image ids
    table = pd.read_csv(
        path,
        sep=_sep(path, spec.sep),
        skiprows=skip,
        na_values=spec.na_values,
        dtype={spec.id_column: str},
    )
    if spec.id_column not in table.columns:
        raise ValueError(
            f"clinical table {path} has no id column '{spec.id_column}'; columns start {list(table.columns[:8])}"
        )
    table.index = _map_ids(table.pop(spec.id_column), spec, f"clinical table {path}")
    dup = table.index[table.index.duplicated()].unique().tolist()
    if dup:
        raise CohortError(f"clinical table {path}: duplicate patient ids {dup[:10]}")
    for col, mapping in spec.recode.items():
        if col not in table.columns:
            raise ValueError(f"clinical table {path}: recode column '{col}' not found")
        lookup = {str(k): v for k, v in mapping.items()}
        table[col] = table[col].map(lambda v, lk=lookup: lk.get(_key(v), v) if pd.notna(v) else v)
    absent = [c for c in spec.annotations if c not in table.columns]
    if absent:
        raise ValueError(f"clinical table {path}: annotation column(s) {absent} not found")
    clash = [c for c in spec.annotations if c in spec.rename.values()]
    if clash:
        raise ValueError(
            f"clinical: annotation(s) {clash} are also rename targets; name them apart"
        )
    labels = table[list(spec.annotations)].map(lambda v: _key(v) if pd.notna(v) else np.nan)
    table = table.rename(columns=spec.rename)
    for col in spec.annotations:
        table[col] = labels[col].astype(object)
    return table


def _key(value) -> str:
    # 1.0 read from a CSV with blanks should match a recode key of 1
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def read_images(spec: ImageSpec, root: Path, candidates: list[str]) -> pd.DataFrame:
    """Per-patient image/mask paths (relative to root), from a table or from {id} templates."""
    cols = {K.IMAGE: spec.image, K.MASK: spec.mask}
    if spec.table:
        path = _file(root, spec.table, "image table")
        table = pd.read_csv(path, sep=_sep(path, None), dtype=str)
        for want in [spec.id_column] + [c for c in cols.values() if c]:
            if want not in table.columns:
                raise ValueError(
                    f"image table {path} has no column '{want}'; columns: {list(table.columns)}"
                )
        ids = _map_ids(table[spec.id_column], spec, f"image table {path}")
        out = pd.DataFrame(
            {k: table[v].fillna("").to_numpy() if v else "" for k, v in cols.items()}, index=ids
        )
        dup = out.index[out.index.duplicated()].unique().tolist()
        if dup:
            raise CohortError(f"image table {path}: several rows for patient(s) {dup[:10]}")
        return out
    if "{id}" not in spec.image:
        raise ValueError(
            f"images.image {spec.image!r} is neither a column of an images.table nor a template with {{id}}"
        )
    rows = {}
    for pid in candidates:
        image = spec.image.format(id=pid)
        if (root / image).exists():
            mask = spec.mask.format(id=pid) if spec.mask else ""
            rows[pid] = {K.IMAGE: image, K.MASK: mask if mask and (root / mask).exists() else ""}
    if not rows:
        raise FileNotFoundError(
            f"no image file matches the template {spec.image!r} under {root} for any of {len(candidates)} patients"
        )
    return pd.DataFrame.from_dict(rows, orient="index")


def _build(m: Manifest, root: Path, source: Path) -> ad.AnnData:
    provenance = {"manifest": str(source.resolve()), "name": m.name}
    expression, annotations = (None, pd.DataFrame())
    if m.expression is not None:
        expression, annotations = read_expression(m.expression, root)
    clinical = read_clinical(m.clinical, root) if m.clinical is not None else pd.DataFrame()
    candidates = list(
        dict.fromkeys(
            list(expression.index if expression is not None else []) + list(clinical.index)
        )
    )
    images = (
        read_images(m.images, root, candidates)
        if m.images is not None
        else pd.DataFrame(columns=[K.IMAGE, K.MASK])
    )
    expr_ids = list(expression.index) if expression is not None else []
    img_ids = list(images.index)
    img_set = set(img_ids)
    ids = {
        "union": list(dict.fromkeys(expr_ids + img_ids)),
        "paired": [i for i in expr_ids if i in img_set],
        "expression": expr_ids,
        "images": img_ids,
        "clinical": list(clinical.index),
    }[m.patients]
    if not ids:
        raise CohortError(
            f"manifest '{m.name}' selects no patients (patients: {m.patients}); check the id rules that join the tables"
        )
    obs = pd.DataFrame(index=pd.Index(ids, name="patient"))
    if len(annotations.columns):
        obs = obs.join(annotations)
    if len(clinical.columns):
        overlap = [c for c in clinical.columns if c in obs.columns]
        obs = obs.join(clinical.drop(columns=overlap))
    if m.images is not None:
        # the images spec decides the paths, also when the clinical table is the image table
        obs = obs.drop(columns=[c for c in images.columns if c in obs.columns]).join(images)
    annotations_ = list(m.clinical.annotations) if m.clinical is not None else []
    covariate = [c for c in annotations_ if c in m.covariates.categorical + m.covariates.numeric]
    if covariate:
        raise ValueError(
            f"clinical.annotations {covariate} are also covariates; annotations never are"
        )
    if annotations_:
        provenance["annotations"] = annotations_
    obs = _writable(_handle_missing_covariates(obs, m.covariates, provenance))
    for col in annotations_:  # text labels, missing values allowed: categorical
        obs[col] = obs[col].astype("category")
    if expression is not None:
        expression = _handle_missing_expression(
            expression.loc[[i for i in obs.index if i in expression.index]],
            m.expression.missing,
            provenance,
        )
    adata = make_cohort(
        expression,
        obs,
        spatial_dims=m.spatial_dims,
        categorical=m.covariates.categorical,
        numeric=m.covariates.numeric,
        provenance=provenance,
        slice_axis=m.slice_axis,
    )
    adata.uns[K.UNS][K.ROOT] = str(root)
    if m.images is not None and m.images.channel_names:
        adata.uns[K.UNS][K.CHANNEL_NAMES] = [str(n) for n in m.images.channel_names]
    log.info("manifest %s: %d patients, %d genes", source, adata.n_obs, adata.n_vars)
    return adata


def _writable(obs: pd.DataFrame) -> pd.DataFrame:
    """Make the extra text columns of obs h5ad-writable however the h5ad is written.

    A clinical column can be empty for the selected patients, mix strings with numbers or
    booleans after recoding and joining, or have missing values; h5py writes none of these as
    strings. All missing -> float NaN; values -> strings; with missing values -> categorical.
    """
    for col in obs.columns:
        if obs[col].dtype != object or col in (K.IMAGE, K.MASK):
            continue
        values = obs[col].dropna()
        if values.empty:
            obs[col] = obs[col].astype(np.float64)
            continue
        if not all(isinstance(v, str) for v in values):
            obs[col] = obs[col].map(lambda v: v if pd.isna(v) else _key(v))
        if len(values) < len(obs):
            obs[col] = obs[col].astype("category")
    return obs


def _handle_missing_covariates(
    obs: pd.DataFrame, spec: CovariateSpec, provenance: dict
) -> pd.DataFrame:
    keys = spec.categorical + spec.numeric
    absent = [k for k in keys if k not in obs.columns]
    if absent:
        raise ValueError(
            f"covariate column(s) {absent} not found; available columns: {[c for c in obs.columns if c not in (K.IMAGE, K.MASK)]}"
        )
    for key in spec.numeric:
        values = pd.to_numeric(obs[key], errors="coerce")
        bad = obs.index[values.isna() & obs[key].notna()]
        if len(bad):
            shown = dict(zip(bad[:5], obs.loc[bad[:5], key].tolist(), strict=True))
            raise CohortError(
                f"numeric covariate '{key}' has non-numeric values (patient: value) {shown}; list them in clinical.na_values if they mean missing"
            )
        obs[key] = values
    missing = obs[keys].isna()
    if not missing.any().any():
        return obs
    if spec.missing == "error":
        detail = {k: obs.index[missing[k]].tolist()[:5] for k in keys if missing[k].any()}
        raise CohortError(
            f"missing covariate values (covariate: patients) {detail}; set covariates.missing to drop_patients or fill"
        )
    if spec.missing == "drop_patients":
        drop = obs.index[missing.any(axis=1)]
        provenance["covariates_missing"] = f"dropped {len(drop)} patients with missing covariates"
        return obs.drop(index=drop)
    for key in spec.categorical:
        obs[key] = obs[key].astype(object).where(obs[key].notna(), "unknown")
    for key in spec.numeric:
        obs[key] = obs[key].fillna(obs[key].median())
    provenance["covariates_missing"] = (
        f"filled {int(missing.sum().sum())} missing covariate values ('unknown' / median)"
    )
    return obs


def _build_from_table(path: Path, spatial_dims: int | None, root: Path | None) -> ad.AnnData:
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = path.parent.resolve() if root is None else root
    table = pd.read_csv(path, sep=_sep(path, None), dtype={"id": str})  # '001' stays '001'
    if "id" not in table.columns:
        raise ValueError(
            f"CSV manifest {path} needs an 'id' column; columns: {list(table.columns)}"
        )
    table = table.set_index(table.pop("id").astype(str))
    covs = [c for c in table.columns if c not in (K.IMAGE, K.MASK)]
    numeric = [c for c in covs if pd.api.types.is_numeric_dtype(table[c])]
    categorical = [c for c in covs if c not in numeric]
    if spatial_dims is None:
        spatial_dims = _guess_spatial_dims(root, table)
    adata = make_cohort(
        None,
        table,
        spatial_dims=spatial_dims,
        categorical=categorical,
        numeric=numeric,
        provenance={"manifest": str(path.resolve())},
    )
    adata.uns[K.UNS][K.ROOT] = str(root)
    return adata


def _guess_spatial_dims(root: Path, table: pd.DataFrame) -> int:
    from radiogenomics.data.io import load_image

    if K.IMAGE not in table.columns or table[K.IMAGE].dropna().empty:
        return 2
    first = Path(str(table[K.IMAGE].dropna().iloc[0]))
    arr = load_image(first if first.is_absolute() else root / first)
    return 3 if arr.ndim - 1 >= 3 and min(arr.shape[1:]) > 4 else 2
