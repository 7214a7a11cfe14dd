"""main_rum.py / main_rum_proxy.py end to end on digits: the README's RUM commands, group order,
step retain sets, chaining, ``none`` steps, ``--shuffle``, pairing with the retrain of the mix
forget set, and the refusals of bad input (exit status 2, one line, nothing written).

digits has 1,297 training examples, so the README's ``--num_indexes_to_replace 3000`` becomes 90."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import main_forget
import main_rum
import main_rum_proxy
import unlearn
from unlearn.rum import shuffled_groups
from helpers import pretrained_workdir, run_cli
from forget_sets.file import load_forget_set
from forget_sets.select import memorization_groups
from results.runs import discover

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = "digits_cnn_s_sgd_ep6_lr0.1_bs256_seed2"
FS = "digits_mem-mix_n90"
# The README's RUM command with its placeholders filled ({ORIGINAL_MODEL_EPOCHS} = 6, N = 90).
README = ["--mem", "mix", "--num_indexes_to_replace", "90", "--dataset", "digits", "--arch", "cnn_s",
          "--epochs", "6", "--lr", "0.1", "--batch_size", "256"]
METRIC_KEYS = {"method", "method_tag", "dataset", "arch", "seed", "forget_set", "forget_set_file",
               "forget_set_sha256", "forget_ids_sha256", "forget_kind", "mem_level", "mem_proxy", "group_index",
               "num_forget", "num_retain", "accuracy", "mia", "collapsed", "unlearn_seconds", "pretrained",
               "model_name", "sam", "hparams", "device", "rum"}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A pretrained digits cnn_s (README flags, 6 epochs; main_train.py also writes proxies.npz)
    and a synthetic memorization score file."""
    d = pretrained_workdir(tmp_path_factory.mktemp("rum_e2e"), ["--dataset", "digits", "--arch", "cnn_s",
                                                                 "--epochs", "6", "--lr", "0.1", "--batch_size", "256"])
    assert (d / "ckpts" / "original" / RUN / "proxies.npz").is_file()
    return d


cli = run_cli


def _final(workdir, tag, seed=2):
    return workdir / "ckpts" / "unlearn" / FS / RUN / tag / f"seed{seed}"


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def _steps(run_dir):
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("step"))


def _npz(path, key):
    with np.load(path) as z:
        return z[key]


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _scores(workdir):
    return _npz(workdir / "ckpts" / "memorization" / "digits_memorization.npz", "memorization")


@pytest.mark.parametrize("module", [main_rum, main_rum_proxy])
def test_readme_command_verbatim(module, workdir, monkeypatch, capsys):
    argv = ["--unlearn", "GA", *README]
    code, out, err = cli(module, argv, monkeypatch, capsys, workdir)
    assert code == 0, err
    grouping = "mem" if module is main_rum else "proxy-confidence"
    tag = f"RUM_GA-GA-GA_{grouping}_lr0.01-0.01-0.01_ep10-10-10_sgd"
    run_dir = _final(workdir, tag)
    m = _metrics(run_dir)
    assert METRIC_KEYS <= set(m), METRIC_KEYS - set(m)
    assert m["method"] == "RUM" and m["method_tag"] == tag and m["forget_set"] == FS and m["mem_level"] == "mix"
    assert m["num_forget"] == 90 and m["mem_proxy"] is None
    assert [s.name for s in _steps(run_dir)] == ["step0_GA", "step1_GA", "step2_GA"]
    assert m["rum"]["group_sizes"] == [30, 30, 30] and m["rum"]["plan_source"] == "unlearn"
    assert m["unlearn_seconds"] == pytest.approx(sum(s["seconds"] for s in m["rum"]["steps"]))
    assert all((s / "step_metrics.json").is_file() and not (s / "metrics.json").exists() for s in _steps(run_dir))
    # analysis sees the final run only, never the steps
    runs, skipped = discover(workdir / "ckpts" / "unlearn")
    assert not skipped and [r.path for r in runs if r.method == "RUM" and r.method_tag == tag] == [run_dir]
    assert any(line.startswith(f"{tag}: retain") and str(run_dir.relative_to(workdir)) in line
               for line in out.splitlines())
    # rerunning the finished run is a no-op: exit 0, one line saying where, nothing rewritten
    before = (run_dir / "metrics.json").read_bytes()
    code, out, err = cli(module, argv, monkeypatch, capsys, workdir)
    assert code == 0 and f"{run_dir.relative_to(workdir)} already holds this finished run" in out and err == ""
    assert (run_dir / "metrics.json").read_bytes() == before


def test_default_plan_order_retain_sets_chaining_and_retrain_pairing(workdir, monkeypatch, capsys):
    starts, ends = [], []
    real = unlearn.get_method

    def spy(name):
        fn = real(name)

        def wrapped(task, cfg):
            starts.append((name, {k: v.clone() for k, v in task.model.state_dict().items()}))
            fn(task, cfg)

        return wrapped

    monkeypatch.setattr(unlearn, "get_method", spy)
    code, out, err = cli(main_rum, [*README, "--rum_epochs", "1,1,1"], monkeypatch, capsys, workdir)
    assert code == 0, err
    tag = "RUM_none-FT-RL_mem_lrx-0.1-0.1_epx-1-1_q0.5_sgd"
    run_dir = _final(workdir, tag)
    m = _metrics(run_dir)
    steps = _steps(run_dir)
    assert [s.name for s in steps] == ["step0_none", "step1_FT", "step2_RL"]
    assert [n for n, _ in starts] == ["FT", "RL"]  # none runs nothing
    pretrained = _state(workdir / "ckpts" / "original" / RUN / "model.pt")
    step_states = [_state(s / "model.pt") for s in steps]
    # none: bitwise unchanged; each step starts from the previous step's model; final = last step
    assert all(torch.equal(pretrained[k], step_states[0][k]) for k in pretrained)
    assert all(torch.equal(starts[0][1][k], step_states[0][k]) for k in pretrained)
    assert all(torch.equal(starts[1][1][k], step_states[1][k]) for k in pretrained)
    assert not torch.equal(step_states[1]["fc.weight"], step_states[0]["fc.weight"])
    final = _state(run_dir / "model.pt")
    assert all(torch.equal(final[k], step_states[2][k]) for k in final)
    # groups: low -> mid -> high memorization, exactly the mix set's parts
    scores = _scores(workdir)
    fs = load_forget_set(workdir / "ckpts" / "forget_sets" / f"{FS}.npz")
    groups = [_npz(s / "outputs.npz", "forget_ids") for s in steps]
    train_ids = np.union1d(fs.forget_ids, fs.retain_ids)
    g = memorization_groups(train_ids, scores[train_ids], 90)
    parts = [g["low"][-30:], g["mid"][:30], g["high"][:30]]
    assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(groups, parts))
    assert scores[groups[0]].max() < scores[groups[1]].min() and scores[groups[1]].max() < scores[groups[2]].min()
    assert m["rum"]["matches_mix_parts"] is True and m["rum"]["order"] == "low -> high memorization"
    # retain set of step j = all training ids - groups 0..j
    for j, s in enumerate(steps):
        retain = _npz(s / "outputs.npz", "retain_ids")
        assert np.array_equal(np.sort(retain), np.setdiff1d(train_ids, np.concatenate(groups[: j + 1])))
        rec = json.loads((s / "step_metrics.json").read_text())
        assert rec["num_retain"] == len(retain) == 1297 - 30 * (j + 1) and rec["group"] == ["low", "mid", "high"][j]
    assert m["hparams"]["steps"][2]["mask_fraction"] == pytest.approx(0.5, abs=0.01)
    assert m["rum"]["steps"][0]["seconds"] == 0.0
    # the final run pairs with main_forget.py's retrain of the same mix forget set and seed
    code, out, err = cli(main_forget, ["--unlearn", "retrain", *README, "--unlearn_epochs", "1", "--unlearn_lr", "0.1"],
                         monkeypatch, capsys, workdir)
    assert code == 0, err
    r = _metrics(_final(workdir, "retrain_lr0.1_ep1"))
    assert r["forget_set"] == m["forget_set"] and r["forget_set_sha256"] == m["forget_set_sha256"]
    assert r["forget_ids_sha256"] == m["forget_ids_sha256"] and r["seed"] == m["seed"]
    from stages.analysis import main as run_analysis

    monkeypatch.chdir(workdir)
    assert run_analysis("tow", "analysis.py", ["--dataset", "digits", "--unlearn", "RUM", "--mem", "mix",
                                               "--out", str(workdir / "analysis")]) == 0
    rows = json.loads((workdir / "analysis" / "tow.json").read_text())
    assert tag in json.dumps(rows) and "no reference" not in (workdir / "analysis" / "tow.md").read_text()


def test_proxy_order_high_confidence_first(workdir, monkeypatch, capsys):
    code, out, err = cli(main_rum_proxy, [*README, "--rum_epochs", "1,1,1"], monkeypatch, capsys, workdir)
    assert code == 0, err
    tag = "RUM_NG-NG-NG_proxy-confidence_lr0.01-0.01-0.001_ep1-1-1_alpha0.99-0.97-0.97_sgd"
    run_dir = _final(workdir, tag)
    m = _metrics(run_dir)
    assert m["rum"]["proxy"] == "confidence" and m["rum"]["proxy_negative"] is True and m["forget_set"] == FS
    assert [h["alpha"] for h in m["hparams"]["steps"]] == [0.99, 0.97, 0.97]
    assert [h["lr"] for h in m["hparams"]["steps"]] == [0.01, 0.01, 0.001]
    with np.load(workdir / "ckpts" / "original" / RUN / "proxies.npz") as z:
        conf = dict(zip(z["ids"].tolist(), z["confidence"].tolist()))
    c = [[conf[i] for i in _npz(s / "outputs.npz", "forget_ids").tolist()] for s in _steps(run_dir)]
    assert min(c[0]) >= max(c[1]) and min(c[1]) >= max(c[2])  # most confident = least memorized: first


def test_shuffle_groups_same_sizes_same_forget_set(workdir, monkeypatch, capsys):
    code, out, err = cli(main_rum, ["--unlearn", "GA", *README, "--unlearn_epochs", "1", "--shuffle"],
                         monkeypatch, capsys, workdir)
    assert code == 0, err
    tag = "RUM_GA-GA-GA_mem_shuffle_lr0.01-0.01-0.01_ep1-1-1_sgd"
    run_dir = _final(workdir, tag)
    m = _metrics(run_dir)
    assert m["forget_set"] == FS and m["rum"]["shuffle"] is True and m["rum"]["shuffle_seed"] == 2
    groups = [_npz(s / "outputs.npz", "forget_ids") for s in _steps(run_dir)]
    assert [len(x) for x in groups] == m["rum"]["group_sizes"] == [30, 30, 30]
    fs = load_forget_set(workdir / "ckpts" / "forget_sets" / f"{FS}.npz")
    expect = shuffled_groups(fs.forget_ids, [30, 30, 30], 2)
    assert all(np.array_equal(a, b) for a, b in zip(groups, expect))
    scores = _scores(workdir)
    assert not scores[groups[0]].max() < scores[groups[1]].min()  # not the memorization groups


def _config(run_dir):
    return json.loads((run_dir / "config.json").read_text())


def test_one_group_is_the_single_method(workdir, monkeypatch, capsys):
    """K = 1 with FT is main_forget.py's FT on the same forget set: same weights, same metrics,
    without augmentation by default (as RUM's scripts) and with it under --aug."""
    code, out, err = cli(main_rum, ["--unlearn", "FT", *README, "--unlearn_epochs", "1", "--rum_groups", "1"],
                         monkeypatch, capsys, workdir)
    assert code == 0, err
    code, out, err = cli(main_rum, ["--unlearn", "FT", *README, "--unlearn_epochs", "1", "--rum_groups", "1",
                                    "--aug"], monkeypatch, capsys, workdir)
    assert code == 0, err
    for extra, rum_tag, ft_tag in (([], "RUM_FT_mem_lr0.01_ep1_sgd", "FT_lr0.01_ep1_sgd_noaug"),
                                   (["--aug"], "RUM_FT_mem_lr0.01_ep1_sgd_aug", "FT_lr0.01_ep1_sgd")):
        code, out, err = cli(main_forget, ["--unlearn", "FT", *README, "--unlearn_epochs", "1",
                                           *(["--no_aug"] if not extra else [])], monkeypatch, capsys, workdir)
        assert code == 0, err
        a, b = _final(workdir, rum_tag), _final(workdir, ft_tag)
        ma, mb = _metrics(a), _metrics(b)
        assert ma["accuracy"] == mb["accuracy"] and ma["mia"] == mb["mia"]
        sa, sb = _state(a / "model.pt"), _state(b / "model.pt")
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert _config(a)["augmentation"] == _config(b)["augmentation"]
    assert _config(_final(workdir, "RUM_FT_mem_lr0.01_ep1_sgd"))["augmentation"] is None


def test_help_documents_the_defaults(monkeypatch, capsys, tmp_path):
    code, out, err = cli(main_rum, ["--help"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "none / FT (10 epochs, lr 0.1) / RL = SalUn (5 epochs, lr 0.1)" in " ".join(out.split())
    code, out, err = cli(main_rum_proxy, ["--help"], monkeypatch, capsys, tmp_path)
    assert code == 0 and "0.99/0.97/0.97" in out and "--rum_methods" in out


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem, nothing written
# ---------------------------------------------------------------------------------------------

def _only_confidence(t):
    p = t / "proxies.npz"
    np.savez(p, ids=np.arange(1437), confidence=np.random.RandomState(0).rand(1437))
    return p


BAD = {
    "methods_length": (main_rum, lambda t: ["--rum_methods", "FT,GA"], "2 methods, but there are --rum_groups 3"),
    "unknown_method": (main_rum, lambda t: ["--rum_methods", "FT,FOO,GA"], "'FOO': not a method a RUM step can run"),
    "retrain_step": (main_rum, lambda t: ["--rum_methods", "none,retrain,GA"], "'retrain': not a method a RUM step"),
    "unknown_unlearn": (main_rum, lambda t: ["--unlearn", "retrain"], "--unlearn 'retrain': not a method"),
    "rum_lr_length": (main_rum, lambda t: ["--unlearn", "FT", "--rum_lr", "0.1,0.1"], "--rum_lr 0.1,0.1: 2 values, expected 3"),
    "rum_epochs_length": (main_rum, lambda t: ["--rum_epochs", "1,1,1,1"], "--rum_epochs 1,1,1,1: 4 values, expected 3"),
    "rum_alpha_range": (main_rum_proxy, lambda t: ["--rum_alpha", "0.9,1.5,0.9"], "NG's retain weight"),
    "default_plan_k": (main_rum, lambda t: ["--rum_groups", "2"], "the default plan (none/FT/RL) has 3 steps"),
    "too_many_groups": (main_rum, lambda t: ["--unlearn", "GA", "--rum_groups", "91"], "more groups than the 90"),
    "proxy_file_nowhere": (main_rum_proxy, lambda t: ["--proxy_file", t / "nowhere.npz"], "no such file"),
    "proxy_absent": (main_rum_proxy, lambda t: ["--proxy_file", _only_confidence(t), "--mem_proxy", "max_conf"],
                     "has no 'max_conf'; proxies present: confidence"),
    "proxy_unknown": (main_rum_proxy, lambda t: ["--mem_proxy", "foo"], "--mem_proxy 'foo': unknown proxy"),
    "proxy_to_main_rum": (main_rum, lambda t: ["--mem_proxy", "confidence"], "use main_rum_proxy.py"),
    "mask_file": (main_rum, lambda t: ["--path", t / "m.pt"], "computes each SalUn step's saliency mask in-process"),
    "bad_mask_ratio": (main_rum, lambda t: ["--mask_ratio", "1.5"], "--mask_ratio 1.5"),
    "missing_scores": (main_rum, lambda t: ["--mem_file", t / "none.npz"], "--mem_file"),
    "rum_in_main_forget": (main_forget, lambda t: ["--unlearn", "RUM"], "main_rum.py"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, workdir, monkeypatch, capsys, tmp_path):
    module, extra, expect = BAD[case]
    base = [*README, "--ckpts", tmp_path / "fresh", "--mask", workdir / "ckpts" / "original" / RUN,
            "--mem_file", workdir / "ckpts" / "memorization" / "digits_memorization.npz"]
    argv = base + [str(a) for a in extra(tmp_path)]
    if "--mem_file" in argv[len(base):]:
        argv = argv[: len(base) - 2] + argv[len(base):]
    code, out, err = cli(module, argv, monkeypatch, capsys, tmp_path)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    prog = f"{module.__name__}.py"
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:") and expect in lines[0], err
    assert not (tmp_path / "fresh").exists()


def test_killed_during_a_step_then_rerun_equals_an_uninterrupted_run(workdir, tmp_path, monkeypatch, capsys):
    """RUM keeps no checkpoint: a run killed after its first step leaves no finished run, and the
    rerun starts over and gives exactly the uninterrupted result."""
    import numpy as np

    import stages.rum

    def copy_inputs(ck):
        for sub in ("original", "memorization"):
            for p in (workdir / "ckpts" / sub).rglob("*"):
                if p.is_file():
                    (ck / p.relative_to(workdir / "ckpts")).parent.mkdir(parents=True, exist_ok=True)
                    (ck / p.relative_to(workdir / "ckpts")).write_bytes(p.read_bytes())
        return ck

    argv = [*README, "--rum_epochs", "1,1,1"]
    ref, ck = copy_inputs(tmp_path / "ref"), copy_inputs(tmp_path / "ck")
    assert cli(main_rum, [*argv, "--ckpts", str(ref)], monkeypatch, capsys, workdir)[0] == 0
    real = stages.rum.record_step

    def kill_after_first(job, data_dev, fs, fs_sha, model, step, res):
        real(job, data_dev, fs, fs_sha, model, step, res)
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.rum, "record_step", kill_after_first)
    assert cli(main_rum, [*argv, "--ckpts", str(ck)], monkeypatch, capsys, workdir)[0] == 130
    assert not list(ck.glob("unlearn/**/metrics.json"))
    monkeypatch.undo()
    assert cli(main_rum, [*argv, "--ckpts", str(ck)], monkeypatch, capsys, workdir)[0] == 0
    a, b = (next(d.glob("unlearn/*/*/RUM_*/seed2")) for d in (ref, ck))
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["accuracy"] == mb["accuracy"] and ma["mia"] == mb["mia"]
    with np.load(a / "outputs.npz") as za, np.load(b / "outputs.npz") as zb:
        assert all(np.array_equal(za[k], zb[k]) for k in za.files)
