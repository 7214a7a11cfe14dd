"""Per-script --help (arg_parser.SCRIPT_GROUPS): only the script's flags, grouped, with defaults; every
flag stays accepted by every script."""
from pathlib import Path

import pytest

import main_forget
import main_rum
import main_train
from arg_parser import FLAG_GROUPS, HELP_TAIL, SCRIPT_GROUPS, group_dests, parse_args, script_help, wants_help
from helpers import run_cli

REPO = Path(__file__).resolve().parent.parent


def _flags(text):
    return {w.split("=")[0].strip(",[]") for w in text.split() if w.startswith("--")}


def test_main_train_help_is_its_own_flags_with_defaults(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(main_train, ["--help"], monkeypatch, capsys, tmp_path)
    assert code == 0 and err == ""
    assert "--unlearn_lr" not in out and "--rum_methods" not in out and "--wandb-project" not in out
    assert "--lr LR               pretraining learning rate (default: 0.1)" in out
    assert "--batch_size" in out and "(default: 256)" in out and "--sam {min,max}" in out
    assert out.rstrip().endswith(HELP_TAIL + ".")


@pytest.mark.parametrize("module,has,lacks", [
    (main_forget, ["--unlearn_lr", "--es_normalized", "--wandb-project", "--num_indexes_to_replace"],
     ["--rum_methods", "--num_models", "--runs"]),
    (main_rum, ["--rum_methods", "--mask_ratio", "--unlearn_lr", "--wandb-mode"], ["--num_models", "--runs"]),
])
def test_forget_and_rum_help(module, has, lacks, monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(module, ["--dataset", "digits", "-h"], monkeypatch, capsys, tmp_path)
    assert code == 0
    flags = _flags(out)
    assert set(has) <= flags and not set(lacks) & flags
    assert "(default: 0.01)" in out and "(default: 10)" in out  # --unlearn_lr, --unlearn_epochs
    assert out.count("usage:") == 1 and HELP_TAIL in out


def test_every_script_help_names_known_groups_and_existing_scripts():
    for script, entries in SCRIPT_GROUPS.items():
        assert (REPO / script).is_file(), script
        for e in entries:
            assert e[2:] in group_dests(*FLAG_GROUPS) if e.startswith("--") else e in FLAG_GROUPS, (script, e)
        text = script_help(script)
        assert text.startswith(f"usage: {script}") and HELP_TAIL in text
    assert "--ft_lr" in script_help("main_memorization.py") and "--ft_lr" not in script_help("main_forget.py")
    from launch.spec import ENTRY_SCRIPTS

    assert set(ENTRY_SCRIPTS) == set(SCRIPT_GROUPS)  # every entry script has its help table entry


def test_a_group_no_script_names_is_shown_by_every_script(monkeypatch):
    """A group added to FLAG_GROUPS but not yet to SCRIPT_GROUPS is never hidden."""
    monkeypatch.setitem(FLAG_GROUPS, "new_group", lambda p: p.add_argument_group("new").add_argument("--zzz_new"))
    assert "--zzz_new" in script_help("main_train.py") and "--zzz_new" in script_help("analysis.py")


def test_foreign_flags_are_still_accepted():
    args = parse_args(["--dataset", "digits", "--unlearn_lr", "0.5", "--rum_methods", "FT,GA,NG", "--wandb-project",
                       "p", "--num_models", "4"], prog="main_train.py")
    assert args.unlearn_lr == 0.5 and args.wandb_project == "p" and args.num_models == 4
    assert args.wandb_mode is None and args.wandb_entity is None and args.wandb_run_id is None
    assert parse_args(["--wandb-mode", "offline", "--wandb-run-id", "abc", "--wandb-group-name", "g"],
                      prog="main_forget.py").wandb_mode == "offline"


def test_bad_wandb_mode_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--wandb-mode", "sometimes"], prog="main_forget.py")
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_wants_help():
    assert wants_help(["--seed", "1", "-h"]) and wants_help(["--help"])
    assert not wants_help(["--h", "0.01"]) and not wants_help(["--", "--help"])
