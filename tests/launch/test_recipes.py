"""recipes/*.json: each expands with ``scripts/sweep.py RECIPE --dry-run``, every command passes the
parser and its stage's own checks, and the files one stage reads are those another writes (the
start models named by --mask or looked up by the pretraining flags, the saliency masks of --path)."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from arg_parser import parse_args
from helpers import REPO
from launch.spec import load_spec, stage_commands
from stages import configs
from stages.rum import plan_rum
from unlearn.saliency import mask_file_name

RECIPES = sorted((REPO / "recipes").glob("*.json"))
_spec = importlib.util.spec_from_file_location("sweep_cli_recipes", REPO / "scripts" / "sweep.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"cifar10_resnet18_rum.json", "cifar100_resnet50_sharp.json"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_dry_run(recipe, capsys):
    assert _cli.main([str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("# ") and " commands" in out.strip().splitlines()[-1]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_commands_pass_their_stage_checks(recipe, capsys):
    commands = [(c.args[0], list(c.args[1:])) for g in stage_commands(load_spec(recipe)) for c in g]
    trained = {configs.pretrain_dir(parse_args(a, prog=s)) for s, a in commands if s == "main_train.py"}
    masks: set[Path] = set()
    for s, a in commands:
        if s == "generate_mask.py":
            args = parse_args(a, prog=s)
            masks |= {Path(args.save_dir) / mask_file_name(args.mask_order, q) for q in args.mask_ratio}
    for script, argv in commands:
        args = parse_args(argv, prog=script)
        where = f"{recipe.name}: {script} {shlex.join(argv)}"
        if script in ("main_forget.py", "main_random.py"):
            configs.check_method(args, ("RL", "RL_og") if script == "main_random.py" else None)
        if script in ("main_rum.py", "main_rum_proxy.py"):
            plan_rum(args, argv, script, "mem" if script == "main_rum.py" else "proxy")
        if script in ("main_forget.py", "main_random.py", "main_rum.py", "main_rum_proxy.py", "generate_mask.py") \
                and trained:
            start = Path(args.mask) if args.mask else configs.default_pretrained(args)
            assert start in trained, f"{where}: start model {start} is not pretrained by this recipe"
        if args.path:
            assert Path(args.path) in masks, f"{where}: --path {args.path} is not written by this recipe"
    capsys.readouterr()
