"""Does a synthetic cohort give its training patients away? (docs/design.md, section 5, privacy)

A patient's record is, per modality:
- `expression`: its expression, z-scored with the training patients' per-gene mean and std;
- `image`: the map's image features of its lesion (`radiomap.features.image_features`), missing
  values filled with the training median, z-scored on the training patients;
- `joint`: both, for patients with both, each block divided by the square root of its number of
  columns. A z-scored block of d columns has an expected squared length of d, so after the
  division each block adds about 1 to a squared distance, whatever its size: 128 genes do not
  drown 32 image features.
Columns without two finite training values, or constant on the training patients, are dropped.

Two scores, on Euclidean distances between records (sklearn's NearestNeighbors: exact trees
that never hold the full distance matrix, instead of a hand-written search):
- distance to closest record (DCR): each synthetic record's distance to its nearest training
  record, against the same for held-out real patients (new patients of the same population).
  `dcr_ratio` = median synthetic DCR / median held-out DCR (1 = as far from the training
  patients as new patients are; near 0 = copies); `dcr_close_fraction`: the fraction of
  synthetic records closer to a training record than the 5th percentile of held-out DCRs
  (0.05 for a generator that is as far as new patients; more = some records sit on training
  patients).
- membership inference: an attacker who holds the synthetic set and a patient's record calls
  the patient a training member when its nearest synthetic record is close. `mia_auc` is the
  ROC AUC of that call (score: minus the distance) for the training patients (members) against
  the held-out patients (non-members); 0.5 = nothing leaks, 1 = every member is recognised. All
  members and all non-members are scored: the AUC does not depend on how many of each there are
  (it is the probability that a random member outranks a random non-member), and the chance
  spread below accounts for both counts.

`flag` (per modality): True when the synthetic set looks like it copies training patients,
    mia_auc > 0.5 + max(MIA_MARGIN, NULL_SDS x the AUC's chance sd)   or   dcr_ratio < DCR_RATIO_MIN,
where the chance sd of an AUC with n1 members and n0 non-members is sqrt((n1 + n0 + 1) /
(12 n1 n0)) (the Mann-Whitney U statistic's sd without ties, over n1 n0). The DCR rule is set at
0.5 because a generator that collapses towards the mean, without copying anyone, already sits
nearer the training patients than a new patient does (about 0.6-0.7 of the distance for
Gaussian data); only copying brings the median far below that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from radiogenomics import _keys as K

log = logging.getLogger(__name__)

MIA_MARGIN = 0.1  # the smallest AUC excess over 0.5 that flags, however many patients
NULL_SDS = 2.0  # ... or this many chance sds, when there are few patients
DCR_RATIO_MIN = 0.5
CLOSE_QUANTILE = 0.05
MIN_RECORDS = 5

# --------------------------------------------------------------------------------------------
# the scores, on records that are already standardised


def null_sd(n_members: int, n_nonmembers: int) -> float:
    """The sd of a ROC AUC under no signal, n1 positives and n0 negatives (Mann-Whitney)."""
    n1, n0 = n_members, n_nonmembers
    return float(np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0)))


def mia_threshold(n_members: int, n_nonmembers: int) -> float:
    """The membership AUC above which `flag` is set (see the module docstring)."""
    return 0.5 + max(MIA_MARGIN, NULL_SDS * null_sd(n_members, n_nonmembers))


def _nearest(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)[0][:, 0]


def distance_scores(train, heldout, synthetic) -> dict:
    """DCR and membership-inference scores of standardised records `(patients, columns)`.

    Returns the scalars (`dcr_synthetic_median`, `dcr_heldout_median`, `dcr_ratio`,
    `dcr_close_fraction`, `mia_auc`, `mia_null_sd`, `mia_threshold`, `flag`, the counts) and,
    under `distances`, the arrays `synthetic` and `heldout` (each record's DCR) for figures.
    """
    from sklearn.metrics import roc_auc_score

    sets = {"train": train, "heldout": heldout, "synthetic": synthetic}
    sets = {k: np.asarray(v, np.float64) for k, v in sets.items()}
    width = {v.shape[1] if v.ndim == 2 else -1 for v in sets.values()}
    if len(width) != 1 or -1 in width:
        shapes = {k: v.shape for k, v in sets.items()}
        raise ValueError(f"records must be (patients, columns) alike; got {shapes}")
    for name, X in sets.items():
        if len(X) < MIN_RECORDS:
            raise ValueError(
                f"the {name} set has {len(X)} record(s); privacy needs >= {MIN_RECORDS}"
            )
        if not np.isfinite(X).all():
            raise ValueError(f"the {name} set's records hold NaN/inf")
    train, heldout, synthetic = sets["train"], sets["heldout"], sets["synthetic"]
    dcr_synth, dcr_held = _nearest(train, synthetic), _nearest(train, heldout)
    med_synth, med_held = float(np.median(dcr_synth)), float(np.median(dcr_held))
    close = float((dcr_synth < np.quantile(dcr_held, CLOSE_QUANTILE)).mean())
    member, nonmember = _nearest(synthetic, train), _nearest(synthetic, heldout)
    labels = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    auc = float(roc_auc_score(labels, -np.r_[member, nonmember]))
    ratio = med_synth / med_held if med_held > 0 else float("nan")
    threshold = mia_threshold(len(train), len(heldout))
    return {
        "dcr_synthetic_median": med_synth,
        "dcr_heldout_median": med_held,
        "dcr_ratio": ratio,
        "dcr_close_fraction": close,
        "mia_auc": auc,
        "mia_null_sd": null_sd(len(train), len(heldout)),
        "mia_threshold": threshold,
        "flag": bool(auc > threshold or ratio < DCR_RATIO_MIN),
        "n_train": len(train),
        "n_heldout": len(heldout),
        "n_synthetic": len(synthetic),
        "n_columns": int(train.shape[1]),
        "distances": {"synthetic": dcr_synth, "heldout": dcr_held},
    }


# --------------------------------------------------------------------------------------------
# records


def _standardise(train: pd.DataFrame, *others: pd.DataFrame, names=("held-out", "synthetic")):
    """Every set z-scored with `train`'s column means and stds, NaN filled with `train`'s
    median; columns with fewer than two finite training values or constant on `train` are
    dropped (they carry no distance and would be scaled by an arbitrary unit)."""
    cols = train.columns
    for name, other in zip(names, others, strict=False):
        missing = cols.difference(other.columns)
        if len(missing):
            raise ValueError(
                f"the {name} records lack the training records' columns {list(missing[:5])}"
            )
    T = train.to_numpy(np.float64)
    finite = np.isfinite(T)
    enough = finite.sum(axis=0) >= 2
    median = np.zeros(T.shape[1])
    median[enough] = np.nanmedian(np.where(finite, T, np.nan)[:, enough], axis=0)
    T = np.where(finite, T, median)
    mean, std = T.mean(axis=0), T.std(axis=0)
    keep = enough & (std > 1e-12)

    def z(df: pd.DataFrame) -> np.ndarray:
        X = df[cols].to_numpy(np.float64)[:, keep]
        X = np.where(np.isfinite(X), X, median[keep])
        return (X - mean[keep]) / std[keep]

    return [z(df) for df in (train, *others)]


def expression_records(adata: ad.AnnData, genes, name: str = "cohort") -> pd.DataFrame:
    """The expression of `adata`'s patients with expression (all finite), in `genes`' order;
    `name` says which cohort in an error."""
    missing = pd.Index(genes).difference(adata.var_names)
    if len(missing):
        raise ValueError(
            f"the {name} cohort lacks {len(missing)} of the training genes, e.g. "
            f"{list(missing[:5])}"
        )
    X = adata[:, list(genes)].X
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, np.float64)
    keep = np.isfinite(X).all(axis=1)
    if K.HAS_EXPRESSION in adata.obs:
        keep &= adata.obs[K.HAS_EXPRESSION].to_numpy(bool)
    return pd.DataFrame(X[keep], index=adata.obs_names[keep], columns=list(genes))


def image_records(
    adata: ad.AnnData, data_cfg, *, whole: bool = False, progress: bool = False, loaded=None
) -> pd.DataFrame:
    """The map's image features (`radiomap.features.IMAGE_FEATURES`) of the patients with an
    image and a mask, read with `data_cfg` (or `loaded`: their images and masks, as
    `load_images` gives them); `whole`: measured over the whole patch (for unconditional
    models, whose masks are whole patches). Index = patient ids."""
    from radiogenomics.data.dataset import image_rows, load_images
    from radiogenomics.radiomap.features import image_feature_batch

    rows = image_rows(adata, need_mask=True)
    images, masks = loaded or load_images(adata, data_cfg, rows, progress=progress)
    images, masks = np.asarray(images), np.asarray(masks)
    return image_feature_batch(
        images, np.ones_like(masks) if whole else masks, index=adata.obs_names[rows],
        progress=progress,
    )  # fmt: skip


def feature_records(
    cohorts: Mapping[str, ad.AnnData], data_cfg, *, progress: bool = False, loaded=None
) -> tuple[dict, bool]:
    """`image_records` of each cohort ({name: AnnData}); when the 'synthetic' cohort's masks
    are all whole patches (an unconditional model's: nothing shaped its lesions), every
    cohort is measured over whole patches, as `image_report` compares them. `loaded`: {name:
    its images and masks as `loaded_images` gives them}, or None: read here. Returns ({name:
    features}, whether whole patches were measured)."""
    loaded = loaded or loaded_images(cohorts, data_cfg, progress=progress)
    whole = "synthetic" in loaded and bool(loaded["synthetic"][1].all())
    if whole:
        log.warning("synthetic masks are whole patches: image records measure whole patches")
    feats = {
        name: image_records(a, data_cfg, whole=whole, progress=progress, loaded=loaded[name])
        for name, a in cohorts.items()
    }
    return feats, whole


def loaded_images(cohorts: Mapping[str, ad.AnnData], data_cfg, *, progress: bool = False):
    """{name: (images, masks)} of each cohort's patients with an image and a mask
    (`data.dataset.load_images`, read with `data_cfg`), in `image_rows` order."""
    from radiogenomics.data.dataset import image_rows, load_images

    return {
        name: load_images(a, data_cfg, image_rows(a, need_mask=True), progress=progress)
        for name, a in cohorts.items()
    }


def image_memorisation(
    cohorts: Mapping[str, ad.AnnData], loaded: Mapping, out: str | Path, data_cfg=None
):
    """`evaluate.memorisation` of the 'synthetic' cohort's images against the 'train' and
    'heldout' ones (`loaded`: {name: (images, masks)} in `image_rows` order, as
    `loaded_images` gives them), its table and figure written into `out`. A training cohort
    of slice stacks is compared slice by slice (read with `data_cfg`): the models learnt from
    every slice, so a copy of any of them counts. Returns (the metrics
    `image_memorisation_*`, `image_near_copy_*`, the part for `privacy_section`), or
    ({}, None) when a set has too few images (logged)."""
    from radiogenomics._display import channel_names
    from radiogenomics.data.cohort import slice_axis_of
    from radiogenomics.data.dataset import image_rows, load_slices
    from radiogenomics.evaluate import memorisation as memo

    names = ("train", "heldout", "synthetic")
    rows = {k: image_rows(cohorts[k], need_mask=True) for k in names}
    ids = {k: cohorts[k].obs_names[rows[k]] for k in names}
    loaded = dict(loaded)
    if data_cfg is not None and slice_axis_of(cohorts["train"]) is not None:
        images, masks, owner = load_slices(cohorts["train"], data_cfg, rows["train"])
        loaded["train"] = (images, masks)
        slot = np.concatenate([np.arange((owner == i).sum()) for i in np.unique(owner)])
        ids["train"] = [f"{ids['train'][o]}#{k}" for o, k in zip(owner, slot, strict=True)]
    images = {k: loaded[k][0] for k in names}
    try:
        scores = memo.memorisation_scores(*images.values(), ids=ids)
    except ValueError as err:  # too few images: the rest of the report stands
        log.warning("no image memorisation: %s", err)
        return {}, None
    channels = channel_names(cohorts["train"], int(images["train"].shape[1]))
    part = memo.memorisation_part(
        scores, images["train"], images["synthetic"], out,
        masks=(loaded["train"][1], loaded["synthetic"][1]), channel_names=channels,
    )  # fmt: skip
    return memo.memorisation_metrics(scores), part


def privacy_scores(blocks: Mapping[str, tuple], *, joint: bool = True) -> tuple[pd.DataFrame, dict]:
    """Privacy per modality: `blocks` maps a modality to its raw (train, heldout, synthetic)
    records, DataFrames indexed by patient id; with `joint` and two or more blocks, also the
    joint record of the patients present in every block. A block with fewer than MIN_RECORDS
    records in some set is left out (logged). Returns (one row per modality, the scalars of
    `distance_scores`; {modality: its DCR arrays}); a flagged modality is logged as a warning."""
    scaled = {}
    for name, (tr, ho, sy) in blocks.items():
        small = [
            k
            for k, v in (("train", tr), ("held-out", ho), ("synthetic", sy))
            if len(v) < MIN_RECORDS
        ]
        if small:
            log.warning("privacy: no %s records: too few in the %s set(s)", name, ", ".join(small))
            continue
        scaled[name] = {
            k: pd.DataFrame(v, index=df.index)
            for k, v, df in zip(
                ("train", "heldout", "synthetic"),
                _standardise(tr, ho, sy),
                (tr, ho, sy),
                strict=True,
            )
        }
    if joint and len(scaled) >= 2:
        parts = {}
        for k in ("train", "heldout", "synthetic"):
            common = None
            for s in scaled.values():
                common = (
                    s[k].index if common is None else common.intersection(s[k].index, sort=False)
                )
            parts[k] = pd.concat(
                [s[k].loc[common] / np.sqrt(max(s[k].shape[1], 1)) for s in scaled.values()], axis=1
            )
        scaled["joint"] = parts
    rows, distances = {}, {}
    for name, s in scaled.items():
        if min(len(v) for v in s.values()) < MIN_RECORDS:
            log.warning("privacy: too few patients with every modality for the %s record", name)
            continue
        scores = distance_scores(s["train"], s["heldout"], s["synthetic"])
        distances[name] = scores.pop("distances")
        rows[name] = scores
        if scores["flag"]:
            log.warning(
                "privacy (%s): the synthetic set looks like copies of training patients "
                "(membership AUC %.3f, DCR ratio %.3f)",
                name,
                scores["mia_auc"],
                scores["dcr_ratio"],
            )
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "modality"
    return table, distances


def cohort_privacy(
    train: ad.AnnData,
    heldout: ad.AnnData,
    synthetic: ad.AnnData,
    features: Mapping[str, pd.DataFrame] | None = None,
    *,
    expression: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """`privacy_scores` of three cohorts: `expression` on the training genes (patients with
    expression), `image` on `features` ({'train', 'heldout', 'synthetic'}: image features by
    patient id, e.g. `image_records`) and, with both, `joint` on the patients with both."""
    blocks = {}
    if expression:
        genes = train.var_names
        blocks["expression"] = tuple(
            expression_records(a, genes, name)
            for a, name in ((train, "training"), (heldout, "held-out"), (synthetic, "synthetic"))
        )
    if features is not None:
        missing = {"train", "heldout", "synthetic"} - set(features)
        if missing:
            raise ValueError(f"features lack the set(s) {sorted(missing)}")
        blocks["image"] = (features["train"], features["heldout"], features["synthetic"])
    if not blocks:
        raise ValueError("nothing to score: no expression and no image features")
    return privacy_scores(blocks)


# --------------------------------------------------------------------------------------------
# the report's part


def privacy_metrics(table: pd.DataFrame) -> dict:
    """{privacy_<modality>_<score>: value} and `privacy_flag` (any modality flagged)."""
    out = {f"privacy_{m}_{c}": v for m, row in table.iterrows() for c, v in row.items()}
    if len(table):
        out["privacy_flag"] = bool(table["flag"].any())
    return out


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The privacy scores a reader looks at, each beside what a new real patient scores."""
    return pd.DataFrame(
        {
            "median DCR synthetic": table["dcr_synthetic_median"],
            "median DCR held-out (reference)": table["dcr_heldout_median"],
            "DCR ratio (1 = as new patients)": table["dcr_ratio"],
            "closer than held-out 5th pct (ref. 0.05)": table["dcr_close_fraction"],
            "membership AUC (ref. 0.5)": table["mia_auc"],
            "chance sd": table["mia_null_sd"],
            "flagged above": table["mia_threshold"],
            "flagged": table["flag"].map({True: "YES: copies?", False: "no"}),
            "n train / held-out / synthetic": [
                f"{a} / {b} / {c}"
                for a, b, c in table[["n_train", "n_heldout", "n_synthetic"]].to_numpy()
            ],
        },
        index=table.index,
    )


def privacy_section(table: pd.DataFrame, distances: dict, out: str | Path, memorisation=None):
    """Write `out/privacy.csv` and `out/dcr.png` (when `table` has a record); return the
    report's Section, with the image `memorisation` part (`image_memorisation`'s) where given."""
    from radiogenomics._atomic import atomic_write
    from radiogenomics.evaluate import figures
    from radiogenomics.evaluate.html import Section

    out = Path(out)
    text, tables, figs = [], {}, {}
    if len(table):
        atomic_write(out / "privacy.csv", lambda tmp: table.to_csv(tmp))
        figures.dcr_histograms(distances, table["mia_auc"].to_dict(), save=out / "dcr.png")
        text = [
            "Distance to closest record (DCR): each synthetic patient's distance to its "
            "nearest training patient, beside the same for held-out real patients (new "
            "patients: the reference). Records are z-scored on the training patients: "
            "expression, the lesion's image features, and both joined (each block scaled so "
            "it weighs as much as the other, whatever its number of columns).",
            "Membership AUC: an attacker with the synthetic set calls a patient a training "
            "member when a synthetic record lies close to it; the AUC of that call on the "
            "training against the held-out patients (0.5: nothing leaks). A modality is "
            f"flagged when the AUC exceeds 0.5 + max({MIA_MARGIN:g}, {NULL_SDS:g} chance sd) "
            f"or the DCR ratio is below {DCR_RATIO_MIN:g}: the synthetic set copies training "
            "patients.",
        ]
        tables["privacy per record (privacy/privacy.csv)"] = shown_table(table)
        figs["DCR: synthetic and held-out patients to their nearest training patient"] = (
            out / "dcr.png"
        )
    if memorisation is not None:
        shown, figure, paragraph = memorisation
        text.append(paragraph)
        tables["image memorisation (per image: privacy/memorisation.csv)"] = shown
        figs["synthetic images nearest their training image"] = figure
    return Section(
        "Privacy: does the synthetic set give its training patients away?", text, tables, figs
    )


def privacy_part(train, heldout, synthetic, out, features=None):
    """The privacy part of a gene-only report (expression records) or, with the image
    `features` ({'train', 'heldout', 'synthetic'}), of an image-only one: writes privacy.csv
    and dcr.png into `out`; returns (the shown table, the figure's path, the scores as
    `privacy_metrics` reads them), or None when no modality has enough records."""
    table, distances = cohort_privacy(
        train, heldout, synthetic, features, expression=features is None
    )
    if not len(table):
        return None
    privacy_section(table, distances, out)
    return shown_table(table), Path(out) / "dcr.png", table
