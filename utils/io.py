"""Atomic file writes: write to a temporary file in the target directory, then rename.

A run killed mid-write never leaves a half-written artifact behind (DESIGN.md §5, §6). The
temporary file is ``.<name>.pid<writer pid>-<host>.<random>.tmp``; ``remove_stale_tmp`` deletes
those of this host whose writer is gone (another node's, on a shared filesystem, cannot be checked
and are kept). A written file gets the mode a plain ``open(path, "w")`` gives a new file
(``0o666 & ~umask``), not ``mkstemp``'s 0600.
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


TMP_SUFFIX = ".tmp"
_PID_MARK = "pid"


def current_umask() -> int:
    """The process umask, read from /proc/self/status when available (else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)  # racy with other threads creating files; only where /proc is missing
    os.umask(mask)
    return mask


def _host() -> str:
    """This machine's short host name, reduced to ``[A-Za-z0-9-]`` (it sits inside a file name)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname().split(".")[0]) or "host"


def _writer_mark() -> str:
    return f"{_PID_MARK}{os.getpid()}-{_host()}"


def _tmp_writer(name: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of the writer a temporary file's name carries (host None in names written
    before it was recorded), or None (a name without a pid)."""
    parts = name[: -len(TMP_SUFFIX)].rsplit(".", 2)  # [".<target>", "pid<N>[-<host>]", "<random>"]
    m = re.fullmatch(rf"{_PID_MARK}(\d+)(?:-([A-Za-z0-9-]+))?", parts[1]) if len(parts) == 3 else None
    return (int(m.group(1)), m.group(2)) if m else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this machine (one of another user counts as live)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: assume it lives
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no such pid can exist
        return False
    except OSError:  # PermissionError: a process of another user
        return True
    return True


def remove_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Delete the atomic-write temporaries ``.*.tmp`` in ``directory`` (not recursive) whose writer
    process is gone or whose name carries no pid; return the paths removed. Best effort: a file that
    cannot be removed is left alone."""
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.iterdir()):
        name = p.name
        if not (name.startswith(".") and name.endswith(TMP_SUFFIX) and len(name) > len(TMP_SUFFIX) + 1):
            continue
        if p.is_symlink() or not p.is_file():
            continue
        writer = _tmp_writer(name)
        if writer is not None and (writer[1] not in (None, _host()) or _alive(writer[0])):
            continue  # a live writer here, or another node's that cannot be checked
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path`` and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer_mark()}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        mode = 0o666 & ~current_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n"
    atomic_write_bytes(path, text.encode())


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` to ``path`` atomically (the name is kept as given)."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def load_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, torch's warnings silenced: a file it
    refuses (code in the pickle, another format) raises, and the caller reports that in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)
