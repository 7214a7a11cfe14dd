"""Requeue on SLURM (launch/slurm.py, scripts/slurm/*.tmpl): #SBATCH --requeue and --signal=B:USR1,
the USR1 trap (stop the run, scontrol requeue), --resume for resumable commands of a requeued task;
and launch/local.py counting runs that were already finished."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.local import run_local, summarize
from launch.slurm import SlurmOptions, is_resumable, render_array_script, render_job_script
from launch.spec import Command

PY = sys.executable
ECHO = [PY, "-c", "import sys; print(sys.argv[1:])"]


def opts(tmp_path: Path, **kw) -> SlurmOptions:
    return SlurmOptions(workdir=tmp_path, log_dir=tmp_path / "logs", **kw)


def test_directives():
    text = render_array_script(["true"], opts(Path("/tmp")), "x")
    assert "#SBATCH --requeue\n" in text and "#SBATCH --signal=B:USR1@120\n" in text
    text = render_array_script(["true"], opts(Path("/tmp"), signal_seconds=300), "x")
    assert "#SBATCH --signal=B:USR1@300\n" in text
    text = render_array_script(["true"], opts(Path("/tmp"), requeue=False), "x")
    assert "#SBATCH --requeue" not in text and "#SBATCH --signal" not in text
    assert "#SBATCH --requeue\n" in render_job_script("true", opts(Path("/tmp")), "m", 2)


def test_is_resumable():
    assert is_resumable(["main_train.py", "--dataset", "digits"])
    assert is_resumable(["python", "main_forget.py", "--unlearn", "retrain"])
    assert is_resumable(["main_forget.py", "--unlearn=Retrain"])
    assert not is_resumable(["main_forget.py", "--unlearn", "FT"])
    assert not is_resumable(["main_forget.py", "--unlearn", "retrain", "--unlearn", "FT"])
    assert not is_resumable(["main_rum.py", "--unlearn", "retrain"]) and not is_resumable(["analysis.py"])


@pytest.mark.parametrize("env,resumed", [({}, False), ({"SLURM_RESTART_COUNT": "1"}, True),
                                         ({"SWEEP_RESUME": "1"}, True), ({"SLURM_RESTART_COUNT": "0"}, False)])
def test_requeued_task_adds_resume_to_resumable_commands(tmp_path, env, resumed):
    lines = [shlex.join([*ECHO, "a", "b c"]), shlex.join([*ECHO, "d"])]
    script = tmp_path / "a.sbatch"
    script.write_text(render_array_script(lines, opts(tmp_path), "x", resumable=[True, False]))
    for task, want in (("0", ["a", "b c"] + (["--resume"] if resumed else [])), ("1", ["d"])):
        e = {k: v for k, v in os.environ.items() if k not in ("SLURM_RESTART_COUNT", "SWEEP_RESUME")}
        r = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                           env={**e, **env, "SLURM_ARRAY_TASK_ID": task})
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == str(want)


def _start(script: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert "started" in proc.stdout.readline() + proc.stdout.readline()  # the job line, then the child's
    return proc


@pytest.mark.parametrize("kind", ["array", "memorization"])
def test_usr1_stops_the_run_and_requeues(tmp_path, kind):
    marker = tmp_path / "finished"
    argv = [PY, "-c", f"import time; print('started', flush=True); time.sleep(30); open({str(marker)!r}, 'w')"]
    script = tmp_path / "t.sbatch"
    script.write_text(render_array_script([shlex.join(argv)], opts(tmp_path), "x") if kind == "array" else
                      render_job_script(shlex.join(argv), opts(tmp_path), "x", None))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/bin/bash\necho "$*" >> "$SCONTROL_LOG"\n')
    (fake / "scontrol").chmod(0o755)
    log = tmp_path / "scontrol.log"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SCONTROL_LOG": str(log),
           "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "4242"}
    proc = _start(script, env)
    t0 = time.time()
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert time.time() - t0 < 15 and not marker.exists()  # the child was stopped, not waited for
    assert log.read_text().split() == ["requeue", "4242"] and "USR1" in err
    # without scontrol (not under SLURM): stopped, and a non-zero exit so afterok dependents do not start
    proc = _start(script, {**env, "PATH": os.environ["PATH"], "SLURM_JOB_ID": ""})
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "could not requeue" in err and not marker.exists()


def test_local_counts_already_done(tmp_path):
    done = "print('main_forget.py: ckpts/x already holds this finished run; nothing to do (--overwrite recomputes it)')"
    mem = "print('main_memorization.py: ckpts/m already holds these memorization scores; nothing to do (--overwrite)')"
    cmds = [Command(1, "s", 0, ("-c", done)), Command(1, "s", 1, ("-c", "print('trained')")),
            Command(1, "s", 2, ("-c", mem)), Command(1, "s", 3, ("-c", f"{done}; raise SystemExit(3)"))]
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        results = run_local([cmds], jobs=2, python=PY, cwd=tmp_path, log_dir=tmp_path / "logs", out=fh)
        assert [r.already for r in results] == [True, False, True, False]
        assert summarize(results, fh) == 1
    text = out.read_text()
    assert "4 commands: 3 ok (2 already done), 1 failed" in text and text.count("] already done ") == 2


def test_sweep_marks_resumable_tasks(tmp_path):
    import importlib.util
    import json

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("sweep_cli_requeue", REPO / "scripts" / "sweep.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps([
        {"script": "main_forget.py", "fixed": {"dataset": "digits", "num_indexes_to_replace": 6},
         "grid": {"unlearn": ["retrain", "FT"]}},
        {"script": "main_train.py", "fixed": {"dataset": "digits"}, "grid": {"seed": [1]}}]))
    assert cli.main([str(grid), "--slurm", str(tmp_path / "s.sbatch"), "--signal_seconds", "600"]) == 0
    first, second = (tmp_path / "s.1.sbatch").read_text(), (tmp_path / "s.2.sbatch").read_text()
    assert "SWEEP_RESUMABLE=(1 0)\n" in first and "SWEEP_RESUMABLE=(1)\n" in second
    assert "#SBATCH --signal=B:USR1@600\n" in first and "#SBATCH --requeue\n" in second
    assert cli.main([str(grid), "--slurm", str(tmp_path / "n.sbatch"), "--no_requeue"]) == 0
    assert "#SBATCH --requeue" not in (tmp_path / "n.1.sbatch").read_text()
