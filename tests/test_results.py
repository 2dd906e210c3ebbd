"""docs/results.md and README's results block are what scripts/results.py writes from
docs/results/*/metrics.json (a hand edit fails here), and the script refuses a metrics.json
that lacks a key it needs, naming the file and the key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results.py"


def _copy(tmp_path: Path) -> Path:
    """The files the script reads and writes, in a scratch repository."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    shutil.copytree(ROOT / "docs" / "results", root / "docs" / "results")
    if (ROOT / "docs" / "results.md").is_file():
        shutil.copy(ROOT / "docs" / "results.md", root / "docs" / "results.md")
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_results_are_generated(tmp_path):
    root = _copy(tmp_path)
    result = _run(root)
    assert result.returncode == 0, result.stderr
    for name in ("README.md", "docs/results.md"):
        assert (root / name).read_text() == (ROOT / name).read_text(), (
            f"{name} differs from what scripts/results.py writes: run `make results` "
            "(numbers are edited in docs/results/*/ or the script, never by hand)"
        )
    assert _run(root, "--check").returncode == 0


def test_check_catches_a_hand_edit(tmp_path):
    root = _copy(tmp_path)
    assert _run(root).returncode == 0
    readme = root / "README.md"
    text = readme.read_text()
    start = text.index("<!-- results:start -->")
    edited = text[:start] + text[start:].replace("| 0.", "| 0.9", 1)
    assert edited != text
    readme.write_text(edited)
    result = _run(root, "--check")
    assert result.returncode == 1 and "README.md" in result.stdout


def test_missing_key_is_refused(tmp_path):
    root = _copy(tmp_path)
    path = root / "docs" / "results" / "demo" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["phantom_size_synthetic"]
    path.write_text(json.dumps(metrics))
    result = _run(root)
    assert result.returncode == 2
    assert str(path) in result.stderr and "'phantom_size_synthetic'" in result.stderr
    for name in ("README.md", "docs/results.md"):  # nothing written
        assert (root / name).read_text() == (ROOT / name).read_text()


def test_gene_cohort_table(tmp_path):
    """A gene-cohorts run (scripts/gene_cohorts.py) renders as one row per cohort and set;
    a missing score is refused, naming the key."""
    root = _copy(tmp_path)
    scores = ["distance_ratio", "dendrogram_ratio", "std_ratio", "detection_auc",
              "covariate_gap", "mia_auc"]  # fmt: skip
    metrics = {"table": "gene_cohorts", "cohorts": ["gbm"], "sets": ["preset", "mvn"]}
    metrics |= {f"gbm_{s}_{k}": 0.5 for s in ("preset", "mvn") for k in scores}
    folder = root / "docs" / "results" / "zz_genes"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert _run(root).returncode == 0
    text = (root / "docs" / "results.md").read_text()
    assert "| gbm | preset | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |" in text
    del metrics["gbm_mvn_mia_auc"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    result = _run(root)
    assert result.returncode == 2 and "gbm_mvn_mia_auc" in result.stderr
