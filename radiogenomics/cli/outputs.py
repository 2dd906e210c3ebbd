"""What a verb may write where: its --out checked before any work, and a folder it created and
left empty removed."""

from __future__ import annotations

from pathlib import Path


def check_out(args) -> None:
    """Refuse, before any work, an --out that would replace what is not this verb's output:
    an existing file where a folder goes, a file that is no cohort, or (without --overwrite) an
    existing cohort. Cohort folders are then written whole (`data.folders.cohort_folder`)."""
    from radiogenomics.data.folders import check_file_output, check_folder_output

    out = getattr(args, "out", None)
    if out is None or getattr(args, "dry_run", False):
        return
    verb = (args.verb, getattr(args, "action", None))
    overwrite = getattr(args, "overwrite", False)
    if verb in (("cohort", "build"), ("cohort", "merge"), ("select-genes", None)):
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


def remove_if_empty(folder: Path) -> None:
    # a folder this run created and left without a file (a failed evaluate, say) goes
    if folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
