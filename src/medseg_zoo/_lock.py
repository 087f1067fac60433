"""One owner per run folder: an OS file lock held for the life of a training process.

The lock is ``RUN/run.lock``, locked with ``flock`` (``msvcrt.locking`` on Windows). The operating system drops it
when the process ends, however it ends, so a crash never leaves a stale lock: a folder whose owner died is free.
The file records who holds it (pid, host, start time, command) for the refusals of other processes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medseg_zoo.errors import OutputError

__all__ = ["LOCK_NAME", "Owner", "RunLock", "owner_of", "refuse_owned"]

LOCK_NAME = "run.lock"
LOCK_FORMAT = "medseg-zoo-run-lock"

if sys.platform == "win32":  # pragma: no cover - CI runs on Linux
    import msvcrt

    def _lock(fd: int, exclusive: bool) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK if exclusive else msvcrt.LK_NBRLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int, exclusive: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _job() -> str:
    """The distributed job this process belongs to (``torchrun``'s run id and rendezvous address), or ``""``: the
    ranks of one job share a run folder, which rank 0 holds."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ""
    keys = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
    return "/".join(os.environ.get(k, "") for k in keys)


@dataclass(frozen=True)
class Owner:
    """The process that holds a run folder."""

    pid: int | None
    host: str
    started: str
    command: str
    job: str = ""

    @property
    def is_this_process(self) -> bool:
        """Whether the holder is this process, or rank 0 of this process's distributed job."""
        return (self.pid == os.getpid() and self.host == socket.gethostname()) or bool(self.job and self.job == _job())

    def __str__(self) -> str:
        since = f", running since {self.started}" if self.started else ""
        return f"process {self.pid if self.pid is not None else '(unknown)'} on {self.host or '(unknown host)'}{since}"


_HELD: dict[Path, tuple[int, Owner]] = {}  # the locks this process holds: resolved lock file -> (fd, owner)


def _read_owner(path: Path) -> Owner:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    pid = info.get("pid")
    return Owner(
        pid if isinstance(pid, int) else None,
        str(info.get("host", "")),
        str(info.get("started", "")),
        str(info.get("command", "")),
        str(info.get("job", "")),
    )


def owner_of(folder: str | os.PathLike) -> Owner | None:
    """The live process that holds ``folder`` (a run folder), or ``None`` when nobody does."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    held = _HELD.get(path.resolve())
    if held is not None:
        return held[1]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _lock(fd, exclusive=False):  # a shared lock is refused only while a process holds the exclusive one
            _unlock(fd)
            return None
    finally:
        os.close(fd)
    return _read_owner(path)


def refuse_owned(path: str | os.PathLike, *, what: str = "output", allow_self: bool = True) -> None:
    """Refuse a path that is, or lies inside, a run folder another training process holds.

    Args:
        path: A file or folder a command is about to write.
        what: How the message names the path.
        allow_self: Let this process write into a folder it holds itself (a run's own checkpoints).

    Raises:
        OutputError: Naming the folder and its owner's pid and host.
    """
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        owner = owner_of(folder)
        if owner is None or (allow_self and owner.is_this_process):
            continue
        where = "is" if folder == path else f"lies inside {folder}, which is"
        raise OutputError(
            f"{what} {path} {where} the run folder of a training run in progress: {owner}. Wait for it to end "
            "(or stop it), or choose another folder"
        )


class RunLock:
    """The lock of one run folder, held from `acquire` to `release` (or the end of the process).

    Args:
        folder: The run folder; created when it does not exist.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the folder, or refuse it when another process (or another run of this one) holds it.

        Raises:
            OutputError: The folder's owner, or a ``run.lock`` that is not medseg-zoo's.
        """
        if self._fd is not None:
            return
        if self.path.is_file() and self.path.stat().st_size and _read_owner(self.path).pid is None:
            try:
                foreign = json.loads(self.path.read_text()).get("format") != LOCK_FORMAT
            except (OSError, ValueError, AttributeError):
                foreign = True
            if foreign:
                raise OutputError(
                    f"{self.path} is a file medseg-zoo did not write: refusing to use it as the run's lock; move it "
                    "or choose another output folder"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock(fd, exclusive=True):
            os.close(fd)
            owner = owner_of(self.folder) or _read_owner(self.path)
            raise OutputError(
                f"output {self.folder} is the run folder of a training run in progress: {owner}. A run folder has one "
                "owner at a time: wait for that run to end (or stop it), or choose another folder"
            )
        me = Owner(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"), " ".join(sys.argv), _job())
        record = {"format": LOCK_FORMAT, **{k: getattr(me, k) for k in ("pid", "host", "started", "command", "job")}}
        os.ftruncate(fd, 0)  # freshly opened: the write starts at offset 0
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        _HELD[self.path.resolve()] = (fd, me)

    def release(self) -> None:
        """Free the folder (the file stays: deleting it would race with a process about to lock it)."""
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
