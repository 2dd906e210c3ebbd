"""The README's Python example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# A guard against a hung example, not a speed test: under load the examples take minutes.
HANG_TIMEOUT_S = 1800


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([1, 32, 32, 32])" in result.stdout
    assert "(256, 6)" in result.stdout


def test_readme_gene_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README has no gene example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[1]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(150, 256) ['B'] (150, 256)" in result.stdout
    assert "multivariate Gaussian" in result.stdout and "real (ceiling)" in result.stdout


def test_readme_image_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "README has no image example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[2]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(8, 1, 32, 32) (8, 1, 32, 32)" in result.stdout
    assert "(6, 1, 32, 32)" in result.stdout
