"""Atomic file writes: write to a temporary file beside the target, then rename, so that no reader ever sees a
half-written file and an interrupted write leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_folder", "atomic_write"]


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    The temporary file keeps the target's suffixes (``.nii.gz`` writers pick the format from the name) and is
    removed if ``write`` fails. The file gets the permissions of any new file (0666 less the umask), not the
    temporary file's 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:])
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Create the new folder ``path`` whole: ``write(temporary_folder)`` fills a folder beside it, which is then
    renamed to ``path``; it is removed if ``write`` fails, so the folder appears complete or not at all.

    Raises:
        FileExistsError: If ``path`` exists (this never replaces anything).
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        write(staging)
        staging.chmod(0o777 & ~_umask())
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
