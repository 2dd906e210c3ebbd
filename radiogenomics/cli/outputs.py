"""What a verb may write where: its --out checked before any work (never a user's file or
folder, never a cohort folder for a run), the marks by which the library knows its own run and
evaluate folders again, and a folder it created and left empty removed."""

from __future__ import annotations

import json
from pathlib import Path

# written into an --out folder when a verb starts writing there, so a rerun knows it for its own
RUN_MARK = ".radiogenomics-run"
EVALUATE_MARK = ".radiogenomics-evaluate"


def check_out(args) -> None:
    """Refuse, before any work, an --out that would replace what is not this verb's output:
    an existing file where a folder goes, a file that is no cohort, (without --overwrite) an
    existing cohort, a folder the library did not write for `train` and `evaluate`. Cohort
    folders are then written by `data.folders.cohort_folder`."""
    from radiogenomics.data.folders import check_file_output, check_folder_output

    out = getattr(args, "out", None)
    if out is None or getattr(args, "dry_run", False):
        return
    verb = (args.verb, getattr(args, "action", None))
    overwrite = getattr(args, "overwrite", False)
    if verb in (("cohort", "build"), ("cohort", "setup"), ("cohort", "merge"), ("select-genes", None)):  # fmt: skip
        check_file_output(out, overwrite)
    elif verb in (("cohort", "phantom"), ("sample", None)):
        check_folder_output(out, overwrite)
    elif out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; this verb writes a folder there")
    elif verb == ("cohort", "split"):
        for name in ("train.h5ad", "test.h5ad"):
            check_file_output(out / name, overwrite)
    elif verb == ("map", None) and (out / "map.csv").exists() and not overwrite:
        raise ValueError(f"{out} already holds a map (map.csv); pass --overwrite to replace it")
    elif verb == ("train", None):
        check_run_output(out)
    elif verb == ("evaluate", None):
        check_evaluate_output(out, overwrite)


def _cohort_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.h5ad"))


def check_run_output(out: Path) -> None:
    """A run goes into a new or empty folder, or into a run folder of its own (to resume or
    extend it); never into a cohort folder or a folder of the user's files."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    cohorts = _cohort_files(out)
    if cohorts:
        raise ValueError(
            f"--out {out} is a cohort folder (it holds {', '.join(cohorts)}); a run goes in a "
            "folder of its own: name a new one"
        )
    if not is_run_folder(out):
        raise ValueError(
            f"--out {out} is a folder that radiogenomics did not write as a run (its files "
            f"{sorted(p.name for p in out.iterdir())[:5]} would be replaced); name a new folder"
        )


def is_run_folder(folder: Path) -> bool:
    """Whether `train` wrote `folder`: its mark, or (a run of an older version) a checkpoint
    or a model.json naming a model beside its weights."""
    if (folder / RUN_MARK).is_file():
        return True
    if any((folder / c / "state.pt").is_file() for c in ("checkpoint", "checkpoint.old")):
        return True
    try:
        meta = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        return False
    has_weights = (folder / "model.safetensors").is_file()
    return isinstance(meta, dict) and {"model", "format"} <= set(meta) and has_weights


def check_evaluate_output(out: Path, overwrite: bool) -> None:
    """An evaluation goes into a new or empty folder, an earlier evaluation's, or with
    --overwrite any folder that is no cohort or run folder."""
    if not out.is_dir() or not any(out.iterdir()) or (out / EVALUATE_MARK).is_file():
        return
    what = (
        "a cohort folder" if _cohort_files(out) else "a run folder" if is_run_folder(out) else None
    )
    if what is not None:
        raise ValueError(f"--out {out} is {what}; an evaluation goes in a folder of its own")
    if not overwrite:
        raise ValueError(
            f"--out {out} is a folder that `evaluate` did not write (its files may be replaced: "
            f"{sorted(p.name for p in out.iterdir())[:5]}); name a new folder, or pass "
            "--overwrite to write into it"
        )


def mark(folder: Path, name: str, verb: str) -> None:
    """Mark `folder` as written by `verb`, so a rerun knows it (`check_out`)."""
    from radiogenomics._atomic import atomic_write_text

    if not (folder / name).is_file():
        atomic_write_text(folder / name, f"written by `radiogenomics {verb}`\n")


def remove_if_empty(folder: Path) -> None:
    # a folder this run created and left without a file (a failed evaluate, say) goes
    marks = (RUN_MARK, EVALUATE_MARK)  # a mark alone is no output
    files = [
        p for p in folder.rglob("*") if (p.is_file() or p.is_symlink()) and p.name not in marks
    ]
    if folder.is_dir() and not files:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
