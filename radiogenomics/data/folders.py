"""Output folders and file names: patient ids made safe as file names, and cohort folders
written whole (a temporary sibling whose entries are renamed into place), so a CLI verb never
mixes a new cohort with an old one, never replaces a folder that is not a cohort, and never
removes a user's own files beside a cohort."""

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
    `overwrite`, a cohort folder (it holds a cohort.h5ad), whose own entries are replaced
    (`cohort_folder`). Nothing else is ever replaced."""
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
                f"{out_dir} holds no {COHORT_FILE}: not a cohort folder, so nothing in it is "
                "replaced even with --overwrite; name a new folder"
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
    if path.is_dir():
        raise ValueError(f"{path} is a folder; name the .h5ad file to write")
    if path.suffix != ".h5ad":
        raise ValueError(f"{path}: a cohort is written as a .h5ad file; name one")
    if path.exists():
        if not overwrite:
            raise ValueError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
        if not is_cohort_file(path):
            raise ValueError(
                f"{path} is not a radiogenomics cohort (no uns['rg']), so it is not replaced "
                "even with --overwrite"
            )
    return path


# What the library writes into a cohort folder; `--overwrite` replaces these and nothing else
# (a user's notes or analysis/ beside them stay).
COHORT_ENTRIES = (COHORT_FILE, "images", "masks", "samples.png")
# the hidden working folders `cohort_folder` makes beside OUT: .OUT.HOST-PID.RANDOM.tmp/.old
_WORK = r"\.{name}\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.)?[a-z0-9_]{{8}}\.(?:tmp|old)"
_LEGACY_AGE_S = 3600  # a working folder without an owner (an older version's) is stale after this


@contextlib.contextmanager
def cohort_folder(out_dir: str | Path, overwrite: bool = False):
    """Yield a temporary sibling folder to write a cohort into; on success its entries take
    their place in `out_dir`. A new `out_dir` is renamed into place whole. With `overwrite`, the
    library's own entries of the old cohort (`COHORT_ENTRIES`) are moved aside and deleted only
    after the new ones are in (the h5ad last), and every other file or folder in `out_dir` stays.
    A failure leaves `out_dir` as it was and removes the temporary folder; the working folders
    a killed run left (`.NAME.HOST-PID.*.tmp`, its process gone) are removed by the next one."""
    out_dir = check_folder_output(Path(out_dir).absolute(), overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work(out_dir)
    tmp = _work_folder(out_dir, ".tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
        check_folder_output(out_dir, overwrite)  # still true after the (long) write?
        if out_dir.exists():
            _replace_entries(tmp, out_dir)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_entries(new: Path, out_dir: Path) -> None:
    """Move `new`'s entries into `out_dir`, the old cohort's (`COHORT_ENTRIES`) set aside first
    and deleted after; on a failure the old ones are put back."""
    entries = sorted(new.iterdir(), key=lambda p: p.name == COHORT_FILE)  # the h5ad last
    taken = [
        e.name for e in entries if e.name not in COHORT_ENTRIES and (out_dir / e.name).exists()
    ]
    if taken:  # a writer's new entry must never land on a user's file
        raise ValueError(f"{out_dir} already holds {taken}, which this cohort would replace")
    old = _work_folder(out_dir, ".old")
    moved = []
    try:
        for name in COHORT_ENTRIES:  # the h5ad first: no h5ad is left beside other images
            if (out_dir / name).exists() or (out_dir / name).is_symlink():
                os.replace(out_dir / name, old / name)
                moved.append(name)
        for entry in entries:
            os.replace(entry, out_dir / entry.name)
    except BaseException:
        for name in moved:
            target = out_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(old / name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _work_folder(out_dir: Path, suffix: str) -> Path:
    """A hidden working folder beside `out_dir`, named after it, this host and process."""
    owner = f"{_host()}-{os.getpid()}"
    return Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.{owner}.", suffix=suffix, dir=out_dir.parent)
    )


def remove_stale_work(out_dir: str | Path) -> list[Path]:
    """Remove the working folders (`.NAME.HOST-PID.*.tmp` and `.old`) that an earlier run
    writing `out_dir` left when it was killed: those of this host whose process is gone, and
    ownerless ones (an older version's) older than an hour. Nothing else is touched."""
    import re
    import time

    out_dir = Path(out_dir).absolute()
    pattern = re.compile(_WORK.format(name=re.escape(out_dir.name)))
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for path in out_dir.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if found is None or not path.is_dir() or path.is_symlink():
            continue
        if found["pid"] is None:
            stale = time.time() - path.stat().st_mtime > _LEGACY_AGE_S
        else:
            stale = found["host"] == _host() and not _alive(int(found["pid"]))
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
