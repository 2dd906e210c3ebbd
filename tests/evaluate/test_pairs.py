"""Paired evaluation on a small 2D phantom: cross-modal consistency (real pairs against broken
ones), the planted gene-image associations, the offline HTML report and the CLI route."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from radiogenomics.cli import main
from radiogenomics.config import DataConfig
from radiogenomics.data.cohort import split_cohort
from radiogenomics.data.dataset import load_images
from radiogenomics.data.h5ad import read_cohort
from radiogenomics.data.phantom import FEATURES, make_phantom, write_phantom
from radiogenomics.evaluate.html import Section, write_html
from radiogenomics.evaluate.pairs import (
    REFERENCE,
    SHUFFLED,
    SUMMARY,
    SYNTHETIC,
    pair_consistency,
    paired_rows,
    phantom_associations,
    program_scores,
)

DATA = DataConfig(spatial_dims=2)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """60 paired 2D patients at 32x32 (seed 0), on disk."""
    out = tmp_path_factory.mktemp("pairs") / "phantom"
    return write_phantom(make_phantom(60, 2, size=32, seed=0, progress=False), out, progress=False)


@pytest.fixture(scope="module")
def split(written):
    """(train, test): 42 and 18 patients."""
    return split_cohort(read_cohort(written), 0.3, seed=0)


def _broken(cohort, seed=1):
    """The same patients with their expression rows shuffled: every pair broken."""
    out = cohort.copy()
    out.X = cohort.X[np.random.default_rng(seed).permutation(cohort.n_obs)]
    return out


def _summary(table):
    return table.xs(SUMMARY, level="component")


def test_real_pairs_score_as_the_reference(split):
    train, test = split
    table = _summary(pair_consistency(train, test, test, DATA))
    # the held-out patients themselves: exactly the reference
    np.testing.assert_allclose(table.loc[SYNTHETIC], table.loc[REFERENCE])
    # images do predict the genes (measured: Spearman 0.47, R2 0.22) ...
    assert table.loc[REFERENCE, "spearman"] > 0.3
    # ... and shuffled pairs do not (measured: Spearman -0.05, R2 -0.90)
    assert abs(table.loc[SHUFFLED, "spearman"]) < 0.15
    assert table.loc[SHUFFLED, "r2"] < table.loc[REFERENCE, "r2"] - 0.5
    assert (table["n_pairs"] == 18).all()


def test_broken_pairs_lose_their_consistency(split):
    train, test = split
    table = _summary(pair_consistency(train, test, _broken(test), DATA))
    # measured: synthetic Spearman -0.07 against the reference's 0.47
    assert table.loc[SYNTHETIC, "spearman"] < table.loc[REFERENCE, "spearman"] - 0.3
    assert table.loc[SYNTHETIC, "r2"] < 0  # worse than predicting the mean (measured -0.67)


def test_radiomic_features_work_too(split):
    train, test = split
    table = _summary(pair_consistency(train, test, _broken(test), DATA, features="radiomic"))
    assert table.loc[REFERENCE, "spearman"] > table.loc[SYNTHETIC, "spearman"] + 0.2


def test_phantom_associations_recover_the_planted_map(split):
    train, test = split
    rows = paired_rows(test)
    images, masks = load_images(test, DATA, rows)
    real = phantom_associations(train, test[rows], images, masks)
    assert list(real.index) == list(FEATURES)
    # measured: size 0.98, elongation 0.84, margin 0.92, contrast 0.68, texture 0.40,
    # necrosis 0.69; reading the programs back from genes loses little against the truth
    assert real.loc["size", "spearman"] > 0.9 and real.loc["contrast", "spearman"] > 0.4
    assert (real["spearman"] > 0.2).all()
    assert (abs(real["spearman"] - real["spearman_true"]) < 0.15).all()
    scores = program_scores(train, test)
    truth = test.obsm["rg_programs"]
    for p in FEATURES:  # the read-back programs follow the true ones closely
        assert np.corrcoef(scores[p], truth[p])[0, 1] > 0.9, p
    broken = phantom_associations(train, _broken(test)[rows], images, masks)
    assert broken["spearman"].mean() < 0.2  # measured -0.13, against 0.75 for real pairs


def test_too_few_pairs_is_an_error_naming_the_cohort(split):
    train, test = split
    few = test.copy()
    few.obs["has_image"] = np.arange(few.n_obs) < 4
    with pytest.raises(ValueError, match=r"cohort 'synthetic' has 4 paired patient"):
        pair_consistency(train, test, few, DATA)
    with pytest.raises(ValueError, match=r"cohort 'real' has 4 paired patient"):
        pair_consistency(train, few, test, DATA)


def test_write_html_escapes_and_links_figures(tmp_path):
    from matplotlib.figure import Figure

    png = tmp_path / "figs" / "a.png"
    png.parent.mkdir()
    Figure().savefig(png)
    table = pd.DataFrame({"score <b>": [0.5, np.nan]}, index=pd.Index(["x & y", "z"], name="set"))
    path = write_html(
        tmp_path / "r.html", "T <1>", [Section("S", ["p & q"], {"t": table}, {"f": png})]
    )
    text = path.read_text()
    assert "<h1>T &lt;1&gt;</h1>" in text and "score &lt;b&gt;" in text and "x &amp; y" in text
    assert '<img src="figs/a.png"' in text and "http" not in text
    embedded = write_html(tmp_path / "e.html", "T", [Section("S", figures={"f": png})], embed=True)
    assert 'src="data:image/png;base64,' in embedded.read_text()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_html(
            tmp_path / "m.html", "T", [Section("S", figures={"f": tmp_path / "missing.png"})]
        )


def test_cli_routes_paired_cohorts_to_one_report(written, tmp_path, capsys):
    import re

    assert main(["-q", "cohort", "split", str(written), "--out", str(tmp_path / "split"),
                 "--test-fraction", "0.3"]) == 0  # fmt: skip
    train, test = tmp_path / "split" / "train.h5ad", tmp_path / "split" / "test.h5ad"
    log = tmp_path / "log.csv"
    pd.DataFrame(
        {"step": [1, 2, 3], "critic": [1.0, 0.5, 0.2], "generator": [0.1, 0.3, 0.2]}
    ).to_csv(log, index=False)
    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["-q", "evaluate", "--train", str(train), "--real", str(test), "--synthetic",
                 str(test), "--covariate", "subtype", "--log", str(log), "--out",
                 str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and str(out / "metrics.json") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("gene_distance_ratio", "gene_detection_auc", "gene_std_ratio_median",
                "gene_covariate_gap", "image_frd", "image_frd_reference", "pair_spearman",
                "pair_spearman_reference", "pair_spearman_shuffled", "phantom_size_real",
                "phantom_size_synthetic"):  # fmt: skip
        assert key in metrics, key
    assert metrics["pair_spearman"] == pytest.approx(metrics["pair_spearman_reference"])
    assert metrics["phantom_size_synthetic"] > 0.8
    # the "synthetic" patients are the held-out ones: exactly as far from the training patients
    # (DCR ratio 1), never flagged, and the same map as the held-out reference
    for kind in ("expression", "image", "joint"):
        assert metrics[f"privacy_{kind}_dcr_ratio"] == pytest.approx(1.0), kind
        assert metrics[f"privacy_{kind}_flag"] is False
        assert metrics[f"privacy_{kind}_mia_auc"] < 0.5  # the non-members are the synthetic set
    assert metrics["privacy_flag"] is False
    # per gene score, whether the synthetic expression beats the multivariate Gaussian
    for score in ("distance_ratio", "dendrogram_ratio", "std_ratio", "detection_auc"):
        assert isinstance(metrics[f"gene_{score}_beats_gaussian"], bool), score
    assert "the multivariate Gaussian" in printed
    # the images are the held-out ones, no copies of training images
    assert metrics["image_memorisation_flag"] is False
    assert metrics["image_augmentation_leak_flag"] is False  # real images show no augmentation
    assert metrics["image_near_copy_share"] == 0.0
    assert metrics["map_rank_correlation"] == pytest.approx(metrics["map_reference_heldout"])
    assert -1 <= metrics["map_reference_halves"] <= 1
    assert "map_metagenes_rank_correlation" in metrics and "map_auroc_real" in metrics
    html = (out / "report.html").read_text()
    assert "headline scores" in html and "pairs: consistency Spearman" in html
    assert (
        "Against the multivariate Gaussian" in html and "Expression: &#x27;synthetic&#x27;" in html
    )
    assert "privacy (joint): membership AUC" in html and "maps: rank correlation" in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 12 and "loss_curves.png" in " ".join(sources)
    assert "images: share of near-copies of training images" in html
    for fig in ("privacy/dcr.png", "privacy/memorisation.png", "maps/real_map.png", "maps/synthetic_map.png",
                "maps/effects.png"):  # fmt: skip
        assert fig in sources, fig
    for src in sources:
        assert (out / src).is_file() and (out / src).stat().st_size > 1000, src
    assert str(out / "privacy" / "privacy.csv") in printed
    assert str(out / "privacy" / "memorisation.csv") in printed
    assert (out / "pairs" / "consistency.csv").is_file()
    assert (out / "pairs" / "phantom_associations.csv").is_file()


def test_a_gene_subset_phantom_is_refused_clearly(split):
    train, test = split
    with pytest.raises(ValueError, match="loadings have 256 rows"):
        program_scores(train[:, :200].copy(), test)
