"""utils/lock.py: one writer per run directory."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from utils.errors import UserError
from utils.lock import acquire, lock_path, release, run_lock


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_taken_released_and_reentrant(tmp_path):
    run = tmp_path / "a" / "seed2"
    path = acquire(run)
    assert path == tmp_path / "a" / ".seed2.lock" and path.read_text() == f"{os.getpid()} {socket.gethostname()}"
    assert acquire(run) == path  # the same process again
    release(run)
    assert not path.exists()
    with run_lock(run):
        assert lock_path(run).exists()
    assert not lock_path(run).exists()


def test_a_live_holder_refuses_and_a_dead_one_is_stale(tmp_path):
    run = tmp_path / "seed2"
    lock_path(run).write_text(f"{os.getppid()} {socket.gethostname()}")  # a live process that is not us
    with pytest.raises(UserError, match=rf"being written by another run \(pid {os.getppid()} on "):
        acquire(run)
    assert lock_path(run).read_text().startswith(str(os.getppid()))  # left alone
    release(run)  # not ours: kept
    assert lock_path(run).exists()
    lock_path(run).write_text(f"{_dead_pid()} {socket.gethostname()}")
    with run_lock(run):
        assert lock_path(run).read_text().startswith(str(os.getpid()))
    assert not lock_path(run).exists()


def test_a_lock_of_another_host_is_reported(tmp_path):
    run = tmp_path / "seed2"
    lock_path(run).write_text("123 some-other-host")
    with pytest.raises(UserError, match=r"pid 123 on some-other-host.*delete"):
        acquire(run)


def test_disabled_lock_takes_nothing(tmp_path):
    with run_lock(tmp_path / "seed2", enabled=False):
        assert not lock_path(tmp_path / "seed2").exists()


def test_is_held(tmp_path):
    from utils.lock import is_held

    run = tmp_path / "seed2"
    assert not is_held(run)
    lock_path(run).write_text(f"{_dead_pid()} {socket.gethostname()}")
    assert not is_held(run)
    lock_path(run).write_text(f"{os.getppid()} {socket.gethostname()}")
    assert is_held(run)
