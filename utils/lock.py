"""One writer per run directory: a lock file beside it, released on exit, stale locks detected by pid.

``<parent>/.<run>.lock`` holds ``<pid> <host>``. It is created with ``O_CREAT | O_EXCL``, so of two
runs of the same directory started at once exactly one gets it; the other is refused in one line
(exit status 2). A lock left by a killed writer on this host (its pid no longer runs) is stale and
taken over; a lock of another host cannot be checked and is reported with its path.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from utils.errors import UserError


def lock_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` recorded in a lock file; None when unreadable or malformed."""
    try:
        pid, host = path.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


def is_held(run_dir: str | Path) -> bool:
    """Whether a live writer (or one on another host, which cannot be checked) holds the lock."""
    holder = _holder(lock_path(run_dir))
    if holder is None:
        return lock_path(run_dir).exists()
    return holder[1] != socket.gethostname() or _alive(holder[0])


def acquire(run_dir: str | Path) -> Path:
    """Take the lock of ``run_dir`` (its parent is created); a live holder is a :class:`UserError`."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder[1] == socket.gethostname() and holder[0] == os.getpid():
                return path  # re-entrant within one process
            if holder is not None and holder[1] == socket.gethostname() and not _alive(holder[0]):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its writer was killed
                continue
            who = f"pid {holder[0]} on {holder[1]}" if holder else "an unknown process"
            raise UserError(f"{run_dir} is being written by another run ({who}); wait for it to finish "
                            f"(if no such run is alive, delete {path})") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return path
    raise UserError(f"{run_dir}: could not take the lock {path}")


def release(run_dir: str | Path) -> None:
    """Remove the lock of ``run_dir`` if this process holds it."""
    path = lock_path(run_dir)
    holder = _holder(path)
    if holder is not None and holder == (os.getpid(), socket.gethostname()):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of ``run_dir`` for the ``with`` block (``enabled`` False: no lock, e.g. the
    non-main ranks of a data-parallel run)."""
    if not enabled:
        yield
        return
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)
