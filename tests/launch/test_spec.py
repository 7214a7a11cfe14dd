"""launch/spec.py: the spec language, its checks, grid expansion, command rendering and quoting."""
from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from utils.errors import UserError
from launch.spec import Stage, check_commands, expand, load_spec, render_args, stage_commands, stages_from_obj


def stage(**obj) -> Stage:
    return stages_from_obj({"script": "main_forget.py", **obj}, "spec")[0]


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
