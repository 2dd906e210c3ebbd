"""The gene generator against the Gaussian baselines on several cohorts (issue 27's table).

For each cohort (TCGA-GBM and NSCLC from the shared data, genes of the preset's pathway; the
2D demo phantom's 128 genes), a quarter of the patients is held out (`data.split.held_out`),
`GeneGAN` is trained on the rest with `configs/gene_wgan.yaml` and with each variant's
overrides, and each trained set, the multivariate and the independent Gaussian (fitted on the
same training patients, sampled with the synthetic patients' covariates) are scored against
the held-out patients (`evaluate_genes`, `cohort_privacy`). Writes `OUT/metrics.json`, flat:
`<cohort>_<set>_<score>`, and `OUT/run.json` (how it was made).

    OMP_NUM_THREADS=1 python scripts/gene_cohorts.py --shared ../shared/data \\
        --out docs/results/gene_cohorts --steps 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

from radiogenomics import _keys as K
from radiogenomics import pp
from radiogenomics.config import load_config
from radiogenomics.data.manifest import build_cohort
from radiogenomics.data.phantom import make_phantom
from radiogenomics.data.split import held_out
from radiogenomics.evaluate.genes import CEILING, evaluate_genes
from radiogenomics.evaluate.privacy import cohort_privacy
from radiogenomics.evaluate.report import with_baselines
from radiogenomics.models.gene_gan import GeneGAN

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "gene_wgan.yaml"
# name -> overrides of the preset
VARIANTS = {
    "preset": [],
    "gaussian_start": ["gene.start=gaussian"],
    "gaussian_start_projections": ["gene.start=gaussian", "gene.projection_std=16"],
}
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


def split(adata, seed: int):
    test = held_out(adata.obs, 0.25, seed)
    train, heldout = adata[~test].copy(), adata[test].copy()
    # the training side's own scaler: the cohort's statistics would carry the test patients
    train.uns.get(K.UNS, {}).pop(K.GENE_STATS, None)
    return train, heldout


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
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohorts", nargs="*", default=None)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started = time.time()
    metrics = {"table": "gene_cohorts", "cohorts": [], "sets": []}
    facts = {}
    for name, (adata, covariate) in cohorts(args.shared).items():
        if args.cohorts and name not in args.cohorts:
            continue
        train, test = split(adata, args.seed)
        synthetic = {}
        for variant in args.variants:
            overrides = [*VARIANTS[variant], f"train.steps={args.steps}", f"seed={args.seed}"]
            t0 = time.time()
            model = GeneGAN(train, load_config(PRESET, overrides))
            model.train(progress=False)
            synthetic[variant] = model.sample(model.n_patients, seed=args.seed).adata
            facts[f"{name}_{variant}_train_s"] = round(time.time() - t0, 1)
            print(f"{name} {variant}: {facts[f'{name}_{variant}_train_s']} s", flush=True)
        metrics["cohorts"].append(name)
        for key, row in score(train, test, synthetic, covariate, args.seed).items():
            if key not in metrics["sets"] and key != "ceiling":
                metrics["sets"].append(key)
            metrics.update({f"{name}_{key}_{s}": v for s, v in row.items()})
            print(name, key, {s: round(v, 3) for s, v in row.items()}, flush=True)
        metrics[f"{name}_n_genes"] = int(adata.n_vars)
        metrics[f"{name}_n_train"], metrics[f"{name}_n_test"] = int(train.n_obs), int(test.n_obs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    run = {
        "title": "Gene generator against the Gaussian baselines, per cohort (held-out 25%)",
        "command": f"OMP_NUM_THREADS=1 python scripts/gene_cohorts.py --steps {args.steps} "
        f"--seed {args.seed}",
        "config": "configs/gene_wgan.yaml",
        "seed": args.seed,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
        "steps": args.steps,
        "variants": {v: VARIANTS[v] for v in args.variants},
        "wall_s": round(time.time() - started, 1),
        **facts,
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"wrote {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
