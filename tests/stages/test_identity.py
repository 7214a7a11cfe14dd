"""Run identity (DESIGN.md §6): every setting that changes a result changes the run's directory.

For each stage, the flags it reads (its parser groups, less the result-neutral ones) are either
in ``ALT`` (a second value: the directory must change) or declared irrelevant to that run, so a new
flag fails these tests until it is classified.
"""
from __future__ import annotations

import pytest

from arg_parser import group_dests, parse_args
from stages import configs
from stages.common import RESULT_NEUTRAL
from unlearn.config import method_tag

BASE = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", "4", "--lr", "0.1", "--batch_size", "64",
        "--device", "cpu", "--precision", "fp32"]

# flag -> a second value (argv tail)
ALT = {
    "dataset": ["--dataset", "cifar10"], "arch": ["--arch", "mlp"], "imagenet_arch": ["--imagenet_arch"],
    "seed": ["--seed", "3"], "train_seed": ["--train_seed", "7"], "split_seed": ["--split_seed", "4"],
    "batch_size": ["--batch_size", "32"], "lr": ["--lr", "0.05"], "momentum": ["--momentum", "0.5"],
    "weight_decay": ["--weight_decay", "0.001"], "epochs": ["--epochs", "5"], "warmup": ["--warmup", "1"],
    "no_aug": ["--no_aug"], "precision": ["--precision", "bf16"], "sam": ["--sam", "max"],
    "rho": ["--rho", "0.5"], "lamb": ["--lamb", "0.5"], "adaptive": ["--adaptive"],
    "unlearn_lr": ["--unlearn_lr", "0.02"], "unlearn_epochs": ["--unlearn_epochs", "3"],
    "unlearn_optimizer": ["--unlearn_optimizer", "adamw"], "decreasing_lr": ["--decreasing_lr", "2"],
    "release": ["--release"], "alpha": ["--alpha", "0.5"],
}
# flags of the groups that never change where a result goes (launching, locating, output)
LOCATING = RESULT_NEUTRAL | {"unlearn", "es", "no_save"}


def _pretrain_dir(argv):
    return configs.pretrain_dir(parse_args(argv))


def _pretrain_flags():
    return group_dests("data", "training", "sam") - LOCATING - {"separate"}  # --separate: Sharp MinMax only


@pytest.mark.parametrize("base", [BASE, BASE + ["--sam", "min", "--rho", "1.0"]], ids=["sgd", "sam"])
def test_every_pretraining_setting_changes_the_directory(base):
    flags = _pretrain_flags()
    assert flags <= set(ALT), f"classify these pretraining flags: {sorted(flags - set(ALT))}"
    ref = _pretrain_dir(base)
    # without --sam, rho/lamb/adaptive do not apply (no SAM step): same run
    inert = {"rho", "lamb", "adaptive"} if "--sam" not in base else set()
    for flag in sorted(flags):
        d = _pretrain_dir(base + ALT[flag])
        if flag in inert:
            assert d == ref, flag
        else:
            assert d != ref, f"--{flag} does not change the pretraining directory {ref}"
            assert d.parent == ref.parent


def test_pretraining_names_stay_readable_and_auto_precision_resolves():
    assert _pretrain_dir(BASE).name == "digits_cnn_s_sgd_ep4_lr0.1_bs64_seed2"
    assert _pretrain_dir(BASE + ["--weight_decay", "0", "--split_seed", "3", "--precision", "bf16"]).name == \
        "digits_cnn_s_sgd_ep4_lr0.1_bs64_seed2_wd0_split3_bf16"
    # --precision auto on the CPU is fp32: the same run
    assert _pretrain_dir([*BASE[:-2], "--precision", "auto"]) == _pretrain_dir(BASE)
    # --train_seed equal to --seed is the default
    assert _pretrain_dir(BASE + ["--train_seed", "2"]) == _pretrain_dir(BASE)


def _tag(argv):
    args = parse_args(argv)
    configs.check_method(args)
    return method_tag(args.unlearn, configs.unlearn_config(args), args.path, train_seed=configs.train_seed(args),
                      seed=args.seed)


UNLEARN_GROUPS = ("training", "sam", "unlearning")
# per method: flags of its groups that do not change its result (pretraining flags locate the start
# model, whose name is part of the path; other methods' hyperparameters)
IRRELEVANT = {
    "FT": {"epochs", "lr", "warmup", "alpha", "no_l1_epochs", "beta", "gamma", "msteps", "kd_T", "separate"},
    "retrain": {"epochs", "lr", "unlearn_optimizer", "decreasing_lr", "release", "alpha", "no_l1_epochs", "beta",
                "gamma", "msteps", "kd_T", "separate"},
    "NG": {"epochs", "lr", "warmup", "no_l1_epochs", "beta", "gamma", "msteps", "kd_T", "separate"},
}


@pytest.mark.parametrize("sam", [False, True], ids=["sgd", "sam"])
@pytest.mark.parametrize("method", list(IRRELEVANT))
def test_every_unlearning_setting_changes_the_tag(method, sam):
    base = BASE + ["--unlearn", method] + (["--sam", "min", "--rho", "1.0"] if sam else [])
    flags = group_dests(*UNLEARN_GROUPS) - LOCATING - IRRELEVANT[method]
    if method == "retrain":
        flags |= {"train_seed"}  # the retrain's initialization
    assert flags <= set(ALT), f"classify these flags for {method}: {sorted(flags - set(ALT))}"
    inert = set() if sam else {"rho", "lamb", "adaptive"}  # no SAM step without --sam
    ref = _tag(base)
    for flag in sorted(flags - inert):
        assert _tag(base + ALT[flag]) != ref, f"--{flag} does not change the tag {ref} of {method}"
    for flag in sorted((IRRELEVANT[method] | inert) & set(ALT)):
        assert _tag(base + ALT[flag]) == ref, f"--{flag} should not change {method}'s tag"


def test_tags_of_the_usual_settings():
    assert _tag(BASE + ["--unlearn", "FT"]) == "FT_lr0.01_ep10_sgd_bs64"
    assert _tag(BASE + ["--unlearn", "FT", "--weight_decay", "0", "--precision", "bf16"]) == \
        "FT_lr0.01_ep10_sgd_bs64_wd0_bf16"
    assert _tag(BASE + ["--unlearn", "retrain", "--unlearn_epochs", "4", "--unlearn_lr", "0.1"]) == \
        "retrain_lr0.1_ep4_bs64"
    assert _tag(BASE + ["--unlearn", "retrain", "--unlearn_epochs", "4", "--unlearn_lr", "0.1", "--sam", "min",
                        "--rho", "1", "--adaptive", "--train_seed", "5"]) == \
        "retrain_lr0.1_ep4_bs64_sam-min_rho1_lamb1_adaptive_init5"
