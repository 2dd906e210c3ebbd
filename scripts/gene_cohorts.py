"""The gene generator against the Gaussian baselines on several cohorts (issue 27's table).

For each cohort (TCGA-GBM and NSCLC from the shared data, genes of the preset's pathway;
TCGA-LGG's 63 expression patients, all 24 genes; the 2D demo phantom's 128 genes), the
patients are split into `--folds` folds (stratified on the cohort's covariate where every
class has a patient per fold). On each fold's training patients `GeneGAN` is trained with
`configs/gene_wgan.yaml` and each variant's overrides, and each trained set, the multivariate
and the independent Gaussian (fitted on the same training patients, sampled with the
synthetic patients' covariates, `--n-synthetic` patients each) are scored against the fold's
held-out patients (`evaluate_genes`, `cohort_privacy`), `--draws` times with fresh draws
(seeds seed, seed + 1, ...) whose scores are averaged: a detection AUC on a fold's few
held-out patients moves by ~0.05-0.1 from one synthetic draw to the next. Writes
`OUT/metrics.json`, flat: `<cohort>_<set>_<score>` (the mean over folds) and `..._sd` (their
standard deviation), and `OUT/run.json` (how it was made).

    OMP_NUM_THREADS=1 python scripts/gene_cohorts.py --shared ../shared/data \\
        --out docs/results/gene_cohorts --steps 600 --folds 3 --draws 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from radiogenomics import _keys as K
from radiogenomics import pp
from radiogenomics.config import load_config
from radiogenomics.data.manifest import build_cohort
from radiogenomics.data.phantom import make_phantom
from radiogenomics.evaluate.genes import CEILING, evaluate_genes
from radiogenomics.evaluate.privacy import cohort_privacy
from radiogenomics.evaluate.report import with_baselines
from radiogenomics.models.gene_gan import GeneGAN

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "gene_wgan.yaml"
# name -> overrides of the preset; each spells out its start so that the rows do not move
# with the preset's default
VARIANTS = {
    "gaussian_start": [
        "gene.start=gaussian", "train.select_start=true", "gene.select_samples=1000",
        "gene.lr=0.0001", "train.select_margin=2",
    ],
    "plain_ggan": ["gene.start=noise", "train.select_start=false", "gene.select_samples=0"],
}  # fmt: skip
SCORES = ["distance_ratio", "dendrogram_ratio", "std_ratio", "detection_auc", "covariate_gap"]
SETS = {
    "independent Gaussian": "independent_gaussian",
    "multivariate Gaussian": "multivariate_gaussian",
    CEILING: "ceiling",
}


def cohorts(shared: Path) -> dict:
    """{name: (cohort AnnData, covariate the gap is measured on)}."""
    cfg = load_config(PRESET)
    gmt = shared / "genesets" / Path(cfg.select.gmt).name  # the preset's, under --shared
    out = {}
    for name, manifest, folder, covariate in (
        ("tcga_gbm", "tcga_gbm.yaml", "tcga-gbm", "subtype"),
        ("nsclc", "nsclc.yaml", "nsclc-radiogenomics", "histology"),
    ):
        adata = build_cohort(ROOT / "data_manifests" / manifest, root=shared / folder)
        pp.pathway_genes(adata, gmt, cfg.select.pathways)
        genes = adata.var_names[adata.var[f"{K.PATHWAYS}_selected"]].tolist()
        out[name] = (pp.select_genes(adata, genes), covariate)
    lgg = build_cohort(
        ROOT / "data_manifests" / "tcga_lgg_expression.yaml", root=shared / "tcga-lgg"
    )
    out["tcga_lgg"] = (lgg, "coc_cluster")  # all 24 genes
    demo = load_config(ROOT / "configs" / "joint_phantom_2d.yaml").phantom
    phantom = make_phantom(
        demo.n, 2, size=demo.size, n_genes=demo.n_genes, noise=demo.noise, seed=0,
        progress=False,
    )  # fmt: skip
    out["phantom"] = (phantom.adata, "subtype")
    return out


def folds(adata, covariate: str, k: int, seed: int):
    """[(train, held-out)] AnnData pairs of a k-fold split, stratified on `covariate` where
    each of its classes has k patients or more (else plain), each side with its own scaler."""
    labels = adata.obs[covariate].astype(str).to_numpy()
    stratified = np.unique(labels, return_counts=True)[1].min() >= k
    splitter = (StratifiedKFold if stratified else KFold)(k, shuffle=True, random_state=seed)
    out = []
    for tr, te in splitter.split(np.zeros(adata.n_obs), labels):
        train, heldout = adata[tr].copy(), adata[te].copy()
        # the training side's own scaler: the cohort's statistics would carry the test patients
        train.uns.get(K.UNS, {}).pop(K.GENE_STATS, None)
        out.append((train, heldout))
    return out, stratified


def score(train, test, synthetic: dict, covariate: str, seed: int) -> dict:
    """{set: {score: value}} of every set, the baselines and the ceiling."""
    first = next(iter(synthetic.values()))
    sets = {**synthetic, **with_baselines(train, first, "_first", seed)}
    sets.pop("_first")
    table = evaluate_genes(train, test, sets, covariate=covariate, seed=seed)
    out = {}
    for name, row in table.iterrows():
        key = SETS.get(name, name)
        out[key] = {s: float(row[s]) for s in SCORES}
        if name != CEILING:
            privacy, _ = cohort_privacy(train, test, sets[name])
            out[key]["mia_auc"] = float(privacy.loc["expression", "mia_auc"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--n-synthetic", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohorts", nargs="*", default=None)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started = time.time()
    metrics = {"table": "gene_cohorts", "folds": args.folds, "cohorts": [], "sets": []}
    facts, train_s = {}, 0.0
    for name, (adata, covariate) in cohorts(args.shared).items():
        if args.cohorts and name not in args.cohorts:
            continue
        rows, kept = {}, []  # {set: {score: [one value per fold]}}
        splits, stratified = folds(adata, covariate, args.folds, args.seed)
        for fold, (train, test) in enumerate(splits):
            models = {}
            for variant in args.variants:
                overrides = [*VARIANTS[variant], f"train.steps={args.steps}", f"seed={args.seed}"]
                t0 = time.time()
                model = GeneGAN(train, load_config(PRESET, overrides))
                summary = model.train(progress=False)
                models[variant] = model
                train_s += time.time() - t0
                if variant == "gaussian_start":
                    kept.append(summary["best_step"] == 0)
                print(f"{name} fold {fold} {variant}: {time.time() - t0:.1f} s, best step "
                      f"{summary['best_step']}", flush=True)  # fmt: skip
            draws = {}  # {set: {score: [one value per draw]}}
            for seed in range(args.seed, args.seed + args.draws):
                synthetic = {
                    v: m.sample(args.n_synthetic, seed=seed).adata for v, m in models.items()
                }
                for key, row in score(train, test, synthetic, covariate, seed).items():
                    for s, v in row.items():
                        draws.setdefault(key, {}).setdefault(s, []).append(v)
            for key, row in draws.items():
                for s, values in row.items():
                    rows.setdefault(key, {}).setdefault(s, []).append(float(np.mean(values)))
        metrics["cohorts"].append(name)
        for key, row in rows.items():
            if key not in metrics["sets"] and key != "ceiling":
                metrics["sets"].append(key)
            for s, values in row.items():
                metrics[f"{name}_{key}_{s}"] = float(np.mean(values))
                metrics[f"{name}_{key}_{s}_sd"] = float(np.std(values, ddof=1))
            print(name, key, {s: round(float(np.mean(v)), 3) for s, v in row.items()}, flush=True)
        metrics[f"{name}_n_genes"] = int(adata.n_vars)
        metrics[f"{name}_n_patients"] = int(adata.n_obs)
        if kept:
            metrics[f"{name}_gaussian_start_kept_start"] = float(np.mean(kept))
        facts[f"{name}_stratified_on"] = covariate if stratified else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    run = {
        "title": f"Gene generator against the Gaussian baselines, per cohort ({args.folds}-fold)",
        "command": f"OMP_NUM_THREADS=1 python scripts/gene_cohorts.py --steps {args.steps} "
        f"--folds {args.folds} --n-synthetic {args.n_synthetic} --draws {args.draws} "
        f"--seed {args.seed}",
        "config": "configs/gene_wgan.yaml",
        "seed": args.seed,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
        "steps": args.steps,
        "folds": args.folds,
        "n_synthetic": args.n_synthetic,
        "draws": args.draws,
        "variants": {v: VARIANTS[v] for v in args.variants},
        "train_s": round(train_s, 1),
        "wall_s": round(time.time() - started, 1),
        **facts,
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"wrote {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
