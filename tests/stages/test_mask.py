"""generate_mask.py: the README command end to end on digits, and bad input refused before any work."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import generate_mask
from helpers import script_cmd, script_env
from models import build_model
from utils.cli import run_main
from utils.data import load_data
from forget_sets.store import forget_ids_sha256
from forget_sets.file import load_forget_set, sha256_file
from unlearn.saliency import forget_gradients, load_mask, read_mask_file, saliency_masks

COMMON = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", "5", "--batch_size", "64"]
RATIOS = [round(0.1 * i, 10) for i in range(1, 11)]


def _run(args, cwd):
    return subprocess.run(script_cmd(*args), cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A digits cnn_s pretrained by main_train.py, and a memorization score file in the cwd."""
    root = tmp_path_factory.mktemp("gm")
    ck = root / "ckpts"
    r = _run(["main_train.py", *COMMON, "--ckpts", str(ck)], root)
    assert r.returncode == 0, r.stderr[-2000:]
    n = len(load_data("digits").x)
    np.savez(root / "digits_memorization.npz", memorization=np.random.RandomState(0).rand(n))
    return root, ck


def _model(path):
    data = load_data("digits")
    model = build_model("cnn_s", data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std)
    state = torch.load(path, weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model, data


def test_readme_command_end_to_end(pretrained):
    root, ck = pretrained
    out = root / "masks"
    # the README command, placeholders filled, plus the digits model flags
    cmd = ["generate_mask.py", "--save", str(out), "--num_indexes_to_replace", "60",
           "--unlearn_epochs", "1", "--mem", "high", "--group_index", "0", *COMMON, "--ckpts", str(ck)]
    r = _run(cmd, root)
    assert r.returncode == 0, r.stderr[-2000:]
    files = [out / f"mask_largest_{q}.pt" for q in RATIOS]
    assert r.stdout.split() == [str(f) for f in files]
    assert all(f.is_file() for f in files)
    fs_file = ck / "forget_sets" / "digits_mem-high_n60.npz"
    fs = load_forget_set(fs_file)
    model_file = next((ck / "original").glob("digits_cnn_s_sgd_ep5_*/model.pt"))
    model, data = _model(model_file)
    P = sum(p.numel() for p in model.parameters())
    expect = saliency_masks(forget_gradients(model, data, fs.forget_ids, "cpu", 64), RATIOS, "largest")
    prev = None
    for q, f in zip(RATIOS, files):
        mask = load_mask(f, model)
        _, man = read_mask_file(f)
        marked = sum(int(m.sum()) for m in mask.values())
        assert marked == int(P * q) == man["num_marked"]
        assert man["ratio"] == q and man["order"] == "largest" and man["num_params"] == P
        assert man["model_sha256"] == sha256_file(model_file)
        assert man["forget_set_sha256"] == sha256_file(fs_file)
        assert man["forget_ids_sha256"] == forget_ids_sha256(fs) and man["num_forget"] == 60
        for n in mask:
            assert torch.equal(mask[n], expect[q][n]), (q, n)
            if prev is not None:  # one ranking: a larger ratio marks a superset
                assert bool((prev[n] <= mask[n]).all())
        prev = mask
    assert all(bool(m.all()) for m in prev.values())

    # the same command again: nothing to do, nothing rewritten; after losing some files (a kill
    # after 3 of 10), the rerun writes only the missing ones
    files = sorted(out.glob("mask_largest_*.pt"))
    before = {p: p.read_bytes() for p in files}
    again = _run(cmd, root)
    assert again.returncode == 0 and "nothing to do" in again.stderr and "Traceback" not in again.stderr
    assert {p: p.read_bytes() for p in files} == before
    for p in files[3:]:
        p.unlink()
    again = _run(cmd, root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.read_bytes() for p in files} == before
    assert again.stdout.split() == [str(p) for p in files[3:]]

    # the sharp-unlearn release's order, one ratio, the same forget set reused
    r = _run(["generate_mask.py", "--save_dir", str(out), "--num_indexes_to_replace", "60",
              "--mem", "high", "--mask_ratio", "0.3", "--mask_order", "smallest", *COMMON, "--ckpts", str(ck)], root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reusing" in r.stderr
    small = load_mask(out / "mask_smallest_0.3.pt", model)
    ref = saliency_masks(forget_gradients(model, data, fs.forget_ids, "cpu", 64), [0.3], "smallest")[0.3]
    assert all(torch.equal(small[n], ref[n]) for n in small)

    # SalUn with the 0.3 mask through main_random.py: entries outside the mask never move
    r = _run(["main_random.py", "--unlearn", "RL", "--unlearn_lr", "0.05", "--unlearn_epochs", "1",
              "--num_indexes_to_replace", "60", "--mem", "high", "--group_index", "0", *COMMON, "--ckpts", str(ck),
              "--path", str(out / "mask_largest_0.3.pt")], root)
    assert r.returncode == 0, r.stderr[-2000:]
    unlearned = next((ck / "unlearn").glob("digits_mem-high_n60/*/RL_*/seed2/model.pt"))
    after = torch.load(unlearned, weights_only=True)["state_dict"]
    mask = load_mask(out / "mask_largest_0.3.pt", model)
    moved = 0
    for n, p in model.named_parameters():
        assert torch.equal(after[n][~mask[n]], p.detach()[~mask[n]]), n
        moved += int((after[n][mask[n]] != p.detach()[mask[n]]).sum())
    assert moved > 0


def test_salun_without_mask_is_a_user_error(pretrained):
    root, ck = pretrained
    r = _run(["main_random.py", "--unlearn", "RL", "--num_indexes_to_replace", "60", "--mem", "high", *COMMON,
              "--ckpts", str(ck), "--no_save"], root)
    assert r.returncode == 2 and "--path" in r.stderr and "Traceback" not in r.stderr


def _main(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["generate_mask.py", *argv])
    with pytest.raises(SystemExit) as e:
        run_main(generate_mask.main)
    err = capsys.readouterr().err
    return e.value.code, err


@pytest.mark.parametrize("ratio", ["0", "1.5", "0.5,-0.1"])
def test_bad_ratio_exits_2(tmp_path, monkeypatch, capsys, ratio):
    code, err = _main(monkeypatch, capsys, ["--save", str(tmp_path / "m"), "--mask_ratio", ratio,
                                            "--num_indexes_to_replace", "60", "--mem", "high", *COMMON,
                                            "--ckpts", str(tmp_path / "ck")])
    assert code == 2
    assert err.count("\n") == 1 and "--mask_ratio" in err and "(0, 1]" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "ck").exists()


def test_missing_save_exits_2(tmp_path, monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, ["--num_indexes_to_replace", "60", "--mem", "high", *COMMON,
                                            "--ckpts", str(tmp_path / "ck")])
    assert code == 2 and err.count("\n") == 1 and "--save" in err


def test_unwritable_save_dir_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = _main(monkeypatch, capsys, ["--save", str(tmp_path / "afile" / "masks"), "--num_indexes_to_replace",
                                            "60", "--mem", "high", *COMMON, "--ckpts", str(tmp_path / "ck")])
    assert code == 2 and err.count("\n") == 1 and "--save" in err and "not a directory" in err


def test_missing_model_exits_2(tmp_path, monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, ["--save", str(tmp_path / "m"), "--num_indexes_to_replace", "60",
                                            "--mem", "high", *COMMON, "--ckpts", str(tmp_path / "ck")])
    assert code == 2 and err.count("\n") == 1 and "main_train.py" in err
