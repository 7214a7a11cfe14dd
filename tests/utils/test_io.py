"""utils/io.py: atomic writes (rename semantics, the mode of a plain ``open``, the writer's pid in the
temporary's name) and ``remove_stale_tmp`` (issue 13 item 8)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.io import (_host, atomic_save_npz, atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_json,
                      current_umask, remove_stale_tmp)

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def umask():
    """``umask(m)`` sets the process umask for the test; the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "bytes": lambda p: atomic_write_bytes(p, b"abc"),
    "json": lambda p: atomic_write_json(p, {"a": 1}),
    "npz": lambda p: atomic_save_npz(p, x=np.arange(3)),
    "torch": lambda p: atomic_torch_save(p, {"w": torch.zeros(2)}),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_file_has_the_mode_of_a_plain_open(tmp_path, umask, kind, mask, expected):
    umask(mask)
    path = tmp_path / f"out.{kind}"
    WRITERS[kind](path)
    assert mode(path) == expected
    plain = tmp_path / "plain"
    with open(plain, "w"):
        pass
    assert mode(plain) == expected


def test_overwrite_gets_the_umask_mode_too(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "a.json"
    path.write_text("old")
    os.chmod(path, 0o600)  # e.g. written before the fix
    atomic_write_json(path, [1])
    assert mode(path) == 0o644 and json.loads(path.read_text()) == [1]


def test_current_umask_does_not_change_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027
    m = os.umask(0o022)
    assert m == 0o027


def test_temporary_carries_the_writer_pid_and_final_mode(tmp_path, umask):
    umask(0o022)
    seen = []

    def write(f):
        seen.extend(p for p in tmp_path.iterdir())
        f.write(b"x")

    atomic_write(tmp_path / "model.v2.pt", write)
    assert len(seen) == 1
    name = seen[0].name
    assert name.startswith(f".model.v2.pt.pid{os.getpid()}-{_host()}.") and name.endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["model.v2.pt"]
    assert mode(tmp_path / "model.v2.pt") == 0o644


def test_failed_write_leaves_target_and_directory_as_they_were(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 1})

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_creates_missing_parent(tmp_path):
    path = tmp_path / "a" / "b" / "c.bin"
    atomic_write_bytes(path, b"1")
    assert path.read_bytes() == b"1"


def test_remove_stale_tmp_keeps_live_writers_and_other_files(tmp_path):
    dead, live = dead_pid(), os.getpid()
    stale = [tmp_path / f".checkpoint.pt.pid{dead}.ab_c9xyz.tmp",
             tmp_path / ".checkpoint.pt.k2j4h5g6.tmp",          # old format: no pid
             tmp_path / ".model.v2.pt.pid99999999999999999999.abcdefgh.tmp"]  # no such pid can exist
    kept = [tmp_path / f".checkpoint.pt.pid{live}.qwertyui.tmp",
            tmp_path / f".model.v2.pt.pid{live}.asdfghjk.tmp",
            tmp_path / "checkpoint.pt", tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / ".tmp"]
    for p in stale + kept:
        p.write_bytes(b"x" * 10)
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = sub / f".a.pid{dead}.zzzzzzzz.tmp"
    nested.write_bytes(b"")
    (tmp_path / ".dir.tmp").mkdir()

    removed = remove_stale_tmp(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert nested.exists() and (tmp_path / ".dir.tmp").is_dir()
    assert remove_stale_tmp(tmp_path) == []


def test_remove_stale_tmp_keeps_a_process_of_another_user(tmp_path):
    # pid 1 lives; as another user os.kill raises PermissionError, which still means alive
    p = tmp_path / ".x.pid1.abcdefgh.tmp"
    p.write_bytes(b"")
    assert remove_stale_tmp(tmp_path) == [] and p.exists()


def test_remove_stale_tmp_of_a_missing_directory(tmp_path):
    assert remove_stale_tmp(tmp_path / "nope") == []


def test_a_killed_writer_leaves_a_temporary_that_is_then_removed(tmp_path):
    target = tmp_path / "checkpoint.pt"
    code = ("import os, sys; from utils.io import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO, env=env)
    assert r.returncode == 9
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.pt.pid") and not target.exists()
    assert remove_stale_tmp(tmp_path) == left
    assert list(tmp_path.iterdir()) == []


def test_another_hosts_temporaries_are_kept(tmp_path):
    """On a shared filesystem another node's writer cannot be checked: its file stays; this host's
    dead writer's goes."""
    dead = _dead_pid_for_host_test()
    other = tmp_path / f".checkpoint.pt.pid{dead}-othernode.abcdefgh.tmp"
    mine = tmp_path / f".checkpoint.pt.pid{dead}-{_host()}.ijklmnop.tmp"
    for p in (other, mine):
        p.write_bytes(b"x")
    assert remove_stale_tmp(tmp_path) == [mine]
    assert other.exists()


def _dead_pid_for_host_test() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
