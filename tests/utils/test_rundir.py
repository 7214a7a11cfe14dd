"""utils/rundir.py: prepare_run_dir (refusals, --resume, --overwrite, removal of stale atomic-write
temporaries), check_writable, and the modes of the artifacts written (issue 13 item 8)."""
from __future__ import annotations

import json

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from utils.errors import UserError
from utils.rundir import (check_writable, commit_run_dir, is_complete, prepare_run_dir, save_model, write_config, write_metrics,
                          write_outputs)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def tmp_files(run_dir: Path) -> tuple[Path, Path]:
    """A stale temporary (its writer has exited) and a live one (this process) in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = run_dir / f".checkpoint.pt.pid{dead_pid()}.abcdefgh.tmp"
    live = run_dir / f".checkpoint.pt.pid{os.getpid()}.ijklmnop.tmp"
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"y")
    return stale, live


@pytest.mark.parametrize("resume", [False, True])
def test_prepare_removes_only_the_stale_temporary(tmp_path, resume):
    run_dir = tmp_path / "run"
    stale, live = tmp_files(run_dir)
    assert prepare_run_dir(run_dir, overwrite=False, resume=resume) == run_dir
    assert not stale.exists() and live.exists()


def test_prepare_on_resume_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    stale, live = tmp_files(run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"ck")
    (run_dir / "log.jsonl").write_text("{}\n")
    prepare_run_dir(run_dir, overwrite=False, resume=True)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([live.name, "checkpoint.pt", "log.jsonl"])


def test_prepare_with_overwrite_clears_an_unfinished_run(tmp_path):
    run_dir = tmp_path / "run"
    tmp_files(run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"ck")
    prepare_run_dir(run_dir, overwrite=True)
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


def test_overwrite_replaces_a_finished_run_only_when_the_new_one_is_complete(tmp_path):
    """--overwrite builds the new run beside the finished one; a kill before commit_run_dir keeps
    the old result in place; commit_run_dir swaps them."""
    run_dir = tmp_path / "run"
    write_metrics(run_dir, {"acc": 1.0})
    staged = prepare_run_dir(run_dir, overwrite=True)
    assert staged != run_dir and staged.parent == run_dir.parent and list(staged.iterdir()) == []
    write_metrics(staged, {"acc": 0.5})
    assert json.loads((run_dir / "metrics.json").read_text()) == {"acc": 1.0}  # a kill here loses nothing
    # killed before the new run finished: the next --overwrite starts the staging again
    assert prepare_run_dir(run_dir, overwrite=True) == staged and list(staged.iterdir()) == []
    write_metrics(staged, {"acc": 0.5})
    assert commit_run_dir(staged, run_dir) == run_dir
    assert json.loads((run_dir / "metrics.json").read_text()) == {"acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_replacement_killed_between_its_renames_is_undone(tmp_path):
    run_dir = tmp_path / "run"
    write_metrics(run_dir, {"acc": 1.0})
    staged = prepare_run_dir(run_dir, overwrite=True)
    write_metrics(staged, {"acc": 0.5})
    run_dir.rename(tmp_path / ".run.previous")  # the first rename of commit_run_dir, then a kill
    with pytest.raises(UserError, match="already holds a finished run"):
        prepare_run_dir(run_dir, overwrite=False)  # the old run is back in place first
    assert json.loads((run_dir / "metrics.json").read_text()) == {"acc": 1.0}
    assert not (tmp_path / ".run.previous").exists()


def test_prepare_fresh_directory(tmp_path):
    run_dir = tmp_path / "a" / "b"
    assert prepare_run_dir(run_dir, overwrite=False) == run_dir
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


def test_prepare_refuses_a_finished_run_and_leaves_it_alone(tmp_path):
    run_dir = tmp_path / "run"
    stale, live = tmp_files(run_dir)
    write_metrics(run_dir, {"acc": 1.0})
    for resume in (False, True):
        with pytest.raises(UserError, match=r"already holds a finished run; pass --overwrite to replace it"):
            prepare_run_dir(run_dir, overwrite=False, resume=resume)
    assert stale.exists() and live.exists() and is_complete(run_dir)


def test_prepare_refuses_an_unfinished_run_without_resume(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"ck")
    with pytest.raises(UserError, match=r"holds an unfinished run; pass --resume to continue it or --overwrite "
                                        r"to restart"):
        prepare_run_dir(run_dir, overwrite=False)
    assert (run_dir / "checkpoint.pt").exists()


def test_prepare_reports_an_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"^--save_dir: cannot write to "):
        prepare_run_dir(blocker / "run", overwrite=False)


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "dir")
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(UserError, match=r"^--ckpts .*: .* is a file, not a directory$"):
        check_writable(f / "x", "--ckpts")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"is not writable$"):
            check_writable(ro / "x")
    finally:
        ro.chmod(0o755)


def test_artifacts_are_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        run_dir = prepare_run_dir(tmp_path / "run", overwrite=False)
        save_model(run_dir, nn.Linear(2, 2), arch="linear")
        write_config(run_dir, {"args": {}})
        write_metrics(run_dir, {"acc": 0.5})
        write_outputs(run_dir, {"test": (np.arange(2), np.zeros((2, 2)), np.zeros(2))})
    finally:
        os.umask(old)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["config.json", "metrics.json", "model.pt", "outputs.npz"]
    for name in names:
        assert stat.S_IMODE(os.stat(run_dir / name).st_mode) == 0o644, name
