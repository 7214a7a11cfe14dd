"""launch/slurm.py: #SBATCH directives, job-array and single-job scripts (bash -n, task selection),
the submit script with dependencies, output paths and template placeholders."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from utils.errors import UserError
from launch.slurm import (Job, SlurmOptions, output_paths, render_array_script, render_job_script,
                          render_submit)

PY = sys.executable


def bash_n(path: Path) -> None:
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- SLURM scripts ------------------------------------------------------------------------------

def opts(tmp_path: Path, **kw) -> SlurmOptions:
    return SlurmOptions(workdir=tmp_path, log_dir=tmp_path / "logs", **kw)


def test_array_script_directives_bash_n_and_task_selection(tmp_path):
    argvs = [[PY, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME", "it's", f"task{i}"] for i in range(3)]
    lines = [shlex.join(a) for a in argvs]
    text = render_array_script(lines, opts(tmp_path, max_parallel=2, partition="gpu", gpus=2, time="1:00:00",
                                           memory="8G", cpus_per_task=3, setup=["export SWEEP_TEST=1"],
                                           extra=["--qos=high"]),
                               "mysweep", header="a header\nline two")
    for d in ("--job-name=mysweep", "--array=0-2%2", f"--output={tmp_path}/logs/%x_%A_%a.out", "--time=1:00:00",
              "--cpus-per-task=3", "--mem=8G", "--gres=gpu:2", "--partition=gpu", "--qos=high"):
        assert f"#SBATCH {d}\n" in text
    assert "# a header\n# line two\n" in text and "export SWEEP_TEST=1\n" in text
    script = tmp_path / "a.sbatch"
    script.write_text(text)
    bash_n(script)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1"}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == str(["a b", "$HOME", "it's", "task1"])
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={**env, "SLURM_ARRAY_TASK_ID": "3"})
    assert r.returncode == 2 and "no such command" in r.stderr
    # no GPU line without GPUs; no throttle without max_parallel
    text = render_array_script(["true"], opts(tmp_path, gpus=0), "x")
    assert "--gres" not in text and "#SBATCH --array=0-0\n" in text
    with pytest.raises(UserError, match="--job_name 'a b'"):
        render_array_script(["true"], opts(tmp_path), "a b")


def test_memorization_scripts_and_dependent_submit(tmp_path):
    words = shlex.join([PY, "-c", "import sys; print(sys.argv[1:])", "--num_shards", "3"])
    shards = render_job_script(f'{words} --shard "${{SLURM_ARRAY_TASK_ID:?}}"', opts(tmp_path), "mem", 3)
    merge = render_job_script(f"{words} --merge", opts(tmp_path), "mem-merge", None)
    assert "#SBATCH --array=0-2\n" in shards and "--array" not in merge
    assert f"#SBATCH --output={tmp_path}/logs/%x_%j.out\n" in merge
    paths = {}
    for name, text in (("mem.sbatch", shards), ("mem.merge.sbatch", merge)):
        paths[name] = tmp_path / name
        paths[name].write_text(text)
        bash_n(paths[name])
    r = subprocess.run(["bash", str(paths["mem.sbatch"])], capture_output=True, text=True,
                       env={**os.environ, "SLURM_ARRAY_TASK_ID": "2"})
    assert r.stdout.splitlines()[-1] == str(["--num_shards", "3", "--shard", "2"])
    r = subprocess.run(["bash", str(paths["mem.merge.sbatch"])], capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == str(["--num_shards", "3", "--merge"])

    submit = tmp_path / "mem.submit.sh"
    submit.write_text(render_submit([Job(paths["mem.sbatch"], "shards"),
                                     Job(paths["mem.merge.sbatch"], "merge", after=0)], tmp_path / "logs"))
    bash_n(submit)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "$*" >> "$SBATCH_LOG"\n'
                               'echo "$((4000 + $(wc -l < "$SBATCH_LOG")));c1"\n')
    (fake / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    r = subprocess.run(["bash", str(submit)], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == [
        f"--parsable {paths['mem.sbatch']}",
        f"--parsable --dependency=afterok:4001 --kill-on-invalid-dep=yes {paths['mem.merge.sbatch']}"]
    assert "submitted merge: job 4002 (after job 4001)" in r.stdout and (tmp_path / "logs").is_dir()


def test_output_paths(tmp_path):
    assert output_paths(tmp_path / "s.sbatch", 1) == (tmp_path / "s", [tmp_path / "s.sbatch"],
                                                     tmp_path / "s.submit.sh")
    base, scripts, submit = output_paths(tmp_path / "s.sbatch", 2)
    assert scripts == [tmp_path / "s.1.sbatch", tmp_path / "s.2.sbatch"] and submit == tmp_path / "s.submit.sh"


def test_template_placeholders_are_checked(tmp_path):
    with pytest.raises(UserError, match=r"no \{\{COMMANDS\}\} placeholder"):
        render_array_script(["true"], opts(tmp_path), "x", template="#!/bin/bash\n{{DIRECTIVES}}\n", source="t")
    with pytest.raises(UserError, match=r"unknown placeholder \{\{FOO\}\}"):
        render_array_script(["true"], opts(tmp_path), "x", template="{{DIRECTIVES}}\n{{COMMANDS}}\n{{FOO}}\n",
                            source="t")
