"""Gene realism reports: the synthetic set next to both baselines and the real ceiling, with
figures, as `radiogenomics evaluate` writes them; and the k-fold version that trains GeneGAN."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from radiogenomics import _keys as K
from radiogenomics._atomic import atomic_write, atomic_write_text
from radiogenomics.evaluate import figures
from radiogenomics.evaluate.baselines import IndependentGaussian, MultivariateGaussian
from radiogenomics.evaluate.genes import CEILING, evaluate_genes, summarise, versus_baseline
from radiogenomics.evaluate.privacy import privacy_metrics, privacy_part

log = logging.getLogger(__name__)

BASELINES = {
    "independent Gaussian": IndependentGaussian,
    "multivariate Gaussian": MultivariateGaussian,
}
# the baseline a generator of expression must beat (docs/design.md, section 5)
GAUSSIAN = "multivariate Gaussian"
AGAINST_GAUSSIAN = "Against the multivariate Gaussian (NO: the Gaussian does better)"


def against_gaussian(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """`versus_baseline` of set `name` against the multivariate Gaussian, for a reader:
    values rounded, `beats` as "yes" or "NO"."""
    vs = versus_baseline(table, name, GAUSSIAN)
    shown = vs.copy()
    shown[[name, GAUSSIAN]] = vs[[name, GAUSSIAN]].astype(float).round(3)
    shown["beats"] = vs["beats"].map({True: "yes", False: "NO"})
    return shown


def gaussian_verdict(table: pd.DataFrame, name: str) -> str:
    """One sentence: the scores on which set `name` does not beat the multivariate Gaussian."""
    vs = versus_baseline(table, name, GAUSSIAN)
    lost = list(vs.index[~vs["beats"].astype(bool)])
    if not lost:
        return f"'{name}' beats the multivariate Gaussian on every gene score."
    return (
        f"'{name}' does NOT beat the multivariate Gaussian on {len(lost)} of {len(vs)} gene "
        f"scores: {', '.join(lost)}."
    )


def with_baselines(train: ad.AnnData, synthetic: ad.AnnData, name: str, seed: int = 0) -> dict:
    """{name: synthetic, baseline: its samples}: each baseline is fitted on `train` and sampled
    with the synthetic patients' own covariate rows, so every set has the same covariates."""
    cov = train.uns.get(K.UNS, {}).get(K.COVARIATES, {})
    # condition the baselines on what the synthetic set was conditioned on
    keys = [k for k in [*cov.get(K.CATEGORICAL, {}), *cov.get(K.NUMERIC, {})] if k in synthetic.obs]
    sets = {name: synthetic}
    for label, cls in BASELINES.items():
        sets[label] = cls(covariates=keys).fit(train).sample(synthetic.obs[keys], seed=seed)
    return sets


def z_scorer(train: ad.AnnData):
    """z-score any set with the training patients' per-gene mean and std, as evaluate_genes."""
    X = np.asarray(_expressed(train).X, dtype=np.float64)
    mean, std = X.mean(0), X.std(0)
    std[std == 0] = 1.0
    genes = list(train.var_names)
    return lambda a: (np.asarray(_expressed(a)[:, genes].X, dtype=np.float64) - mean) / std


def _expressed(adata: ad.AnnData) -> ad.AnnData:
    if K.HAS_EXPRESSION in adata.obs.columns:
        return adata[adata.obs[K.HAS_EXPRESSION].to_numpy(bool)]
    return adata


def gene_report(
    train: ad.AnnData,
    test: ad.AnnData,
    synthetic: ad.AnnData,
    out: str | Path,
    *,
    covariate: str | None = None,
    name: str = "synthetic",
    seed: int = 0,
    privacy: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Score `synthetic` against held-out `test`, next to the baselines fitted on `train` and the
    real ceiling; write `metrics.csv`, figures and `report.md` into `out`. With `privacy`, also
    the privacy of the expression records (`evaluate.privacy`, every synthetic patient):
    `privacy.csv`, `dcr.png` and a section of the report."""
    out = Path(out)
    extra, private = {}, None
    if privacy and (private := privacy_part(train, test, synthetic, out)) is not None:
        extra["Privacy (distance to closest record, membership inference)"] = private[0]
    n_train = int(_expressed(train).n_obs)
    if synthetic.n_obs > n_train:
        # the correlations grow with the sample size; score as many synthetic patients as the
        # ceiling has real ones, or the ratios would flatter the generator
        log.info(
            "scoring %d of the %d synthetic patients (the training set's size)",
            n_train,
            synthetic.n_obs,
        )
        keep = np.random.default_rng(seed).choice(synthetic.n_obs, n_train, replace=False)
        synthetic = synthetic[np.sort(keep)].copy()
    sets = with_baselines(train, synthetic, name, seed)
    table = evaluate_genes(train, test, sets, covariate=covariate, seed=seed)
    atomic_write(out / "metrics.csv", lambda tmp: table.to_csv(tmp))
    extra = {AGAINST_GAUSSIAN: against_gaussian(table, name), **extra}
    z = z_scorer(train)
    real, genes = z(test), np.asarray(train.var_names)
    shown = {name: z(synthetic), "multivariate Gaussian": z(sets["multivariate Gaussian"])}
    paths = {
        "Gene-gene distance matrices (held-out real vs synthetic)": out / "distance_matrices.png",
        "Dendrograms of the most variable genes": out / "dendrograms.png",
        "Per-gene distributions": out / "gene_distributions.png",
        "PCA of real and synthetic patients": out / "embedding.png",
    }
    files = iter(paths.values())
    # the figures are plain `Figure`s (no pyplot), freed once written
    figures.distance_matrices(real, shown, genes, save=next(files))
    figures.dendrograms(real, shown, genes, save=next(files))
    figures.gene_distributions(real, {name: shown[name]}, genes, save=next(files))
    figures.embedding(real, shown, seed=seed, save=next(files))
    if private is not None:
        paths["Privacy: distance to the closest training record"] = private[1]
    report = figures.write_report(
        gene_headline(table),
        paths,
        out / "report.md",
        title=f"Gene realism: '{name}' against {test.n_obs} held-out real patients",
        tables=extra,
    )
    return table, report


def gene_headline(table: pd.DataFrame) -> pd.DataFrame:
    cols = [
        c
        for c in (
            "distance_corr",
            "distance_ratio",
            "dendrogram_corr",
            "dendrogram_ratio",
            "std_ratio",
            "detection_auc",
            "mmd",
            "mean_ks",
            "covariate_real_accuracy",
            "covariate_synthetic_accuracy",
            "covariate_gap",
            "tstr_accuracy",
        )
        if c in table.columns
    ]
    return table[cols].round(3)


def fold_means(scores: pd.DataFrame) -> pd.DataFrame:
    """Each set's mean over the folds of `kfold_scores`' table, one row per set."""
    return scores.drop(columns="fold").groupby(level=0, sort=False).mean()


def generated_sets(table: pd.DataFrame) -> list[str]:
    """The rows of a gene table that are neither a baseline nor the real ceiling."""
    return [name for name in table.index if name not in BASELINES and name != CEILING]


def kfold_report(scores: pd.DataFrame, path: str | Path, n_patients: int | None = None) -> Path:
    """`report.md` of a k-fold evaluation: the headline scores per set as mean ± std over the
    folds, then the same scores fold by fold (every score is in kfold.csv)."""
    headline = gene_headline(scores).columns
    text = summarise(scores[["fold", *headline]], as_text=True)
    text.index.name = "set"
    folds = scores[["fold", *headline]].round(3)
    folds.index.name = "set"
    k = scores["fold"].nunique()
    who = f" of {n_patients} patients" if n_patients is not None else ""
    means = fold_means(scores)
    against = []
    for name in generated_sets(means):
        against += [
            f"## {AGAINST_GAUSSIAN}: '{name}', mean over the folds",
            "",
            gaussian_verdict(means, name),
            "",
            figures.markdown_table(against_gaussian(means, name)),
            "",
        ]
    report = "\n".join(
        [
            f"# Gene realism: {k}-fold cross-validation{who}",
            "",
            "Each fold's sets are scored against its held-out patients; mean ± std over the "
            "folds (every score of every fold: `kfold.csv`).",
            "",
            figures.markdown_table(text),
            "",
            *against,
            "## Fold by fold",
            "",
            figures.markdown_table(folds),
            "",
        ]
    )
    return atomic_write_text(path, report)


__all__ = [
    "AGAINST_GAUSSIAN",
    "BASELINES",
    "CEILING",
    "GAUSSIAN",
    "against_gaussian",
    "gaussian_verdict",
    "gene_report",
    "image_report",
    "kfold_report",
    "fold_means",
    "generated_sets",
    "with_baselines",
]


def _augmentation_leak(loaded: dict, seed: int) -> pd.DataFrame | None:
    """`evaluate.leak.augmentation_leak` of the loaded real and synthetic images, or None
    where the real set is too small for it (logged)."""
    from radiogenomics.evaluate.leak import augmentation_leak

    try:
        return augmentation_leak(*loaded["real"], *loaded["synthetic"], seed=seed)
    except ValueError as err:
        log.warning("no augmentation leak check: %s", err)
        return None


def image_report(
    real: ad.AnnData,
    synthetic: ad.AnnData,
    out: str | Path,
    data,
    *,
    segmenter=None,
    seed: int = 0,
    progress: bool = True,
    train: ad.AnnData | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Score a synthetic cohort's images against real held-out ones (evaluate_images): the
    synthetic set next to the region-mean baseline and the real-vs-real reference. Writes
    metrics.csv, report.md and sample grids of both sets to `out` (one grey panel per channel,
    both sets at the real images' window), and the augmentation leak check
    (`evaluate.leak`: augmentation_leak.csv; do the synthetic images show a translation,
    brightness or contrast change that training's differentiable augmentation applied?). With the real `train`ing cohort, also the privacy
    of the image-feature records (`evaluate.privacy`: privacy.csv, dcr.png) and the images'
    memorisation (`evaluate.memorisation`: memorisation.csv, memorisation.png), each with a
    table in the report.

    `data` is the DataConfig both cohorts are read with (same size and intensity scaling);
    `segmenter` (a trained Segmenter) adds the segmentation net's Dice and encoder distance.
    Synthetic masks that are all whole patches (an unconditional model's) make both sides be
    scored as whole patches, without Dice.
    """
    import torch

    from radiogenomics.data.dataset import image_rows, load_images
    from radiogenomics.evaluate.images import evaluate_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {}
    for name, cohort in (("real", real), ("synthetic", synthetic)):
        rows = image_rows(cohort, need_mask=True)
        loaded[name] = load_images(cohort, data, rows, progress=progress)
    # counterparts ('<id>-syn', from `sample --like`) carry their source patient's mask
    real_ids = list(real.obs_names[image_rows(real, need_mask=True)])
    synth_ids = synthetic.obs_names[image_rows(synthetic, need_mask=True)]
    source = [
        real_ids.index(i[:-4]) if i.endswith("-syn") and i[:-4] in real_ids else -1
        for i in synth_ids
    ]
    # An unconditional model's patients come with whole-patch masks (nothing shaped their
    # lesions): compare whole patches on both sides, and there is no mask to find.
    whole = bool(loaded["synthetic"][1].all())
    if whole:
        log.warning("synthetic masks are whole patches: scoring whole patches, no Dice")
        loaded["real"] = (loaded["real"][0], torch.ones_like(loaded["real"][1]))
    table = evaluate_images(
        *loaded["real"],
        *loaded["synthetic"],
        seg_net=None if segmenter is None else segmenter.net,
        threshold=0.5 if segmenter is None else segmenter.config.segment.threshold,
        seed=seed,
        progress=progress,
        fake_source=source if max(source) >= 0 else None,
    )
    if whole and "dice" in table:
        table = table.drop(columns="dice")
    atomic_write(out / "metrics.csv", lambda tmp: table.to_csv(tmp))
    figures.sample_grids(
        real[image_rows(real, need_mask=True)], *loaded["real"],
        synthetic[image_rows(synthetic, need_mask=True)], *loaded["synthetic"], out, seed=seed,
    )  # fmt: skip
    paths = {
        "Real held-out patients": out / "real_samples.png",
        "Synthetic patients": out / "synthetic_samples.png",
    }
    extra = {}
    leak = _augmentation_leak(loaded, seed)
    if leak is not None:
        atomic_write(out / "augmentation_leak.csv", lambda tmp: leak.to_csv(tmp))
        extra["Augmentation leak (do the synthetic images show a training augmentation?)"] = (
            leak.round(4)
        )
        # the paired report's metrics read it from here
        table.attrs["augmentation_leak"] = {
            "max_ratio": float(leak["ratio"].max()),
            "flag": bool(leak["flagged"].any()),
        }
    if train is not None:
        from radiogenomics.evaluate.privacy import image_memorisation, image_records

        loaded["train"] = load_images(
            train, data, image_rows(train, need_mask=True), progress=progress
        )
        feats = {
            "train": image_records(train, data, whole=whole, loaded=loaded["train"]),
            "heldout": image_records(real, data, whole=whole, loaded=loaded["real"]),
            "synthetic": image_records(synthetic, data, whole=whole, loaded=loaded["synthetic"]),
        }
        if (private := privacy_part(train, real, synthetic, out, features=feats)) is not None:
            extra["Privacy (image features: DCR, membership inference)"] = private[0]
            paths["Privacy: distance to the closest training record"] = private[1]
            table.attrs["privacy"] = privacy_metrics(private[2])
        cohorts = {"train": train, "heldout": real, "synthetic": synthetic}
        named = {"train": "train", "heldout": "real", "synthetic": "synthetic"}
        memo_metrics, memo = image_memorisation(
            cohorts, {k: loaded[v] for k, v in named.items()}, out, data_cfg=data
        )
        table.attrs["memorisation"] = memo_metrics
        if memo_metrics:  # as the paired report: flagged when a record or the images are
            private = table.attrs.setdefault("privacy", {})
            private["privacy_flag"] = bool(
                private.get("privacy_flag", False) or memo_metrics["image_memorisation_flag"]
            )
        if memo is not None:
            extra["Image memorisation (per image: memorisation.csv)"] = memo[0]
            paths["Privacy: synthetic images nearest their training image"] = memo[1]
    n_real, n_synth = len(loaded["real"][0]), len(loaded["synthetic"][0])
    stacks = ""
    if K.N_SLICES in real.obs and real.uns.get(K.UNS, {}).get(K.SLICE_AXIS) is not None:
        # a cohort of slice stacks: one evaluation slice per patient (docs/data.md)
        total = int(real.obs[K.N_SLICES].sum())
        stacks = f", one slice of each of {n_real} patients (of their {total} slices)"
    report = figures.write_report(
        table.round(4),
        paths,
        out / "report.md",
        title=f"Image realism: {n_synth} synthetic vs {n_real} held-out real images{stacks} "
        "(rows: each set against one half of the real set; 'real (reference)' is the other half)",
        tables=extra,
    )
    atomic_write_text(out / "metrics.json", json.dumps(image_metrics(table), indent=2) + "\n")
    log.info("image report written to %s", report)
    return table, report


def image_metrics(table: pd.DataFrame) -> dict:
    """The flat headline numbers of an `image_report` table, as in metrics.json:
    `image_<score>` (synthetic), `image_<score>_baseline`, `image_<score>_reference`, the
    augmentation leak (`image_augmentation_leak_*`) and, where the report had the training
    cohort, the images' memorisation (`image_memorisation_*`, `image_near_copy_*`) and the
    image records' privacy (`privacy_image_*`, `privacy_flag`)."""
    from radiogenomics.evaluate.images import BASELINE, REFERENCE

    out = {}
    for row, suffix in (("synthetic", ""), (BASELINE, "_baseline"), (REFERENCE, "_reference")):
        if row in table.index:
            for col, value in table.loc[row].items():
                out[f"image_{col}{suffix}"] = json_value(value)
    for key, value in table.attrs.get("augmentation_leak", {}).items():
        out[f"image_augmentation_leak_{key}"] = json_value(value)
    out.update({k: json_value(v) for k, v in table.attrs.get("memorisation", {}).items()})
    out.update({k: json_value(v) for k, v in table.attrs.get("privacy", {}).items()})
    return out


def json_value(value):
    """A JSON-safe number: bools and ints stay so, NaN and inf become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None
