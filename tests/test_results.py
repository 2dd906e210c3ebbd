"""docs/results.md and README's results block are what scripts/results.py writes from
docs/results/*/metrics.json (a hand edit fails here), and the script refuses a metrics.json
that lacks a key it needs, naming the file and the key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _add_run(root: Path, name: str, metrics: dict, meta: dict) -> None:
    folder = root / "docs" / "results" / name
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps(meta))


def test_side_by_side_table_and_a_real_cohort_run(tmp_path):
    root = _copy(tmp_path)
    demo = json.loads((root / "docs" / "results" / "demo" / "metrics.json").read_text())
    better = dict(demo, image_frd=5.5, image_near_copy_share=0.0)
    for f in ("size", "elongation", "margin", "contrast", "texture", "necrosis"):
        better[f"phantom_{f}_synthetic"] = better[f"phantom_{f}_real"]  # every program held
    _add_run(root, "b", better, {"compare": "Images, 2D phantom", "label": "new", "order": 2})
    _add_run(root, "a", demo, {"compare": "Images, 2D phantom", "label": "old", "steps": 1200})
    # a real cohort: no planted programs, no map, no expression record
    real = {
        k: v
        for k, v in demo.items()
        if not k.startswith(("phantom_", "map_", "privacy_expression_", "privacy_joint_"))
    }
    _add_run(root, "lgg", real, {"compare": "Images, TCGA-LGG", "label": "preset"})
    result = _run(root)
    assert result.returncode == 0, result.stderr
    text = (root / "docs" / "results.md").read_text()
    phantom = text[text.index("## Images, 2D phantom") :].split("\n\n")[2].splitlines()
    assert phantom[2].startswith("| old | 1200 steps | ")  # rows by `order`, then name
    assert phantom[3].startswith("| new |") and "| 5.5 (" in phantom[3]
    held = sum(
        demo[f"phantom_{f}_synthetic"] >= 0.7 * demo[f"phantom_{f}_real"]
        for f in ("size", "elongation", "margin", "contrast", "texture", "necrosis")
    )
    assert phantom[2].endswith(f"| {held} of 6 |") and phantom[3].endswith("| 6 of 6 |")
    lgg = text[text.index("## Images, TCGA-LGG") :].split("\n\n")[2]
    assert "programs" not in lgg.splitlines()[0]  # no planted programs on a real cohort
    section = text[text.index("## lgg") :]
    section = section[: section.find("\n## ", 1)]  # up to the next run's section
    assert "Planted programs" not in section and "| image |" in section


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
    # a k-fold run: mean ± sd
    metrics |= {"folds": 3, "gbm_preset_distance_ratio_sd": 0.0123}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert _run(root).returncode == 0
    text = (root / "docs" / "results.md").read_text()
    assert "(3-fold, mean ± sd over the folds)" in text
    assert "| gbm | preset | 0.500 ± 0.012 | 0.500 | 0.500 |" in text
    del metrics["gbm_mvn_mia_auc"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    result = _run(root)
    assert result.returncode == 2 and "gbm_mvn_mia_auc" in result.stderr


def test_image_memorisation_is_shown_where_the_metrics_hold_it(tmp_path):
    root = _copy(tmp_path)
    path = root / "docs" / "results" / "demo" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.update(
        image_memorisation_ratio=0.12,
        image_memorisation_ratio_reference=0.93,
        image_near_copy_share=0.4,
        image_near_copy_share_reference=0.0,
        image_memorisation_flag=True,
    )
    path.write_text(json.dumps(metrics))
    assert _run(root).returncode == 0
    text = (root / "docs" / "results.md").read_text()
    assert "| images: memorisation, median d_train / d_held | 0.12 | 0.93 |" in text
    assert "| images: share of near-copies of training images | 0.40 | 0.00 |" in text
    assert "near-copies 0.40; flagged: yes." in text


def _benchmark(name, group, variant, mean, **extra):
    """A pytest-benchmark JSON entry as the benchmark suite writes it."""
    info = {"device": "cpu (1 thread)", "dtype": "fp32", "batch": 16, "shape": [32, 32],
            "size": "smoke", "samples_per_s": 16 / mean, **extra}  # fmt: skip
    if variant:
        info["variant"] = variant
    return {"name": name, "group": group, "extra_info": info,
            "stats": {"mean": mean, "stddev": 0.01, "rounds": 3}}  # fmt: skip


def test_throughput_table(tmp_path):
    """scripts/throughput.py turns a pytest-benchmark JSON into a results folder, with the
    library case's speed-up over its group's eager fp32 reference; results.py renders it,
    and refuses a case without its samples/s."""
    root = _copy(tmp_path)
    bench = {
        "datetime": "2026-12-08T10:00:00",
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "benchmarks": [
            _benchmark("test_joint_step[eager-fp32-cpu]", "joint", "eager-fp32", 0.5),
            _benchmark("test_joint_step[library-cpu]", "joint", "library", 0.25, mfu=0.3),
            _benchmark("test_phantom_render[2d]", None, None, 0.1),
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    out = root / "docs" / "results" / "throughput"
    convert = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "throughput.py"), str(tmp_path / "bench.json"),
         "--out", str(out), "--machine", "a test"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert convert.returncode == 0, convert.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert metrics["table"] == "throughput" and metrics["size"] == "smoke"
    library = [c for c in metrics["cases"] if c.get("variant") == "library"][0]
    assert library["speedup_vs_eager_fp32"] == pytest.approx(2.0)
    assert run["commit"] == "0123456" and run["date"] == "2026-12-08"
    assert run["machine"] == "a test" and run["device"] == "cpu (1 thread)"
    assert _run(root).returncode == 0
    text = (root / "docs" / "results.md").read_text()
    row = "| joint_step[library-cpu] | cpu (1 thread) | fp32 | 16 | 32x32 | 250.0 | 64 | 2.00x | 30.0% |"
    assert row in text
    assert "| phantom_render[2d] | cpu (1 thread) | fp32 | 16 | 32x32 | 100.0 | 160 |  |  |" in text
    del metrics["cases"][0]["samples_per_s"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    result = _run(root)
    assert result.returncode == 2 and "'samples_per_s'" in result.stderr


def test_throughput_refuses_a_foreign_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [{"name": "test_x", "extra_info": {},
                                                "stats": {"mean": 1.0}}]}))  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "throughput.py"), str(path), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        result.returncode == 2 and "'test_x'" in result.stderr and "samples_per_s" in result.stderr
    )
    assert not (tmp_path / "out").exists()
