"""Output folders and file names: patient ids made safe as file names, and cohort folders
written whole (a temporary sibling renamed into place), so a CLI verb never mixes a new cohort
with an old one and never replaces a folder that is not a cohort."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

COHORT_FILE = "cohort.h5ad"  # the h5ad of a cohort folder (phantom, synthetic sample)


def file_stems(ids) -> list[str]:
    """File names for patient ids: only [A-Za-z0-9._-], never hidden, at most 100 characters,
    and unique even where the file system ignores case. An id that had to change gets a short
    hash of itself, so two ids that sanitise alike still get their own files; a rare remaining
    clash gets a counter. (An id like '../../x' would otherwise write outside the folder.)"""
    stems, seen = [], set()
    for pid in map(str, ids):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", pid)[:100]
        stem = re.sub(r"^\.", "_", stem) or "_"
        if stem != pid:
            stem += "-" + hashlib.sha1(pid.encode()).hexdigest()[:8]
        base, n = stem, 1
        while stem.lower() in seen:
            n += 1
            stem = f"{base}-{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def check_folder_output(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Raise unless `out_dir` may receive a new cohort folder: absent or empty, or, with
    `overwrite`, a cohort folder (it holds a cohort.h5ad). Nothing else is ever replaced."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder; name a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out_dir} is not empty; pass --overwrite (overwrite=True) to replace the "
                "cohort in it, or name a new folder"
            )
        if not (out_dir / COHORT_FILE).is_file():
            raise ValueError(
                f"{out_dir} holds no {COHORT_FILE}: not a cohort folder, so it is not replaced "
                "even with --overwrite; name a new folder"
            )
    return out_dir


def is_cohort_file(path: str | Path) -> bool:
    """Whether `path` is an h5ad written as a cohort (it has `uns/rg`), without reading it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "uns/rg" in f
    except OSError:  # not HDF5 at all
        return False


def check_file_output(path: str | Path, overwrite: bool = False) -> Path:
    """Raise unless `path` may receive a cohort .h5ad: absent, or, with `overwrite`, a cohort
    file. A name without .h5ad (notes.txt) is refused, so no other file is ever replaced."""
    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"{path}: a cohort is written as a .h5ad file; name one")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; name the .h5ad file to write")
    if path.exists():
        if not overwrite:
            raise ValueError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
        if not is_cohort_file(path):
            raise ValueError(
                f"{path} is not a radiogenomics cohort (no uns['rg']), so it is not replaced "
                "even with --overwrite"
            )
    return path


@contextlib.contextmanager
def cohort_folder(out_dir: str | Path, overwrite: bool = False):
    """Yield a temporary sibling folder to write a cohort into; on success it takes `out_dir`'s
    place whole, so the h5ad and its image files are replaced together or not at all. With
    `overwrite`, the old folder is moved aside and deleted only after the new one is in place.
    A failure leaves `out_dir` as it was and removes the temporary folder (a kill may leave a
    hidden `.NAME.*.tmp` beside it, never a mixed `out_dir`)."""
    out_dir = check_folder_output(Path(out_dir).absolute(), overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        check_folder_output(out_dir, overwrite)  # still true after the (long) write?
        if out_dir.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent)
            )
            os.replace(out_dir, old / "cohort")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "cohort", out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
