"""scripts/quickstart.sh resumes whatever a kill interrupted (issue: kill points during pretraining,
during a retrain, between a stage's exit and its stamp, during another stage).

The stages' own behaviour is tested where it lives: main_train/main_forget --resume continue a
killed run exactly (tests/trainer/test_resume.py, tests/stages/test_forget.py), and rerunning a
finished run exits 0 at once (tests/stages/*). Here a stand-in for python records every command
and kills at a chosen call, so the shell logic is checked in a second: which commands a rerun
repeats, with which flags, and that stamped stages are not run again.
"""
import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = """#!/usr/bin/env bash
echo "$*" >> "$LOG"
n=$(wc -l < "$LOG")
if [[ "$n" == "$KILL_AT" ]]; then
  case "$HOW" in
    stage) kill -9 $$ ;;                        # the stage itself is killed mid-run
    after) kill -9 $PPID; exit 0 ;;            # the script is killed after the stage ended, before its stamp
  esac
fi
exit 0
"""


def _quickstart(tmp_path: Path, log: Path, kill_at: int = 0, how: str = "") -> subprocess.CompletedProcess:
    stub = tmp_path / "fakepy"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), "LOG": str(log),
           "KILL_AT": str(kill_at), "HOW": how}
    return subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], env=env, capture_output=True,
                          text=True, timeout=120)


def _calls(log: Path) -> list[str]:
    """The commands run, with the output directory written as OUT."""
    out = str(log.parent / "out")
    return [c.replace(out, "OUT") for c in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The commands of an uninterrupted run."""
    d = tmp_path_factory.mktemp("qs_full")
    r = _quickstart(d, d / "log")
    assert r.returncode == 0, r.stderr
    return _calls(d / "log")


def _index(calls, needle):
    return next(i for i, c in enumerate(calls) if needle in c)


@pytest.mark.parametrize("point, needle, how", [
    ("during pretraining", "main_train.py", "stage"),
    ("during a retrain", "--unlearn retrain", "stage"),
    ("between a stage's exit and its stamp", "--unlearn FT ", "after"),
    ("during another stage", "--unlearn SCRUB", "stage"),
])
def test_rerun_after_a_kill_resumes(tmp_path, full, point, needle, how):
    k = _index(full, needle) + 1  # the call to kill at (1-based)
    log = tmp_path / "log"
    first = _quickstart(tmp_path, log, kill_at=k, how=how)
    assert first.returncode != 0, point
    assert _calls(log) == full[:k]
    killed = full[k - 1]
    _quickstart(tmp_path, log)  # the rerun, nothing killed
    rerun = _calls(log)[k:]
    resumable = "main_train.py" in killed or "--unlearn retrain" in killed
    # the killed stage runs again (pretraining and retrain with --resume), then everything after it,
    # and nothing stamped before it
    assert rerun[0] == killed + (" --resume" if resumable else "")
    assert rerun[1:] == full[k:]
