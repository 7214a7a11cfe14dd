"""launch/sweep.py: grid expansion, command rendering and quoting, SLURM scripts, the local executor."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from utils.errors import UserError
from launch.sweep import (Command, Job, SlurmOptions, Stage, check_commands, expand, load_spec,
                         output_paths, render_args, render_array_script, render_job_script, render_submit, run_local,
                         stage_commands, stages_from_obj, summarize)

PY = sys.executable


def stage(**obj) -> Stage:
    return stages_from_obj({"script": "main_forget.py", **obj}, "spec")[0]


def bash_n(path: Path) -> None:
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- expansion ----------------------------------------------------------------------------------

def test_expansion_count_and_order():
    s = stage(fixed={"dataset": "digits"}, grid={"unlearn": ["FT", "GA"], "mem": ["low", "mid", "high"],
                                                 "seed": [1, 2]})
    runs = expand(s)
    assert len(runs) == 2 * 3 * 2
    # nested loops in the order written: the first axis slowest, the last fastest
    assert [(r["unlearn"], r["mem"], r["seed"]) for r in runs[:4]] == [
        ("FT", "low", 1), ("FT", "low", 2), ("FT", "mid", 1), ("FT", "mid", 2)]
    assert (runs[-1]["unlearn"], runs[-1]["mem"], runs[-1]["seed"]) == ("GA", "high", 2)
    assert all(r["dataset"] == "digits" for r in runs)
    # arguments: fixed first, then the axes in the order written
    assert render_args(runs[0]) == ["--dataset", "digits", "--unlearn", "FT", "--mem", "low", "--seed", "1"]


def test_per_method_axes_only_for_their_method():
    s = stage(grid={"unlearn": ["FT", "ng", "GA"], "seed": [1, 2]},
              per_method={"NG": {"alpha": [0.99, 0.97]}, "FT": {"unlearn_lr": [0.1, 0.01, 0.001]}})
    runs = expand(s)
    assert len(runs) == 2 * 3 + 2 * 2 + 2  # FT x3 lrs, NG x2 alphas (case-insensitive match), GA alone
    ng = [r for r in runs if r["unlearn"] == "ng"]
    assert [(r["seed"], r["alpha"]) for r in ng] == [(1, 0.99), (1, 0.97), (2, 0.99), (2, 0.97)]
    assert all("alpha" not in r for r in runs if r["unlearn"] != "ng")
    assert [r["unlearn_lr"] for r in runs[:3]] == [0.1, 0.01, 0.001]
    # the same flag may be an axis of several methods, but not also a grid axis
    stage(grid={"unlearn": ["NG", "FT_prune"]}, per_method={"NG": {"alpha": [0.9]}, "FT_prune": {"alpha": [1e-4]}})
    with pytest.raises(UserError, match="both grid and per_method"):
        stage(grid={"unlearn": ["NG"], "alpha": [0.9]}, per_method={"NG": {"alpha": [0.5]}})
    with pytest.raises(UserError, match="'SCRUB' is not among the --unlearn values"):
        stage(grid={"unlearn": ["NG"]}, per_method={"SCRUB": {"beta": [0.1]}})


def test_values_flags_and_names():
    s = stage(fixed={"--seed": 3, "no-l1-epochs": 2, "separate": ["max", "min"], "decreasing_lr": [91, 136],
                     "overwrite": True, "path": None},
              grid={"no_aug": [True, False], "rum_methods": [["none", "FT", "RL"], "FT,FT,FT"]},
              flags=["es"])
    cmds = stage_commands([s])[0]
    assert len(cmds) == 4
    assert list(cmds[0].args) == [
        "main_forget.py", "--seed", "3", "--no-l1-epochs", "2", "--separate", "max", "min",
        "--decreasing_lr", "91,136", "--overwrite", "--no_aug", "--rum_methods", "none,FT,RL", "--es"]
    assert "--no_aug" not in cmds[2].args and cmds[3].args[-3:] == ("--rum_methods", "FT,FT,FT", "--es")
    assert cmds[0].stage_name == "main_forget" and [c.index for c in cmds] == [0, 1, 2, 3]


def test_quoting_round_trips_through_the_shell():
    s = stage(fixed={"save_dir": "runs/with space/it's $HOME"}, grid={"seed": [1]})
    c = stage_commands([s])[0][0]
    text = c.text()
    assert "'" in text and shlex.split(text) == c.argv()
    r = subprocess.run(["bash", "-c", f"printf '%s\\n' {text}"], capture_output=True, text=True)
    assert r.stdout.splitlines() == ["python", "main_forget.py", "--save_dir", "runs/with space/it's $HOME",
                                     "--seed", "1"]


@pytest.mark.parametrize("obj, message", [
    ({"script": "main_forgot.py", "grid": {"seed": [1]}}, "unknown script 'main_forgot.py'"),
    ({"grid": {"seed": [1]}}, 'no "script"'),
    ({"script": "main_forget.py", "grid": {}}, "empty grid"),
    ({"script": "main_forget.py"}, "empty grid"),
    ({"script": "main_forget.py", "grid": {"seed": []}}, "axis 'seed' has no values"),
    ({"script": "main_forget.py", "grid": {"seed": 1}}, "must be a list of values"),
    ({"script": "main_forget.py", "grid": {"sede": [1]}}, "unknown flag 'sede'; did you mean 'seed'"),
    ({"script": "main_forget.py", "fixed": {"unlearn_lrr": 0.1}, "grid": {"seed": [1]}}, "unknown flag 'unlearn_lrr'"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}, "flags": ["no_agu"]}, "unknown flag 'no_agu'"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}, "flags": ["lr"]}, "--lr takes a value"),
    ({"script": "main_forget.py", "grid": {"no_aug": ["yes"]}}, "--no_aug takes no value"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}, "fixed": {"seed": 2}}, "both fixed and grid"),
    ({"script": "main_forget.py", "grid": {"seed": [1]}, "grids": {}}, "unknown key 'grids'"),
    ({"script": "main_forget.py", "grid": {"seed": [{"a": 1}]}}, "not a string, number"),
    ({"script": "main_forget.py", "grid": {"unlearn": ["FT"]}, "per_method": {"FT": {}}}, "non-empty object"),
    ([], "list of stages is empty"),
    ("main_forget.py", "must be a stage object or a list"),
])
def test_bad_specs(obj, message):
    with pytest.raises(UserError, match=re.escape(message)):
        stages_from_obj(obj, "spec")


def test_load_spec_files(tmp_path):
    p = tmp_path / "grid.json"
    p.write_text('[{"script": "main_train.py", "grid": {"seed": [1, 2]}},\n'
                 ' {"script": "main_forget", "grid": {"unlearn": ["FT"]}, "name": "methods"}]')
    stages = load_spec(p)
    assert [s.script for s in stages] == ["main_train.py", "main_forget.py"]
    groups = stage_commands(stages)
    assert [[c.stage_name for c in g] for g in groups] == [["1-main_train"] * 2, ["methods"]]
    p.write_text('{"script": "main_forget.py", "grid": {"seed": [1, 2],}}')
    with pytest.raises(UserError, match=r"not valid JSON: .*line 1"):
        load_spec(p)
    with pytest.raises(UserError, match="no such spec file"):
        load_spec(tmp_path / "nope.json")


def test_check_commands_catches_bad_values():
    check_commands(stage_commands([stage(fixed={"dataset": "Digits", "arch": "cnn_s"},
                                         grid={"unlearn": ["FT", "ng"], "mem": ["low", 4]})]))
    for grid, flag in (({"mem": ["low", "hgih"]}, "--mem 'hgih'"), ({"unlearn": ["FTT"]}, "--unlearn 'FTT'"),
                       ({"seed": ["x"]}, "--seed: invalid int value")):
        with pytest.raises(UserError, match=flag) as e:
            check_commands(stage_commands([stage(fixed={"dataset": "digits"}, grid=grid)]))
        assert "main_forget.py" in str(e.value) and "\n" not in str(e.value)


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


# --- local runs ---------------------------------------------------------------------------------

def py_command(stage_no: int, name: str, index: int, code: str, *args: str) -> Command:
    return Command(stage_no, name, index, ("-c", code, *args))


SPAN = ("import os, sys, time; t0 = time.time(); time.sleep(0.4); "
        "open(sys.argv[1], 'a').write(f'{t0} {time.time()}\\n'); "
        "print('gpu', os.environ.get('CUDA_VISIBLE_DEVICES')); sys.exit(int(sys.argv[2]))")


def test_run_local_parallel_logs_failures(tmp_path):
    spans = tmp_path / "spans.txt"
    cmds = [py_command(1, "s", i, SPAN, str(spans), "3" if i == 2 else "0") for i in range(5)]
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        results = run_local([cmds], jobs=2, python=PY, cwd=tmp_path, log_dir=tmp_path / "logs", gpus=["0", "1"],
                            out=fh)
    assert [r.command.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.returncode for r in results] == [0, 0, 3, 0, 0]
    # at most two at a time, and two did run together
    events = sorted([(float(a), 1) for a, b in (l.split() for l in spans.read_text().splitlines())]
                    + [(float(b), -1) for a, b in (l.split() for l in spans.read_text().splitlines())])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 2
    for r in results:
        text = r.log.read_text()
        assert r.log == tmp_path / "logs" / "s" / f"{r.command.index:04d}.log"
        assert text.startswith(f"# {shlex.join([PY, *r.command.args])}\n")
        assert "gpu 0" in text or "gpu 1" in text
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and sum("FAILED (exit 3)" in l for l in lines) == 1
    with open(out, "w") as fh:
        assert summarize(results, fh) == 1
    assert "5 commands: 4 ok, 1 failed" in out.read_text() and str(results[2].log) in out.read_text()


def test_run_local_chain_skips_after_a_failure(tmp_path):
    ok = "import sys; sys.exit(0)"
    first = [py_command(1, "a", 0, ok), py_command(1, "a", 1, "import sys; sys.exit(1)")]
    second = [py_command(2, "b", 0, ok)]
    with open(os.devnull, "w") as null:
        chained = run_local([first, second], jobs=2, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", chain=True,
                            out=null)
        assert [r.returncode for r in chained] == [0, 1, None]
        assert summarize(chained, null) == 1
        pooled = run_local([first, second], jobs=3, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", out=null)
        assert [r.returncode for r in pooled] == [0, 1, 0]
        fine = run_local([first[:1], second], jobs=1, python=PY, cwd=tmp_path, log_dir=tmp_path / "l", chain=True,
                         out=null)
        assert summarize(fine, null) == 0
