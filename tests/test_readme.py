"""The README and the docs pages run as written: every python block prints what it should,
the README's command-line block runs, the README stays short, and docs/cli.md names every
flag of every verb."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
# A guard against a hung example, not a speed test: under load the examples take minutes.
HANG_TIMEOUT_S = 1800

# (file, index of its python block) -> what its output must contain. A new python block in
# one of these files needs its markers here (test_every_python_block_has_markers).
PYTHON_BLOCKS = {
    ("README.md", 0): [
        "(64, 128) (64, 1, 32, 32) (64, 1, 32, 32)",  # synthetic expression, images, masks
        "necrosis",  # the planted associations' table
    ],
    ("docs/data.md", 0): ["torch.Size([1, 32, 32, 32])", "(256, 6)"],
    ("docs/methods.md", 0): [
        "(150, 256) ['B'] (150, 256)",
        "multivariate Gaussian",
        "real (ceiling)",
    ],
    ("docs/methods.md", 1): ["(8, 1, 32, 32) (8, 1, 32, 32)", "(6, 1, 32, 32)"],
}


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _workdir(tmp_path: Path) -> Path:
    """A scratch folder that, like the repository root, has `configs/`."""
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    return tmp_path


def test_every_python_block_has_markers():
    found = {
        (name, i)
        for name in {name for name, _ in PYTHON_BLOCKS}
        for i in range(len(_blocks(ROOT / name, "python")))
    }
    assert found == set(PYTHON_BLOCKS), (
        f"python blocks without markers: {sorted(found - set(PYTHON_BLOCKS))}; "
        f"markers without a block: {sorted(set(PYTHON_BLOCKS) - found)}"
    )


@pytest.mark.parametrize(
    ("name", "index"), list(PYTHON_BLOCKS), ids=[f"{n}[{i}]" for n, i in PYTHON_BLOCKS]
)
def test_python_block_runs(name, index, tmp_path):
    code = _blocks(ROOT / name, "python")[index]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=_workdir(tmp_path),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for marker in PYTHON_BLOCKS[name, index]:
        assert marker in result.stdout, f"{marker!r} not in the output:\n{result.stdout[-2000:]}"


def _commands(block: str) -> list[list[str]]:
    """The block's commands, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def _cli_block() -> str:
    blocks = [b for b in _blocks(README, "bash") if "radiogenomics train" in b]
    assert len(blocks) == 1, "README needs one bash block with the command-line run"
    return blocks[0]


def test_readme_cli_block_covers_the_chain():
    verbs = [" ".join(c[1:3]) if c[1] == "cohort" else c[1] for c in _commands(_cli_block())]
    for verb in ("cohort phantom", "cohort split", "train", "sample", "evaluate", "map"):
        assert verb in verbs, f"README's command-line block lacks `radiogenomics {verb}`"
    assert all(c[0] == "radiogenomics" for c in _commands(_cli_block()))


@pytest.mark.slow
def test_readme_cli_block_runs(tmp_path):
    """The block as written (its step counts are already tiny), in a scratch folder."""
    cwd = _workdir(tmp_path)
    for command in _commands(_cli_block()):
        result = subprocess.run(
            [sys.executable, "-m", "radiogenomics", "-q", *command[1:]],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=HANG_TIMEOUT_S,
        )
        assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stderr[-2000:]}"
    for path in ("synthetic/cohort.h5ad", "eval/report.html", "map/map.csv", "learned_map"):
        assert (cwd / path).exists(), path


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into docs/"


def _flags(parser: argparse.ArgumentParser, path: str = "") -> dict[str, set[str]]:
    """{verb path: its long options}, recursing into sub-commands."""
    out = {path: {o for a in parser._actions for o in a.option_strings if o.startswith("--")}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_flags(sub, f"{path} {name}".strip()))
    return out


def test_cli_reference_names_every_flag():
    from radiogenomics.cli.parser import build_parser

    text = (ROOT / "docs" / "cli.md").read_text()
    missing = []
    for verb, flags in _flags(build_parser()).items():
        if verb and f"radiogenomics {verb}" not in text:
            missing.append(f"radiogenomics {verb}")
        missing += [f"{verb} {f}" for f in sorted(flags) if not re.search(rf"{f}\b", text)]
    assert not missing, f"docs/cli.md does not mention: {missing} (regenerate from --help)"
