"""The parser's declared numeric domains: every bad value is refused before any work, with exit
status 2, exactly one stderr line naming the flag and the value, and nothing written."""
import pytest

import arg_parser
import main_forget
import main_memorization
import main_rum
import main_train
from helpers import run_cli

BASE = ["--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--ckpts", "ck"]
BAD = [  # (flag and value as typed, text the error must hold)
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "-0.1"], "--lr -0.1"),
    (["--momentum", "nan"], "--momentum"), (["--momentum", "5"], "--momentum 5"),
    (["--weight_decay", "inf"], "--weight_decay"), (["--rho", "nan"], "--rho"), (["--rho", "-1"], "--rho -1"),
    (["--lamb", "nan"], "--lamb"), (["--unlearn_lr", "nan"], "--unlearn_lr"), (["--unlearn_lr", "inf"], "--unlearn_lr"),
    (["--kd_T", "nan"], "--kd_T"), (["--kd_T", "0"], "--kd_T 0"), (["--beta", "nan"], "--beta"),
    (["--beta", "-1"], "--beta -1"), (["--gamma", "-1"], "--gamma -1"), (["--alpha", "nan"], "--alpha"),
    (["--alpha", "-1"], "--alpha -1"), (["--no-l1-epochs", "-3"], "--no-l1-epochs -3"),
    (["--msteps", "-1"], "--msteps -1"), (["--warmup", "5", "--epochs", "1"], "--warmup 5"),
    (["--warmup", "-1"], "--warmup -1"), (["--epochs", "0"], "--epochs 0"), (["--batch_size", "0"], "--batch_size 0"),
    (["--seed", "-5"], "--seed -5"), (["--seed", "99999999999999999999"], "--seed 99999999999999999999"),
    (["--split_seed", "-1"], "--split_seed -1"), (["--train_seed", "-1"], "--train_seed -1"),
    (["--workers", "-3"], "--workers -3"), (["--gpu", "-1"], "--gpu -1"),
    (["--num_indexes_to_replace", "0"], "--num_indexes_to_replace 0"),
    (["--class_to_replace", "-2"], "--class_to_replace -2"), (["--group_index", "-2"], "--group_index -2"),
    (["--unlearn_epochs", "-1"], "--unlearn_epochs -1"), (["--decreasing_lr", "-5"], "--decreasing_lr -5"),
    (["--decreasing_lr", ","], "--decreasing_lr"), (["--mask_ratio", ","], "--mask_ratio"),
    (["--mask_ratio", "0"], "--mask_ratio 0"), (["--mask_ratio", "nan"], "--mask_ratio"),
    (["--num_models", "0"], "--num_models 0"), (["--subset_ratio", "1"], "--subset_ratio 1"),
    (["--subset_ratio", "nan"], "--subset_ratio"), (["--num_shards", "0"], "--num_shards 0"),
    (["--ft_lr", "-1"], "--ft_lr -1"), (["--ft_epochs", "0"], "--ft_epochs 0"), (["--h", "0"], "--h 0"),
    (["--h", "nan"], "--h"), (["--rum_lr", "nan,nan,nan"], "--rum_lr"), (["--rum_lr=-1,0,0"], "--rum_lr -1,0,0"),
    (["--rum_epochs", "1,-1,1"], "--rum_epochs 1,-1,1"), (["--rum_alpha", "nan,1,1"], "--rum_alpha"),
    (["--rum_groups", "0"], "--rum_groups 0"),
]


@pytest.mark.parametrize("module", [main_train, main_forget, main_rum, main_memorization],
                         ids=lambda m: m.__name__)
@pytest.mark.parametrize("bad,named", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_numbers_are_refused_before_any_work(module, bad, named, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(module, [*BASE, *bad], monkeypatch, capsys, tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"{module.__name__}.py: error:") and "Traceback" not in err
    assert named in err
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_flag_has_a_domain():
    numeric = {a.dest for a in arg_parser.build_parser()._actions
               if a.type in (int, arg_parser._finite_float, arg_parser._int_list, arg_parser._float_list)}
    assert numeric - set(arg_parser.DOMAINS) == {"shard"}  # --shard: [0, --num_shards), checked beside it


@pytest.mark.parametrize("good", [["--lr", "0"], ["--momentum", "0.99"], ["--seed", "0"], ["--seed", "4294967295"],
                                  ["--mask_ratio", "1"], ["--warmup", "1", "--epochs", "2"], ["--alpha", "5"]])
def test_values_inside_the_domains_are_accepted(good):
    arg_parser.parse_args(good)


def test_abbreviated_flags_are_refused(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(main_train, [*BASE[:-4], "--epoch", "1", "--ckpts", "ck"], monkeypatch, capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "unrecognized arguments: --epoch 1" in err
    assert list(tmp_path.iterdir()) == []
