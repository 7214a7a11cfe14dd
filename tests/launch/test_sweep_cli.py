"""scripts/sweep.py end to end: dry run, SLURM scripts (bash -n, submit with a fake sbatch), local
runs on stand-in entry scripts, memorization shards + merge, and one-line errors for bad input.

Most calls run the CLI in this process (``cli``: its ``main`` under ``utils.cli.run_main``), which
saves a torch import per call; a few run it as a subprocess, exactly as a user would."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import REPO, script_cmd, script_env
from utils.cli import run_main

_spec = importlib.util.spec_from_file_location("sweep_cli", REPO / "scripts" / "sweep.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)

SPEC = {"script": "main_forget.py",
        "fixed": {"dataset": "digits", "arch": "cnn_s", "num_indexes_to_replace": 60, "unlearn_epochs": 2},
        "grid": {"unlearn": ["FT", "GA", "NG"], "mem": ["low", "high"], "seed": [1, 2]},
        "per_method": {"NG": {"alpha": [0.99, 0.97]}},
        "flags": ["no_aug"]}
N_SPEC = 2 * 2 * (1 + 1 + 2)

# A stand-in entry script: prints its arguments, exits 1 for --seed 3 (so the executor is tested
# without training anything).
FAKE = "import sys; a = sys.argv[1:]; print('fake', a); sys.exit(1 if a[a.index('--seed') + 1] == '3' else 0)\n"


def sweep(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(script_cmd("scripts/sweep.py", *args), cwd=cwd, env=env or script_env(1),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(capfd, monkeypatch, tmp_path):
    """``cli(*args)`` -> ``(returncode, stdout, stderr)`` of ``scripts/sweep.py args`` run in this process,
    from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)

    def call(*args: str):
        capfd.readouterr()
        try:
            run_main(lambda: _cli.main([str(a) for a in args]))
        except SystemExit as e:
            code = e.code
        out = capfd.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call


def write_spec(tmp_path: Path, obj, name: str = "grid.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def no_sbatch_path() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "sbatch").exists())


def test_dry_run_lists_the_commands(tmp_path, cli):
    r = sweep(str(write_spec(tmp_path, SPEC)), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == f"# {N_SPEC} commands" and len(lines) == N_SPEC + 1
    assert lines[0] == ("python main_forget.py --dataset digits --arch cnn_s --num_indexes_to_replace 60 "
                        "--unlearn_epochs 2 --unlearn FT --mem low --seed 1 --no_aug")
    assert lines[N_SPEC - 1].endswith("--unlearn NG --mem high --seed 2 --alpha 0.97 --no_aug")
    assert not list(tmp_path.glob("sweep_logs*"))
    # the same grid from the command line
    r2 = cli("--script", "main_forget.py", "--set", "dataset", "digits", "--set", "arch", "cnn_s",
               "--set", "num_indexes_to_replace", "60", "--set", "unlearn_epochs", "2",
               "--grid", "unlearn", "FT", "GA", "--grid", "mem", "low", "high", "--grid", "seed", "1", "2",
               "--flag", "no_aug", "--dry-run")
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.splitlines()[:8] == [l for l in lines if "--unlearn NG" not in l][:8]


def test_slurm_scripts_pass_bash_n_and_submit_with_dependency(tmp_path, cli, monkeypatch):
    stages = [{"script": "main_train.py", "fixed": {"dataset": "digits", "arch": "cnn_s"}, "grid": {"seed": [1, 2]},
               "name": "pretrain"}, SPEC]
    spec = write_spec(tmp_path, stages, "two.json")
    out = tmp_path / "jobs" / "sweep.sbatch"
    common = [str(spec), "--slurm", str(out), "--chain", "--max_parallel", "4", "--partition", "gpu",
              "--gpus_per_task", "2", "--time", "2:00:00", "--memory", "8G", "--cpus_per_task", "6",
              "--setup", "source .venv/bin/activate", "--log_dir", str(tmp_path / "logs")]
    dry = cli(*common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not out.parent.exists()
    assert f"# {2 + N_SPEC} commands (pretrain: 2, 2-main_forget: {N_SPEC})" in dry.stdout
    assert "--dependency=afterok:${jid1}" in dry.stdout

    r = cli(*common)
    assert r.returncode == 0, r.stderr
    s1, s2 = out.parent / "sweep.1.sbatch", out.parent / "sweep.2.sbatch"
    submit = out.parent / "sweep.submit.sh"
    for p in (s1, s2, submit):
        check = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert check.returncode == 0, (p, check.stderr)
    text = s2.read_text()
    for d in (f"--array=0-{N_SPEC - 1}%4", "--job-name=two-2-main_forget", "--partition=gpu", "--gres=gpu:2",
              "--time=2:00:00", "--mem=8G", "--cpus-per-task=6", f"--output={tmp_path}/logs/%x_%A_%a.out"):
        assert f"#SBATCH {d}\n" in text
    assert f"cd {REPO}\n" in text and "source .venv/bin/activate\n" in text
    # the command list beside the script is the dry run's list
    listed = (out.parent / "sweep.2.commands").read_text().splitlines()
    assert listed == [l for l in dry.stdout.splitlines() if l.startswith("python main_forget.py")]
    assert (tmp_path / "logs").is_dir()

    # --submit: a fake sbatch records the calls; the second array waits for the first
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "$*" >> "$SBATCH_LOG"\n'
                               'echo "$((700 + $(wc -l < "$SBATCH_LOG")))"\n')
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "calls"))
    r = cli(*common, "--submit")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"--parsable {s1}", f"--parsable --dependency=afterok:701 --kill-on-invalid-dep=yes {s2}"]
    assert "job 702 (after job 701)" in r.stdout


def test_submit_without_sbatch_is_a_clear_error(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("PATH", no_sbatch_path())
    r = cli(str(write_spec(tmp_path, SPEC)), "--slurm", str(tmp_path / "s.sbatch"), "--submit")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "sbatch not found" in r.stderr and "s.submit.sh" in r.stderr


def test_local_run_and_array_task_on_stand_in_scripts(tmp_path, cli):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("main_train.py", "main_forget.py"):
        (work / name).write_text(FAKE)
    spec = write_spec(tmp_path, [{"script": "main_train.py", "grid": {"seed": [1, 3]}, "name": "pre"},
                                 {"script": "main_forget.py", "grid": {"unlearn": ["FT", "GA"], "seed": [1, 2]}}])
    logs = tmp_path / "logs"
    r = cli(str(spec), "--jobs", "2", "--workdir", str(work), "--log_dir", str(logs))
    assert r.returncode == 1, r.stderr
    assert "6 commands: 5 ok, 1 failed" in r.stdout
    assert "FAILED (exit 1): python main_train.py --seed 3" in r.stdout
    assert "fake ['--seed', '3']" in (logs / "pre" / "0001.log").read_text()
    assert "fake ['--unlearn', 'GA', '--seed', '2']" in (logs / "2-main_forget" / "0003.log").read_text()
    # --chain: the failed first stage stops the second
    r = cli(str(spec), "--jobs", "2", "--chain", "--workdir", str(work), "--log_dir", str(logs))
    assert r.returncode == 1 and "1 ok, 1 failed, 4 not run" in r.stdout
    # all succeed -> exit 0
    ok = write_spec(tmp_path, {"script": "main_forget.py", "grid": {"seed": [1, 2, 4]}}, "ok.json")
    r = cli(str(ok), "--jobs", "2", "--workdir", str(work), "--log_dir", str(logs))
    assert r.returncode == 0 and "3 commands: 3 ok, 0 failed" in r.stdout
    # the generated array script runs a task without SLURM, from the work directory
    r = cli(str(ok), "--slurm", str(tmp_path / "ok.sbatch"), "--workdir", str(work), "--python", sys.executable)
    assert r.returncode == 0, r.stderr
    task = subprocess.run(["bash", str(tmp_path / "ok.sbatch")], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "SLURM_ARRAY_TASK_ID": "2"})
    assert task.returncode == 0 and task.stdout.splitlines()[-1] == "fake ['--seed', '4']"


def test_memorization_shards_array_and_dependent_merge(tmp_path, cli):
    args = ["--memorization", "--dataset", "digits", "--arch", "mlp", "--num_models", "8", "--num_shards", "4",
            "--epochs", "2", "--batch_size", "64"]
    dry = cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = [l for l in dry.stdout.splitlines() if not l.startswith("#")]
    base = "python main_memorization.py " + " ".join(args[1:])
    assert lines == [f"{base} --shard {i}" for i in range(4)] + [f"{base} --merge"]

    out = tmp_path / "mem.sbatch"
    r = cli(*args, "--slurm", str(out), "--log_dir", str(tmp_path / "logs"), "--gpus_per_task", "0")
    assert r.returncode == 0, r.stderr
    merge, submit = tmp_path / "mem.merge.sbatch", tmp_path / "mem.submit.sh"
    for p in (out, merge, submit):
        assert subprocess.run(["bash", "-n", str(p)]).returncode == 0, p
    shards = out.read_text()
    assert "#SBATCH --array=0-3\n" in shards and "--gres" not in shards
    assert f'cmd=({base} --shard "${{SLURM_ARRAY_TASK_ID:?not an array task}}")' in shards
    assert "--array" not in merge.read_text() and f"cmd=({base} --merge)" in merge.read_text()
    calls = submit.read_text()
    assert f"jid1=$(sbatch --parsable {out})" in calls
    assert f"jid2=$(sbatch --parsable --dependency=afterok:${{jid1}} --kill-on-invalid-dep=yes {merge})" in calls


@pytest.mark.parametrize("spec, args, message", [
    (None, ["--dry-run"], "no grid: give a spec file"),
    ({"script": "main_forgot.py", "grid": {"seed": [1]}}, ["--dry-run"], "unknown script 'main_forgot.py'"),
    ({"script": "main_forget.py", "grid": {}}, ["--dry-run"], "empty grid"),
    ('{"script": "main_forget.py", "grid": {"seed": [1, 2]', ["--dry-run"], "not valid JSON"),
    ({"script": "main_forget.py", "grid": {"unlearn_rl": [0.1]}}, ["--dry-run"], "did you mean 'unlearn_lr'"),
    ({"script": "main_forget.py", "grid": {"mem": ["hgih"]}}, ["--dry-run"], "--mem 'hgih'"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, [], "nothing to do"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--jobs", "0"], "--jobs 0"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--jobs", "2", "--slurm", "x.sbatch"], "choose one"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--dry-run", "--seed", "3"], "unrecognized arguments"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--slurm", "x.sbatch", "--time", "1 h"], "--time '1 h'"),
    (None, ["--memorization", "--dataset", "digits", "--shard", "1", "--dry-run"], "do not pass --shard"),
    (None, ["--memorization", "--num_shards", "0", "--dry-run"], "--num_shards 0"),
    (None, ["--memorization", "--datset", "digits", "--dry-run"], "unrecognized arguments: --datset"),
    ({"script": "main_train.py", "grid": {"lr": ["nan"]}}, ["--dry-run"], "--lr: expected a finite number"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--slurm", "grid.json/x.sbatch"], "is a file"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}}, ["--jobs", "1", "--log_dir", "grid.json/logs"], "is a file"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, cli, spec, args, message):
    if spec is not None:
        p = tmp_path / "grid.json"
        p.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        args = [str(p), *args]
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "x.sbatch").exists()


def test_bad_input_as_a_user_sees_it(tmp_path):
    spec = write_spec(tmp_path, {"script": "main_forget.py", "grid": {"sede": [1, 2]}})
    r = sweep(str(spec), "--slurm", "x.sbatch", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and not (tmp_path / "x.sbatch").exists()
    assert r.stderr == f"sweep.py: error: {spec} grid: unknown flag 'sede'; did you mean 'seed'?\n"


def test_sweep_options_do_not_shadow_toolkit_flags():
    """--memorization passes unrecognized flags to main_memorization.py: a toolkit flag with the
    name of a sweep option would be swallowed by the sweep."""
    from arg_parser import build_parser

    def options(parser):
        return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}

    assert not options(_cli.build_parser(memorization=True)) & options(build_parser())
