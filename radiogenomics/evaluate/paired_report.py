"""The paired report: synthetic paired patients (expression, mask and image) against held-out
real ones in one place, genes, images, pairs, privacy and maps, each beside its real-vs-real
reference and a baseline, as `radiogenomics evaluate` and the demo write it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from radiogenomics._atomic import atomic_write, atomic_write_text
from radiogenomics.evaluate import figures
from radiogenomics.evaluate.genes import CEILING, versus_baseline
from radiogenomics.evaluate.html import Section, write_html
from radiogenomics.evaluate.maps import privacy_and_maps
from radiogenomics.evaluate.memorisation import NEAR_COPY_MAX
from radiogenomics.evaluate.pairs import (
    SHUFFLED,
    SUMMARY,
    is_phantom,
    pair_consistency,
    paired_rows,
    phantom_associations,
    phantom_loadings_fit,
)
from radiogenomics.evaluate.report import (
    AGAINST_GAUSSIAN,
    GAUSSIAN,
    against_gaussian,
    gaussian_verdict,
    gene_headline,
    gene_report,
    image_metrics,
    image_report,
    json_value,
    z_scorer,
)

log = logging.getLogger(__name__)

_GENE_SETS = {
    CEILING: "ceiling",
    "independent Gaussian": "independent_gaussian",
    "multivariate Gaussian": "multivariate_gaussian",
}


def _flat(table: pd.DataFrame, prefix: str, suffixes: dict) -> dict:
    """{prefix_metric[_suffix]: value} for the rows of `table` named in `suffixes`."""
    out = {}
    for row, suffix in suffixes.items():
        if row not in table.index:
            continue
        for col, value in table.loc[row].items():
            out[f"{prefix}_{col}{'_' + suffix if suffix else ''}"] = json_value(value)
    return out


def _std_ratio_median(train: ad.AnnData, real: ad.AnnData, synthetic: ad.AnnData) -> float:
    """Median over genes of the synthetic std over the held-out real std (1 = same spread;
    below 1 a generator that collapses its genes)."""
    z = z_scorer(train)
    real_sd, synth_sd = z(real).std(axis=0), z(synthetic).std(axis=0)
    ok = real_sd > 0
    return float(np.median(synth_sd[ok] / real_sd[ok]))


def _headline_table(m: dict) -> pd.DataFrame:
    """The scores a reader looks at first, each beside what real data (and a baseline) score."""

    def g(key):
        return m.get(key)

    rows = [
        ("genes: distance-matrix ratio", "gene_distance_ratio", "gene_distance_ratio_ceiling",
         "gene_distance_ratio_multivariate_gaussian", "1 = as the real training set"),
        ("genes: dendrogram ratio", "gene_dendrogram_ratio", "gene_dendrogram_ratio_ceiling",
         "gene_dendrogram_ratio_multivariate_gaussian", "1 = as the real training set"),
        ("genes: detection AUC", "gene_detection_auc", "gene_detection_auc_ceiling",
         "gene_detection_auc_multivariate_gaussian", "0.5 = indistinguishable"),
        ("genes: median std ratio", "gene_std_ratio_median", None, None, "1 = same spread"),
        ("images: Frechet radiomic distance", "image_frd", "image_frd_reference",
         "image_frd_baseline", "lower; the reference is the floor"),
        ("images: detection AUC", "image_detection_auc", "image_detection_auc_reference",
         "image_detection_auc_baseline", "0.5 = indistinguishable"),
        ("images: memorisation, median d_train / d_held", "image_memorisation_ratio",
         "image_memorisation_ratio_reference", None,
         "as the reference; copies near 0 (flagged below half of it)"),
        ("images: share of near-copies of training images",
         "image_near_copy_share", "image_near_copy_share_reference",
         None, f"flagged above {NEAR_COPY_MAX:g}"),
        ("images: MS-SSIM diversity", "image_ms_ssim_diversity",
         "image_ms_ssim_diversity_reference", "image_ms_ssim_diversity_baseline",
         "as the reference (higher = more alike)"),
        ("pairs: consistency Spearman", "pair_spearman", "pair_spearman_reference",
         "pair_spearman_shuffled", "as the reference; shuffled pairs are the floor"),
        ("pairs: consistency R2", "pair_r2", "pair_r2_reference", "pair_r2_shuffled",
         "as the reference"),
        ("phantom: planted association (mean Spearman)", "phantom_mean_synthetic",
         "phantom_mean_real", None, "as real patients"),
        ("maps: rank correlation with the real map", "map_rank_correlation",
         "map_reference_heldout", None, "as held-out real vs train (same sizes)"),
        ("maps: the same, half-sized", "map_rank_correlation_halves", "map_reference_halves",
         None, "as one real half vs the other"),
        ("phantom: planted map recovered (AUROC)", "map_auroc_synthetic",
         "map_auroc_heldout", None, "as held-out real (same size); 0.5 = chance"),
    ]  # fmt: skip
    for kind in ("expression", "image", "joint"):
        # the reference of a privacy score is a new real patient's: DCR ratio 1, AUC 0.5
        p = f"privacy_{kind}_"
        rows += [
            (f"privacy ({kind}): DCR ratio", p + "dcr_ratio", 1.0, None,
             "1 = as far as new patients; flagged below 0.5"),
            (f"privacy ({kind}): membership AUC", p + "mia_auc", 0.5, None,
             f"0.5 = nothing leaks; flagged above {g(p + 'mia_threshold') or 0:.2f}"),
        ]  # fmt: skip
    table = pd.DataFrame(
        [
            {
                "score": label,
                "synthetic": g(s),
                "real (ceiling / reference)": g(r) if isinstance(r, str) else r,
                "baseline / floor": g(b) if b else None,
                "good when": note,
            }
            for label, s, r, b, note in rows
            if g(s) is not None
        ]
    ).set_index("score")
    return table.astype({c: float for c in table.columns[:3]})


def paired_report(
    train: ad.AnnData,
    real: ad.AnnData,
    synthetic: ad.AnnData,
    out_dir: str | Path,
    data_cfg,
    *,
    covariate: str | None = None,
    log_csv: str | Path | None = None,
    segmenter=None,
    seed: int = 0,
    embed: bool = False,
    progress: bool = False,
) -> tuple[dict, Path]:
    """Evaluate synthetic paired patients (expression, mask and image) in one report.

    - genes (`gene_report` into `out_dir/genes/`): against held-out `real`, next to the real
      ceiling (`train`) and both Gaussian baselines; plus the median per-gene std ratio;
    - images (`image_report` into `out_dir/images/`, read with `data_cfg`): Frechet radiomic
      distance, diversity, detection AUC (`segmenter`: Dice, encoder distance), next to the
      region-mean baseline and the real-vs-real reference;
    - pairs (`out_dir/pairs/`): `pair_consistency` (consistency.csv) and, when `train` is a
      phantom, `phantom_associations` on the real and the synthetic patients
      (phantom_associations.csv);
    - privacy (`out_dir/privacy/`, `evaluate.privacy`): DCR and membership-inference AUC of the
      expression, image-feature and joint records, each against held-out real patients, with
      a `flag` per record (metrics `privacy_<record>_*`, `privacy_flag`), and the images'
      memorisation (`evaluate.memorisation`: nearest training against nearest held-out image,
      near-copies; metrics `image_memorisation_*` and `image_near_copy_*`, also in the
      headline beside FRD);
    - maps (`out_dir/maps/`, `evaluate.maps`): the synthetic conventional map against the real
      training map (rank correlation of effects), beside held-out real vs train and real half
      vs half at matched sizes (metrics `map_*`; on a phantom also the planted map's AUROC);
    - `log_csv` (a run's log.csv): its loss curves.

    Writes `metrics.json` (flat headline numbers, None for NaN), `report.html` (offline; the
    headline table first, then each part with its figures; `embed` inlines the PNGs) and
    returns `(metrics, path of report.html)`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # pairs first: it checks every cohort has enough pairs before the longer parts run
    pairs = pair_consistency(train, real, synthetic, data_cfg, seed=seed, progress=progress)
    atomic_write(out / "pairs" / "consistency.csv", lambda tmp: pairs.to_csv(tmp))
    genes, _ = gene_report(
        train, real, synthetic, out / "genes", covariate=covariate, seed=seed, privacy=False
    )
    images, _ = image_report(
        real, synthetic, out / "images", data_cfg, segmenter=segmenter, seed=seed,
        progress=progress,
    )  # fmt: skip
    private, mapped = privacy_and_maps(train, real, synthetic, out, data_cfg, seed, progress)
    metrics = _metrics(train, real, synthetic, genes, images, pairs)
    metrics.update({k: json_value(v) for k, v in private[0].items()})
    metrics.update({k: json_value(v) for k, v in mapped[0].items()})
    phantom = _phantom_part(train, real, synthetic, out, data_cfg, metrics, progress)
    _figures(pairs, out, log_csv)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    headline = _headline_table(metrics)
    atomic_write(out / "metrics.csv", lambda tmp: headline.to_csv(tmp))
    sections = _sections(
        metrics, headline, genes, images, pairs, phantom, private[1], mapped[1], out,
        log_csv=log_csv,
    )  # fmt: skip
    report = write_html(
        out / "report.html", "Synthetic paired patients: evaluation", sections, embed=embed
    )
    log.info("paired report written to %s", report)
    return metrics, report


def _metrics(train, real, synthetic, genes, images, pairs) -> dict:
    """The flat headline numbers of the gene, image and pair parts."""
    metrics = {
        "n_train": int(train.n_obs),
        "n_real": int(real.n_obs),
        "n_synthetic": int(synthetic.n_obs),
        "n_pairs_train": len(paired_rows(train)),
        "n_pairs_real": len(paired_rows(real)),
        "n_pairs_synthetic": len(paired_rows(synthetic)),
    }
    metrics.update(_flat(genes, "gene", {"synthetic": "", **_GENE_SETS}))
    metrics["gene_std_ratio_median"] = _std_ratio_median(train, real, synthetic)
    # per gene score, whether the synthetic set beats the multivariate Gaussian
    for score, beats in versus_baseline(genes, "synthetic", GAUSSIAN)["beats"].items():
        metrics[f"gene_{score}_beats_gaussian"] = bool(beats)
    metrics.update(image_metrics(images))
    summary = pairs.xs(SUMMARY, level="component")[["spearman", "pearson", "r2"]]
    metrics.update(
        _flat(summary, "pair", {"synthetic": "", "real (reference)": "reference",
                                SHUFFLED: "shuffled"})
    )  # fmt: skip
    ref = metrics.get("pair_spearman_reference")
    metrics["pair_spearman_ratio"] = (
        json_value(metrics["pair_spearman"] / ref) if ref and metrics["pair_spearman"] else None
    )
    return metrics


def _phantom_part(train, real, synthetic, out, data_cfg, metrics, progress):
    """On a phantom: the planted associations on the real and synthetic patients
    (pairs/phantom_associations.csv, its figure, metrics `phantom_*`); else None."""
    if not is_phantom(train):
        return None
    if not phantom_loadings_fit(train):
        log.warning("the phantom's genes were subset: no planted associations in the report")
        return None
    from radiogenomics.data.dataset import load_images

    assoc = {}
    for name, cohort in (("real", real), ("synthetic", synthetic)):
        rows = paired_rows(cohort)
        imgs, msks = load_images(cohort, data_cfg, rows, progress=progress)
        assoc[name] = phantom_associations(train, cohort[rows], imgs, msks)
    phantom = pd.concat({k: v["spearman"] for k, v in assoc.items()}, axis=1)
    phantom.index.name = "feature"
    atomic_write(out / "pairs" / "phantom_associations.csv", lambda tmp: phantom.to_csv(tmp))
    for name in phantom.columns:
        for feature, value in phantom[name].items():
            metrics[f"phantom_{feature}_{name}"] = json_value(value)
        metrics[f"phantom_mean_{name}"] = json_value(phantom[name].mean())
    figures.grouped_bars(
        phantom,
        title="planted gene-image associations: Spearman(program read from genes, feature)",
        ylabel="Spearman",
        save=out / "phantom_associations.png",
    )
    return phantom


def _figures(pairs, out: Path, log_csv) -> None:
    """The pair consistency per component and (with a run's log) the loss curves."""
    from radiogenomics import pl

    figures.grouped_bars(
        pairs.reset_index()
        .pivot(index="component", columns="set", values="spearman")
        .reindex(
            index=list(pairs.index.unique("component")), columns=list(pairs.index.unique("set"))
        ),
        title="consistency per expression component: Spearman(predicted from image, actual)",
        ylabel="Spearman",
        save=out / "pair_consistency.png",
    )
    if log_csv is not None:
        pl.loss_curves(log_csv, save=out / "loss_curves.png")


def _sections(metrics, headline, genes, images, pairs, phantom, private, mapped, out, *,
              log_csv) -> list[Section]:  # fmt: skip
    """The report's sections, headline first."""
    n = (metrics["n_pairs_train"], metrics["n_pairs_real"], metrics["n_pairs_synthetic"])
    sections = []
    sections.append(
        Section(
            "Headline",
            [
                f"{metrics['n_synthetic']} synthetic patients ({n[2]} pairs) against {metrics['n_real']} "
                f"held-out real patients ({n[1]} pairs); {metrics['n_train']} real training patients "
                f"({n[0]} pairs) give the ceilings, the baselines and the pair predictor. "
                "Every number is in metrics.json; each part's tables are in its folder.",
                "Expression: " + gaussian_verdict(genes, "synthetic"),
            ],
            {"headline scores": headline},
        )
    )
    sections.append(
        Section(
            "Patients",
            [
                "Images with their lesion outlines (red), real held-out and synthetic; several "
                "channels (MRI sequences) one grey panel each, real and synthetic at the same "
                "window (each channel's 1st to 99th percentile over the real images)."
            ],
            figures={
                "real held-out patients": out / "images" / "real_samples.png",
                "synthetic patients": out / "images" / "synthetic_samples.png",
            },
        )
    )
    sections.append(
        Section(
            "Expression",
            [
                "Each set scored against the held-out real patients; 'real (ceiling)' is the "
                "real training set, *_ratio = score / ceiling; the Gaussian baselines are fitted "
                "on the training set (genes/metrics.csv has every score)."
            ],
            {
                "gene scores": gene_headline(genes),
                AGAINST_GAUSSIAN: against_gaussian(genes, "synthetic"),
            },
            {
                "gene-gene distance matrices": out / "genes" / "distance_matrices.png",
                "dendrograms": out / "genes" / "dendrograms.png",
                "PCA of real and synthetic patients": out / "genes" / "embedding.png",
                "per-gene distributions": out / "genes" / "gene_distributions.png",
            },
        )
    )
    sections.append(
        Section(
            "Images",
            [
                "Each set against one half of the real held-out images; 'real (reference)' is "
                "the other half (the floor of a distance), the region-mean baseline fills each "
                "mask with the real mean intensities."
            ],
            {"image scores": images},
        )
    )
    sections.append(
        Section(
            "Pairs: do genes and images belong together?",
            [
                "A ridge regression learns the expression's principal components (PCA of the "
                "real training patients) from image features measured inside each mask, on "
                "the real training pairs. It then predicts the components of the held-out real "
                "pairs (the reference), of the synthetic pairs, and of held-out images paired "
                "with another patient's expression (shuffled: the floor). Synthetic pairs "
                "that belong together score like the reference."
            ],
            {
                "consistency (mean over components)": pairs.xs(SUMMARY, level="component"),
                "per component": pairs.drop(index=SUMMARY, level="component"),
            },
            {"consistency per component": out / "pair_consistency.png"},
        )
    )
    if mapped is not None:
        sections.append(mapped)
    if phantom is not None:
        sections.append(
            Section(
                "Phantom: the planted radiogenomic map",
                [
                    "The phantom plants one lesion feature per gene program. Each patient's "
                    "program scores are read back from its expression with the phantom's "
                    "loadings, the feature is measured on its image; real patients show what "
                    "the phantom's noise allows."
                ],
                {"Spearman(program, feature)": phantom},
                {"planted associations": out / "phantom_associations.png"},
            )
        )
    if private is not None:
        sections.append(private)
    if log_csv is not None:
        sections.append(Section("Training", figures={"loss curves": out / "loss_curves.png"}))
    return sections
