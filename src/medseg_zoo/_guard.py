"""May this command write here? One check shared by every command that writes (train, evaluate, predict, demo).

A command never writes onto one of its own inputs, nor inside the data set or checkpoint it reads, nor into the
run folder of a training run in progress (`medseg_zoo._lock`), and never into a folder it cannot write; each
refusal happens before any work and names the path and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from medseg_zoo._lock import refuse_owned
from medseg_zoo.errors import OutputError

__all__ = ["check_output_file", "check_output_folder", "same_file"]

Protected = Mapping[str, str | os.PathLike]  # what it is ("the data set") -> its folder


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (after resolving links; hard links count too)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _writable_parent(path: Path, what: str) -> None:
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {parent} is not a writable folder")


def check_output_file(
    output: str | os.PathLike,
    *,
    suffixes: Sequence[str] = (),
    reads: Sequence[str | os.PathLike] = (),
    protected: Protected | None = None,
    what: str = "output",
) -> Path:
    """Refuse a file path that must not be written: a wrong suffix, an existing folder, one of the command's
    inputs, a path inside a folder the command reads or inside a live run's folder, or an unwritable place.

    Args:
        output: The file to write.
        suffixes: Accepted endings (e.g. ``(".nii.gz", ".nii")``); any when empty.
        reads: Files the command reads.
        protected: Folders the command reads (``{"the data set": root}``): nothing is written inside them.
        what: How the message names the path (``"output"``, ``"--output"``).

    Raises:
        OutputError: Naming the path and what was expected.
    """
    path = Path(output)
    if suffixes and not path.name.endswith(tuple(suffixes)):
        raise OutputError(f"{what} {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{what} {path} is an existing folder; expected a file name")
    for source in reads:
        if same_file(path, source):
            raise OutputError(f"{what} {path} is the input {source}: refusing to replace an input; choose another path")
    for name, folder in (protected or {}).items():
        if _inside(path, Path(folder)):
            raise OutputError(
                f"{what} {path} lies inside {name} {folder}, which this command reads: choose a path outside it"
            )
    refuse_owned(path, what=what)
    _writable_parent(path, what)
    return path


def check_output_folder(output: str | os.PathLike, *, protected: Protected | None = None, what: str = "output") -> Path:
    """Refuse a folder that must not be written: an existing file, a folder that holds or lies inside one the
    command reads, a live run's folder (or one inside it), or an unwritable place. (What may be replaced inside it
    is the caller's rule.)

    Raises:
        OutputError: Naming the path and what was expected.
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; expected a folder")
    for name, folder in (protected or {}).items():
        if _inside(path, Path(folder)) or _inside(Path(folder), path):
            raise OutputError(
                f"{what} {path} overlaps {name} {folder}, which this command reads: choose a folder outside it"
            )
    refuse_owned(path, what=what)
    if not path.exists():
        _writable_parent(path, what)
    elif not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} is not writable")
    return path
