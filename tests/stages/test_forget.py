"""main_forget.py / main_random.py end to end on digits: the original README's commands, the run
directory, and the refusals of bad input (exit status 2, one line, nothing written)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import main_forget
import main_random
from models import build_model
from utils.rundir import save_model
from helpers import pretrained_workdir, run_cli

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: threads only add overhead (and contention)
PRETRAIN = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", "8", "--batch_size", "64"]
RUN = "digits_cnn_s_sgd_ep8_lr0.1_bs64_seed2"
# The original README §3.1 command with its placeholders filled; "--epochs 8 --batch_size 64" name
# the pretrained model to start from (as the README's retrain command does), since §3.1 passes no --mask.
README = ["--dataset", "digits", "--arch", "cnn_s", "--num_indexes_to_replace", "60", "--unlearn_lr", "0.01",
          "--unlearn_epochs", "2", "--mem", "high", "--group_index", "3"]
LOCATE = ["--epochs", "8", "--batch_size", "64"]
METRIC_KEYS = {"method", "method_tag", "dataset", "arch", "seed", "forget_set", "forget_set_file",
               "forget_set_sha256", "forget_kind", "mem_level", "mem_proxy", "group_index", "num_forget", "accuracy",
               "mia", "unlearn_seconds", "collapsed", "pretrained", "sam", "hparams"}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A working directory holding a pretrained digits cnn_s (main_train.py, 8 epochs) and a
    synthetic memorization score file."""
    d = pretrained_workdir(tmp_path_factory.mktemp("forget_e2e"), PRETRAIN)
    assert (d / "ckpts" / "original" / RUN / "model.pt").is_file()
    return d


cli = run_cli


def _run_dir(workdir, fs, tag, seed=2, model=RUN):
    return workdir / "ckpts" / "unlearn" / fs / model / tag / f"seed{seed}"


def _check_run(run_dir, method, fs_name):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m), METRIC_KEYS - set(m)
    assert m["method"] == method and m["forget_set"] == fs_name and m["dataset"] == "digits" and m["arch"] == "cnn_s"
    assert set(m["accuracy"]) >= {"retain", "forget", "val", "test"}
    assert set(m["mia"]) == {"correctness", "confidence", "entropy", "m_entropy", "prob"}
    assert all(0 <= v <= 1 for v in m["accuracy"].values()) and all(0 <= v <= 1 for v in m["mia"].values())
    assert (run_dir / "config.json").is_file() and (run_dir / "model.pt").is_file()
    with np.load(run_dir / "outputs.npz") as z:
        for s in ("retain", "forget", "val", "test"):
            assert z[f"{s}_logits"].shape == (len(z[f"{s}_ids"]), 10) and len(z[f"{s}_labels"]) == len(z[f"{s}_ids"])
        assert len(z["forget_ids"]) == m["num_forget"]
    return m


EXTRA = {"FT": [], "FT_prune": ["--alpha", "1e-4"], "GA": [], "NG": ["--alpha", "0.99"],
         "SCRUB": ["--beta", "0.001", "--gamma", "0.99", "--msteps", "1", "--kd_T", "4"], "wfisher": ["--alpha", "1"],
         "retrain": []}
MODULES = {"FT_prune": "unlearn.l1_sparse", "SCRUB": "unlearn.scrub", "wfisher": "unlearn.wfisher"}


@pytest.mark.parametrize("method", list(EXTRA))
def test_readme_commands(method, workdir, monkeypatch, capsys):
    if method in MODULES:
        pytest.importorskip(MODULES[method])
    code, out, err = cli(main_forget, ["--unlearn", method, *README, *EXTRA[method], *LOCATE], monkeypatch, capsys,
                         workdir)
    assert code == 0, err
    assert "--mem takes precedence over --group_index 3" in out
    tag = next(iter((workdir / "ckpts" / "unlearn" / "digits_mem-high_n60" / RUN).glob(f"{method}*")))
    m = _check_run(tag / "seed2", method, "digits_mem-high_n60")
    assert m["forget_kind"] == "mem" and m["mem_level"] == "high" and m["group_index"] is None
    assert {"high_mem", "mid_mem", "low_mem"} <= set(m["accuracy"])
    assert f"-> ckpts/unlearn/digits_mem-high_n60/{RUN}/{m['method_tag']}/seed2" in out.splitlines()[-1]
    if method == "retrain":
        assert m["method_tag"] == "retrain_lr0.01_ep2_bs64" and m["pretrained"] is None
        assert m["hparams"]["recipe"]["epochs"] == 2 and m["hparams"]["recipe"]["lr"] == 0.01
    else:
        assert m["pretrained"].endswith(f"{RUN}/model.pt")
    if method == "SCRUB":
        assert m["hparams"]["msteps"] == 1 and m["hparams"]["beta"] == 0.001
    assert (workdir / "ckpts" / "forget_sets" / "digits_mem-high_n60.npz").is_file()


def test_readme_retrain_command_verbatim(workdir, monkeypatch, capsys):
    """README §2 with its placeholders filled."""
    argv = ["--unlearn", "retrain", "--dataset", "digits", "--arch", "cnn_s", "--epochs", "8", "--lr", "0.1",
            "--batch_size", "64", "--data", "datasets", "--unlearn_epochs", "8", "--unlearn_lr", "0.1", "--mem", "0",
            "--num_indexes_to_replace", "60", "--mask", f"ckpts/original/{RUN}"]
    code, out, err = cli(main_forget, argv, monkeypatch, capsys, workdir)
    assert code == 0, err
    m = _check_run(_run_dir(workdir, "digits_mem-low_n60", "retrain_lr0.1_ep8_bs64"), "retrain", "digits_mem-low_n60")
    assert m["mem_level"] == "low" and m["accuracy"]["retain"] > 0.9
    assert not (_run_dir(workdir, "digits_mem-low_n60", "retrain_lr0.1_ep8_bs64") / "checkpoint.pt").exists()


def _ckpts_with_scores(workdir, ck):
    (ck / "memorization").mkdir(parents=True)
    (ck / "memorization" / "digits_memorization.npz").write_bytes(
        (workdir / "ckpts" / "memorization" / "digits_memorization.npz").read_bytes())
    return ck


@pytest.mark.parametrize("kill_at", ["after the first epoch", "after the last epoch, before metrics.json"])
def test_retrain_killed_then_resumed_equals_an_uninterrupted_retrain(workdir, tmp_path, monkeypatch, capsys,
                                                                      kill_at):
    """A retrain killed after its first epoch's checkpoint, or after the last epoch but before
    metrics.json (the checkpoint is removed only after it), resumes with --resume to exactly the
    uninterrupted result, and its log.jsonl holds each epoch once."""
    import numpy as np

    import stages.common
    import trainer.fit

    def argv(ck):
        return ["--unlearn", "retrain", *PRETRAIN, "--unlearn_epochs", "2", "--unlearn_lr", "0.1", "--mem", "high",
                "--num_indexes_to_replace", "30", "--ckpts", str(ck), "--mask",
                str(workdir / "ckpts" / "original" / RUN)]

    ref, ck = _ckpts_with_scores(workdir, tmp_path / "ref"), _ckpts_with_scores(workdir, tmp_path / "ck")
    assert cli(main_forget, argv(ref), monkeypatch, capsys, workdir)[0] == 0

    def killed(*a, **k):
        raise KeyboardInterrupt

    if kill_at == "after the first epoch":
        real = trainer.fit._write_log

        def log_then_kill(run_dir, history):
            real(run_dir, history)
            if len(history) == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer.fit, "_write_log", log_then_kill)
    else:
        monkeypatch.setattr(stages.common, "write_metrics", killed)
    assert cli(main_forget, argv(ck), monkeypatch, capsys, workdir)[0] == 130
    run_dir = next(ck.glob("unlearn/*/*/retrain_*/seed2"))
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "metrics.json").exists()
    monkeypatch.undo()
    code, out, err = cli(main_forget, [*argv(ck), "--resume"], monkeypatch, capsys, workdir)
    assert code == 0, err
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoint.pt").exists()
    assert [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [1, 2]
    ref_dir = next(ref.glob("unlearn/*/*/retrain_*/seed2"))
    with np.load(ref_dir / "outputs.npz") as za, np.load(run_dir / "outputs.npz") as zb:
        assert all(np.array_equal(za[k], zb[k]) for k in za.files)


def test_overwrite_killed_before_the_end_keeps_the_old_run(workdir, tmp_path, monkeypatch, capsys):
    import stages.common

    ck = _ckpts_with_scores(workdir, tmp_path / "ck")
    argv = ["--unlearn", "FT", *PRETRAIN, "--unlearn_epochs", "1", "--mem", "high", "--num_indexes_to_replace", "30",
            "--ckpts", str(ck), "--mask", str(workdir / "ckpts" / "original" / RUN)]
    assert cli(main_forget, argv, monkeypatch, capsys, workdir)[0] == 0
    run_dir = next(ck.glob("unlearn/*/*/FT_*/seed2"))
    old = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.common, "write_metrics", killed)
    assert cli(main_forget, [*argv, "--overwrite", "--unlearn_lr", "0.01"], monkeypatch, capsys, workdir)[0] == 130
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == old
    monkeypatch.undo()
    code, out, err = cli(main_forget, [*argv, "--overwrite"], monkeypatch, capsys, workdir)
    assert code == 0, err
    assert (run_dir / "metrics.json").is_file() and sorted(p.name for p in run_dir.parent.iterdir()) == ["seed2"]


def _mask_file(path, arch="cnn_s", classes=10):
    from unlearn.saliency import save_mask

    torch.manual_seed(0)
    model = build_model(arch, classes, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,))
    g = torch.Generator().manual_seed(0)
    save_mask(path, {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters()},
              {"ratio": 0.5})
    return path


def test_sharp_minmax_run(workdir, monkeypatch, capsys, tmp_path):
    mask = _mask_file(tmp_path / "mask_largest_0.5.pt")
    code, out, err = cli(main_forget, ["--unlearn", "NG", *README, *LOCATE, "--path", mask, "--sam", "min", "--rho",
                                       "1.0", "--lamb", "1", "--adaptive", "--separate", "min", "max"],
                         monkeypatch, capsys, workdir)
    assert code == 0, err
    tag = "NG_alpha0.99_lr0.01_ep2_sgd_bs64_sam-min_rho1_lamb1_adaptive_sep-min-max_mask_largest_0.5"
    m = _check_run(_run_dir(workdir, "digits_mem-high_n60", tag), "NG", "digits_mem-high_n60")
    assert m["sam"] == {"sign": "min", "rho": 1.0, "lamb": 1.0, "adaptive": True, "separate": ["min", "max"]}
    assert m["hparams"]["mask_fraction"] == pytest.approx(0.5, abs=0.02)
    # (the partition itself is checked step by step in tests/unlearn/test_methods_core.py)
    after = torch.load(_run_dir(workdir, "digits_mem-high_n60", tag) / "model.pt", weights_only=True)["state_dict"]
    before = torch.load(workdir / "ckpts" / "original" / RUN / "model.pt", weights_only=True)["state_dict"]
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_original_es_group_and_refusal_of_finished_run(workdir, monkeypatch, capsys):
    argv = ["--unlearn", "original", "--dataset", "digits", "--arch", "cnn_s", "--group_index", "2",
            "--num_indexes_to_replace", "40", *LOCATE]
    code, out, err = cli(main_forget, argv, monkeypatch, capsys, workdir)
    assert code == 0, err
    fs_name = next((workdir / "ckpts" / "forget_sets").glob("digits_es-g2_n40_cnn_s-*.npz")).stem
    m = _check_run(_run_dir(workdir, fs_name, "original"), "original", fs_name)
    assert m["forget_kind"] == "es" and m["group_index"] == 2 and m["mem_level"] is None
    with np.load(workdir / "ckpts" / "original" / RUN / "outputs.npz") as z:
        train_acc = float((z["train_logits"].argmax(1) == z["train_labels"]).mean())
    n_r, n_f = m["num_retain"], m["num_forget"]
    assert (m["accuracy"]["retain"] * n_r + m["accuracy"]["forget"] * n_f) / (n_r + n_f) == pytest.approx(train_acc)
    # rerunning a finished run is a no-op (exit 0, one line), also with a flag the method does not
    # read (--weight_decay for original); a directory recording another identity is refused;
    # --overwrite replaces it
    done = _run_dir(workdir, fs_name, "original") / "metrics.json"
    before = done.read_bytes()
    code, out, err = cli(main_forget, argv, monkeypatch, capsys, workdir)
    assert code == 0 and "already holds this finished run" in out and done.read_bytes() == before
    code, out, err = cli(main_forget, argv + ["--weight_decay", "0.01"], monkeypatch, capsys, workdir)
    assert code == 0 and "already holds this finished run" in out and done.read_bytes() == before
    cfg_file = done.parent / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["identity"]["start_model_sha256"] = "0" * 64  # another start model of the same name
    cfg_file.write_text(json.dumps(cfg))
    code, out, err = cli(main_forget, argv, monkeypatch, capsys, workdir)
    assert code == 2 and "start_model_sha256 '000" in err and err.count("\n") == 1
    assert done.read_bytes() == before
    code, out, err = cli(main_forget, argv + ["--overwrite"], monkeypatch, capsys, workdir)
    assert code == 0, err
    # --es: prints the entanglement score, writes no run
    code, out, err = cli(main_forget, ["--es", "--es_normalized", "--dataset", "digits", "--arch",
                                       "cnn_s", "--group_index", "2", "--num_indexes_to_replace", "40", *LOCATE],
                         monkeypatch, capsys, workdir)
    assert code == 0, err
    assert "entanglement score (ES, RUM)" in out and "normalized entanglement score" in out
    assert not list((workdir / "ckpts" / "unlearn" / fs_name / RUN).glob("FT*"))


def test_main_random(workdir, monkeypatch, capsys):
    code, out, err = cli(main_random, ["--unlearn", "FT", *README, *LOCATE], monkeypatch, capsys, workdir)
    assert code == 2 and "RL, RL_og only" in err and len(err.strip().splitlines()) == 1
    if importlib.util.find_spec("unlearn.random_label") is None:
        pytest.skip("unlearn/random_label.py not present")
    code, out, err = cli(main_random, ["--unlearn", "RL_og", *README, *LOCATE], monkeypatch, capsys, workdir)
    assert code == 0, err
    _check_run(_run_dir(workdir, "digits_mem-high_n60", "RL_og_lr0.01_ep2_sgd_bs64"), "RL_og", "digits_mem-high_n60")


def test_divergence_is_exit_1_and_not_complete(workdir, monkeypatch, capsys):
    code, out, err = cli(main_forget, ["--unlearn", "GA", *README, *LOCATE, "--unlearn_lr", "1e30",
                                       "--unlearn_epochs", "3"], monkeypatch, capsys, workdir)
    assert code == 1 and "diverged" in err and len(err.strip().splitlines()) == 1
    assert not (_run_dir(workdir, "digits_mem-high_n60", "GA_lr1e+30_ep3_sgd_bs64") / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem, nothing written
# ---------------------------------------------------------------------------------------------

def _other_checkpoint(path, arch, classes, meta=True):
    torch.manual_seed(0)
    model = build_model(arch, classes, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,))
    path.mkdir(parents=True)
    if meta:
        save_model(path, model, arch=arch, num_classes=classes, dataset="digits")
    else:
        torch.save({"state_dict": model.state_dict()}, path / "model.pt")
    return path / "model.pt"


def _set(argv, flag, *values):
    """``argv`` with ``flag`` replaced by ``flag values`` (removed when no values are given)."""
    argv = list(argv)
    if flag in argv:
        j = argv.index(flag)
        k = j + 1
        while k < len(argv) and not str(argv[k]).startswith("--"):
            k += 1
        del argv[j:k]
    return argv + ([flag, *values] if values else [])


def _garbage(path, data=b"not a checkpoint"):
    path.write_bytes(data)
    return path


BAD = {
    "mask_missing": (lambda t, a: _set(a, "--mask", t / "nope" / "model.pt"), "no such model file"),
    "mask_garbage": (lambda t, a: _set(a, "--mask", _garbage(t / "g.pt")), "cannot read the checkpoint"),
    "other_arch": (lambda t, a: _set(a, "--mask", _other_checkpoint(t / "mlp", "mlp", 10)),
                   "checkpoint is a mlp, but --arch is cnn_s"),
    "other_classes": (lambda t, a: _set(a, "--mask", _other_checkpoint(t / "c5", "cnn_s", 5)),
                      "checkpoint has 5 classes, --dataset needs 10"),
    "other_arch_no_meta": (lambda t, a: _set(a, "--mask", _other_checkpoint(t / "m2", "mlp", 10, meta=False)),
                           "does not fit --arch cnn_s"),
    "separate_without_path": (lambda t, a: _set(_set(a, "--unlearn", "NG"), "--separate", "min", "max"),
                              "--separate min max needs --path"),
    "separate_other_method": (lambda t, a: _set(_set(a, "--separate", "min", "max"), "--path", _mask_file(t / "m.pt")),
                              "applies to --unlearn NG only"),
    "mask_file_other_model": (lambda t, a: _set(a, "--path", _mask_file(t / "m.pt", "mlp")),
                              "mask does not fit the model"),
    "mask_file_garbage": (lambda t, a: _set(a, "--path", _garbage(t / "m.pt", b"zzz")), "cannot read the mask"),
    "unknown_method": (lambda t, a: _set(a, "--unlearn", "FOO"), "unknown method"),
    "no_forget_set": (lambda t, a: _set(_set(a, "--mem"), "--num_indexes_to_replace"), "no forget set given"),
    "path_with_retrain": (lambda t, a: _set(_set(a, "--unlearn", "retrain"), "--path", _mask_file(t / "m.pt")),
                          "does not apply"),
    "salun_without_mask": (lambda t, a: _set(a, "--unlearn", "RL"), "needs --path MASK_FILE"),
    "missing_scores": (lambda t, a: _set(a, "--mem_file", t / "none.npz"), "--mem_file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, workdir, monkeypatch, capsys, tmp_path):
    make, expect = BAD[case]
    base = ["--unlearn", "FT", "--dataset", "digits", "--arch", "cnn_s", "--num_indexes_to_replace", "60",
            "--mem", "high", "--ckpts", tmp_path / "fresh", "--mask", workdir / "ckpts" / "original" / RUN]
    code, out, err = cli(main_forget, make(tmp_path, base), monkeypatch, capsys, tmp_path)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("main_forget.py: error:") and expect in lines[0], err
    assert not (tmp_path / "fresh").exists()


def test_bad_input_real_process(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "main_forget.py"), "--unlearn", "NG", "--separate", "min", "max",
                        "--dataset", "digits", "--arch", "cnn_s", "--num_indexes_to_replace", "10"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "needs --path" in p.stderr
    assert not (tmp_path / "ckpts").exists()
