"""k-fold evaluation of the gene GAN: training on each fold calls the evaluation (scores,
baselines, report), never the other way round."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import pandas as pd

from radiogenomics import _keys as K
from radiogenomics._atomic import atomic_write
from radiogenomics.evaluate.genes import kfold_scores, summarise
from radiogenomics.evaluate.report import kfold_report, with_baselines
from radiogenomics.models.gene_gan import GeneGAN

log = logging.getLogger(__name__)


def gene_kfold(
    adata: ad.AnnData,
    config,
    out: str | Path,
    *,
    k: int = 5,
    covariate: str | None = None,
    stratify: str | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """k-fold scores of GeneGAN (trained with `config` on each fold's training patients) and
    both baselines; every set has as many patients as the fold's training set. Writes
    `kfold.csv` (every fold), `kfold_summary.csv` (mean and std) and `report.md` (the headline
    scores as mean ± std, then each fold's) into `out`."""
    out = Path(out)
    fold = iter(range(k))

    def fit_sample(train: ad.AnnData) -> dict:
        i = next(fold)
        # the fold's own scaler: statistics of the whole cohort would carry the fold's test
        # patients into the training scale
        train.uns.get(K.UNS, {}).pop(K.GENE_STATS, None)
        model = GeneGAN(train, config)
        model.train(run_dir=out / f"fold{i}", progress=progress)
        # as many as the fold's patients with expression (the model's held-out ones included)
        synth = model.sample(model.n_patients, seed=config.seed).adata
        return with_baselines(train, synth, "GeneGAN", seed=config.seed)

    scores = kfold_scores(
        adata, fit_sample, k=k, seed=config.seed, covariate=covariate, stratify=stratify
    )
    summary = summarise(scores)
    atomic_write(out / "kfold.csv", lambda tmp: scores.to_csv(tmp))
    atomic_write(out / "kfold_summary.csv", lambda tmp: summary.to_csv(tmp))
    kfold_report(scores, out / "report.md", n_patients=adata.n_obs)
    log.info("k-fold scores written to %s", out)
    return scores, summary
