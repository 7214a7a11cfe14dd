"""The original README's commands, verbatim (placeholders filled), on a generated CIFAR-10 in
torchvision's on-disk format (the ``cifar_data`` fixture: 100 training images, 10 per class, so 90
in the training split; 20 test images), each run in a working directory that holds ``datasets``
(the generated data) and ``estimates_results.npz`` (synthetic CIFAR-10 memorization scores, as a
user who downloaded Zhao et al.'s file has them).

Placeholders: {DATASET} = CIFAR10, {ARCHITECTURE} = resnet20s (the smallest CIFAR ResNet, so the
file stays fast on a CPU), N = 30 for ``--num_indexes_to_replace 3000`` (a third of the 90 training
examples: the high/mid/low groups of 30 are disjoint and the mix set is 10 + 10 + 10),
{EPOCHS} = 1 for unlearning. Forget sets: §2 ``--mem 0`` (low), §3.1 ``--mem high``, §3.2 ``--mem
mid``, RUM ``--mem mix``; ``--group_index`` is given as the README does and loses to ``--mem``.

The §3.1 and RUM commands pass no ``--mask``, so they start from the pretrained model at the
default path (``--epochs 50 --lr 0.1 --batch_size 256 --seed 2``): the §1 command with
{EPOCHS} = 50 and {BATCH_SIZE} = 256 writes exactly that run (20-35 s for resnet20s on 90 images
on this project's 2-core CPU). §1 with {EPOCHS} = 2 and {BATCH_SIZE} = 32 gives the model that
§2's retrain names with ``--mask``.

§3.2's commands pass neither ``--dataset`` nor ``--arch``: the parser's defaults (cifar10, resnet18)
apply, so they need a ResNet-18 at ``ckpts/original/cifar10_resnet18_sgd_ep50_lr0.1_bs256_seed2``.
Fifty ResNet-18 epochs would take several minutes on this CPU (3-7 s an epoch), so that directory
is written by ``main_train.py --dataset CIFAR10 --arch resnet18 --epochs 1 --checkpoint <that
directory>`` (setup, not a README command; the §3.2 commands themselves are verbatim).

The module fixture runs every command once; the tests then check each stage's exit status and
files. The ResNet-18 chain (§3.2) runs as separate processes in a background thread while the
resnet20s commands run one after the other in this process (each entry script's ``main`` through
``utils.cli.run_main`` with ``sys.argv`` and the working directory set, exactly as ``python <script>``
runs it, without the ~2 s interpreter and torch start-up per command). The two chains use different
forget sets (§3.2: ``--mem mid``), so no forget-set file is built by two processes at once.
"""
from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import script_cmd, script_env

ARCH = "resnet20s"
N = "30"
DEFAULT_RUN = f"cifar10_{ARCH}_sgd_ep50_lr0.1_bs256_seed2"  # where stages without --mask look
S1_RUN = f"cifar10_{ARCH}_sgd_ep2_lr0.1_bs32_seed2"
R18_RUN = "cifar10_resnet18_sgd_ep50_lr0.1_bs256_seed2"  # the parser defaults' run (§3.2)
TEST_THREADS = int(os.environ.get("TEST_THREADS", "1"))  # as conftest.py: one thread per process


def _pretrain(epochs: int, batch: int) -> list[str]:
    """README §1."""
    return ["--dataset", "CIFAR10", "--arch", ARCH, "--epochs", str(epochs), "--lr", "0.1", "--batch_size",
            str(batch), "--save_dir", "ckpts/original/", "--data", "datasets"]


# README §3.1: METHOD -> (--unlearn_lr, optional hyper-parameters, method tag of the run directory)
S31 = {
    "retrain": ("0.1", [], "retrain_lr0.1_ep1"),
    "FT": ("0.01", [], "FT_lr0.01_ep1_sgd"),
    "FT_prune": ("0.01", ["--alpha", "1e-4"], "FT_prune_alpha0.0001_lr0.01_ep1_sgd"),
    "GA": ("0.0001", [], "GA_lr0.0001_ep1_sgd"),
    "NG": ("0.01", ["--alpha", "0.99"], "NG_alpha0.99_lr0.01_ep1_sgd"),
    "SCRUB": ("0.005", ["--beta", "0.001", "--gamma", "0.99", "--msteps", "1", "--kd_T", "4"],
              "SCRUB_msteps1_kdT4_beta0.001_gamma0.99_lr0.005_ep1_sgd"),
    "wfisher": ("0.01", ["--alpha", "0.1"], "wfisher_alpha0.1"),
}


def _s31(method: str) -> list[str]:
    lr, extra, _ = S31[method]
    return ["--unlearn", method, "--dataset", "CIFAR10", "--arch", ARCH, "--num_indexes_to_replace", N,
            "--unlearn_lr", lr, "--unlearn_epochs", "1", "--mem", "high", "--group_index", "3", *extra]


# README §3.2 ({MASK_PATH}: the directory for generate_mask.py, one of its files for main_random.py)
MASK_DIR = "masks"
MASK_FILE = f"{MASK_DIR}/mask_largest_0.5.pt"
S32_TAGS = {"RL": "RL_lr0.1_ep1_sgd_mask_largest_0.5", "RL_og": "RL_og_lr0.1_ep1_sgd"}


def _s32(method: str) -> list[str]:
    return ["--unlearn", method, "--unlearn_lr", "0.1", "--unlearn_epochs", "1", "--num_indexes_to_replace", N,
            "--mem", "mid", "--group_index", "5", *(["--path", MASK_FILE] if method == "RL" else [])]


# README §3 RUM ({ORIGINAL_MODEL_EPOCHS} = 50: the default-path model), --unlearn GA on every group
RUM = ["--unlearn", "GA", "--mem", "mix", "--num_indexes_to_replace", N, "--dataset", "CIFAR10", "--arch", ARCH,
       "--epochs", "50", "--lr", "0.1", "--batch_size", "256"]
RUM_TAGS = {"main_rum.py": "RUM_GA-GA-GA_mem_lr0.01-0.01-0.01_ep10-10-10_sgd",
            "main_rum_proxy.py": "RUM_GA-GA-GA_proxy-confidence_lr0.01-0.01-0.01_ep10-10-10_sgd"}


def _s4(mem_proxy: str) -> list[str]:
    """README §4 with {METHOD} = FT, {MEM_PROXY} = mem_proxy, {MEM_GROUP} = high."""
    return ["--no_aug", "--dataset", "CIFAR10", "--arch", ARCH, "--unlearn", "FT", "--mem_proxy", mem_proxy,
            "--mem", "high", "--num_indexes_to_replace", N]


@dataclass(frozen=True)
class Cmd:
    name: str
    script: str
    args: tuple[str, ...]


# The ResNet-18 chain (§3.2): separate processes, in a background thread, alongside the rest.
R18_CHAIN = [
    Cmd("r18_setup", "main_train.py", ("--dataset", "CIFAR10", "--arch", "resnet18", "--epochs", "1",
                                       "--checkpoint", f"ckpts/original/{R18_RUN}")),
    Cmd("s32_mask", "generate_mask.py", ("--save", MASK_DIR, "--num_indexes_to_replace", N, "--unlearn_epochs", "1",
                                         "--mem", "mid", "--group_index", "5")),
    Cmd("s32_RL", "main_random.py", tuple(_s32("RL"))),
    Cmd("s32_RL_og", "main_random.py", tuple(_s32("RL_og"))),
]
# The resnet20s chain, in this process, in order. {MEM_PROXY} of README §4 selects rows only from
# forget sets chosen by a proxy; the README's own unlearning commands build none, so two setup runs
# (the §3.1 command plus --mem_proxy confidence: FT and its retrain reference) give §4 rows to score.
MAIN_CHAIN = [
    Cmd("s1", "main_train.py", tuple(_pretrain(2, 32))),
    Cmd("s2_retrain", "main_forget.py", ("--unlearn", "retrain", "--dataset", "CIFAR10", "--arch", ARCH, "--epochs",
                                         "2", "--lr", "0.1", "--batch_size", "32", "--data", "datasets",
                                         "--unlearn_epochs", "2", "--unlearn_lr", "0.1", "--mem", "0",
                                         "--num_indexes_to_replace", N, "--mask", f"ckpts/original/{S1_RUN}")),
    Cmd("s1_default", "main_train.py", tuple(_pretrain(50, 256))),
    *[Cmd(f"s31_{m}", "main_forget.py", tuple(_s31(m))) for m in S31],
    Cmd("rum", "main_rum.py", tuple(RUM)),
    Cmd("rum_proxy", "main_rum_proxy.py", tuple(RUM)),
    Cmd("proxy_retrain", "main_forget.py", (*_s31("retrain"), "--mem_proxy", "confidence")),
    Cmd("proxy_FT", "main_forget.py", (*_s31("FT"), "--mem_proxy", "confidence")),
    None,  # wait for the ResNet-18 chain: §4 reads every run under ckpts/unlearn
    Cmd("s4_tow", "analysis.py", tuple(_s4("confidence"))),
    Cmd("s4_tow_mia", "analysis_mia.py", tuple(_s4("confidence"))),
    Cmd("s4_no_match", "analysis.py", tuple(_s4("max_conf"))),
]


def _in_process(cmd: Cmd, cwd: Path) -> subprocess.CompletedProcess:
    """``python <script> <args>`` in ``cwd``, run in this process (no interpreter start-up: the
    entry script's ``main`` through :func:`utils.cli.run_main`, as its ``__main__`` block does)."""
    from utils.cli import run_main

    module = importlib.import_module(cmd.script[: -len(".py")])
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = [cmd.script, *cmd.args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_main(module.main)
            except SystemExit as e:
                code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
            except Exception:  # a crash: exit status 1 with the traceback, as the interpreter gives
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(["python", cmd.script, *cmd.args], code, out.getvalue(), err.getvalue())


def _subprocess(cmd: Cmd, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(script_cmd(cmd.script, *cmd.args), cwd=cwd, env=script_env(TEST_THREADS),
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -9, str(e.stdout), f"timed out: {e}")


def _run_chain(chain: list[Cmd], run, cwd: Path, results: dict) -> None:
    """Run ``chain`` in order (a command that needs a failed one's output fails with its own message)."""
    for cmd in chain:
        results[cmd.name] = run(cmd, cwd)


@pytest.fixture(scope="module")
def readme(cifar_data, tmp_path_factory):
    """``(working directory, {command name: CompletedProcess})`` after every command ran once."""
    root, arrays = cifar_data
    work = tmp_path_factory.mktemp("cifar_readme")
    try:
        (work / "datasets").symlink_to(root, target_is_directory=True)
    except OSError:
        shutil.copytree(root, work / "datasets")
    # one score per image of the original training split (global ids 0..99), in [0, 1], deterministic
    n = len(arrays["cifar10"]["y"])
    np.savez(work / "estimates_results.npz", memorization=np.random.RandomState(0).rand(n))
    results: dict[str, subprocess.CompletedProcess] = {}
    background = threading.Thread(target=_run_chain, args=(R18_CHAIN, _subprocess, work, results), daemon=True)
    background.start()
    try:
        wait = MAIN_CHAIN.index(None)
        _run_chain(MAIN_CHAIN[:wait], _in_process, work, results)
    finally:
        background.join()
    _run_chain(MAIN_CHAIN[wait + 1:], _in_process, work, results)
    return work, results


def _ok(readme, name: str) -> subprocess.CompletedProcess:
    r = readme[1][name]
    assert r.returncode == 0, f"{name}: {' '.join(map(str, r.args))}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _check_pretrained(run_dir: Path, arch: str, epochs: int) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs"] == epochs
    assert all(0 <= m[k] <= 1 for k in ("train_acc", "val_acc", "test_acc"))
    ck = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    assert ck["arch"] == arch and ck["num_classes"] == 10 and ck["dataset"] == "cifar10"
    with np.load(run_dir / "proxies.npz") as z:  # main_rum_proxy.py reads these
        assert len(z["ids"]) == 90 and {"confidence", "max_conf", "entropy", "bi_acc"} <= set(z.files)
    assert (run_dir / "config.json").is_file() and (run_dir / "outputs.npz").is_file()
    return m


def _check_run(run_dir: Path, method: str, forget_set: str, arch: str = ARCH) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["method"] == method and m["forget_set"] == forget_set
    assert m["dataset"] == "cifar10" and m["arch"] == arch and m["num_forget"] == 30 and m["seed"] == 2
    assert set(m["accuracy"]) >= {"retain", "forget", "val", "test"}
    assert all(0 <= v <= 1 for v in m["accuracy"].values()) and all(0 <= v <= 1 for v in m["mia"].values())
    assert (run_dir / "config.json").is_file() and (run_dir / "model.pt").is_file()
    with np.load(run_dir / "outputs.npz") as z:
        assert len(z["forget_ids"]) == 30 and z["test_logits"].shape == (20, 10)
    return m


def _unlearn_dir(work: Path, forget_set: str, model: str, tag: str) -> Path:
    return work / "ckpts" / "unlearn" / forget_set / model / tag / "seed2"


def test_s1_pretraining(readme):
    work, _ = readme
    for name, run, epochs in (("s1", S1_RUN, 2), ("s1_default", DEFAULT_RUN, 50)):
        r = _ok(readme, name)
        assert r.stdout.strip().splitlines()[-1].endswith(f"-> ckpts/original/{run}")
        m = _check_pretrained(work / "ckpts" / "original" / run, ARCH, epochs)
        assert len(m["history"]) == epochs
    _ok(readme, "r18_setup")
    _check_pretrained(work / "ckpts" / "original" / R18_RUN, "resnet18", 1)


def test_s2_retrain(readme):
    work, _ = readme
    r = _ok(readme, "s2_retrain")
    run_dir = _unlearn_dir(work, "cifar10_mem-low_n30", S1_RUN, "retrain_lr0.1_ep2_bs32")
    assert f"-> {run_dir.relative_to(work)}" in r.stdout
    m = _check_run(run_dir, "retrain", "cifar10_mem-low_n30")
    assert m["mem_level"] == "low" and m["pretrained"] is None and m["num_retain"] == 60
    assert m["hparams"]["recipe"]["epochs"] == 2 and m["hparams"]["recipe"]["batch_size"] == 32
    scores = np.load(work / "estimates_results.npz")["memorization"]
    with np.load(run_dir / "outputs.npz") as z:  # the 30 lowest-scoring training examples
        assert scores[z["forget_ids"]].max() < scores[z["retain_ids"]].min()


@pytest.mark.parametrize("method", list(S31))
def test_s31_main_forget(readme, method):
    work, _ = readme
    r = _ok(readme, f"s31_{method}")
    assert "--mem takes precedence over --group_index 3" in r.stdout
    run_dir = _unlearn_dir(work, "cifar10_mem-high_n30", DEFAULT_RUN, S31[method][2])
    m = _check_run(run_dir, method, "cifar10_mem-high_n30")
    assert m["forget_kind"] == "mem" and m["mem_level"] == "high" and m["group_index"] is None
    assert {"high_mem", "mid_mem", "low_mem"} <= set(m["accuracy"])
    if method == "retrain":
        assert m["pretrained"] is None
    else:
        assert m["pretrained"] == f"ckpts/original/{DEFAULT_RUN}/model.pt"


def test_s32_generate_mask_and_main_random(readme):
    from unlearn.saliency import read_mask_file

    work, _ = readme
    r = _ok(readme, "s32_mask")
    files = [f"{MASK_DIR}/mask_largest_{q}.pt" for q in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    assert r.stdout.split() == files and all((work / f).is_file() for f in files)
    mask, man = read_mask_file(work / MASK_FILE)
    assert man["arch"] == "resnet18" and man["dataset"] == "cifar10" and man["ratio"] == 0.5
    start = torch.load(work / "ckpts" / "original" / R18_RUN / "model.pt", weights_only=True)["state_dict"]
    for method, tag in S32_TAGS.items():
        r = _ok(readme, f"s32_{method}")
        run_dir = _unlearn_dir(work, "cifar10_mem-mid_n30", R18_RUN, tag)
        m = _check_run(run_dir, method, "cifar10_mem-mid_n30", arch="resnet18")
        assert m["mem_level"] == "mid" and m["pretrained"] == f"ckpts/original/{R18_RUN}/model.pt"
        if method == "RL":  # SalUn: the weights outside the mask never move
            after = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
            assert all(torch.equal(after[k][~mk], start[k][~mk]) for k, mk in mask.items())
            assert any(not torch.equal(after[k][mk], start[k][mk]) for k, mk in mask.items())


@pytest.mark.parametrize("script", list(RUM_TAGS))
def test_s3_rum(readme, script):
    work, _ = readme
    _ok(readme, {"main_rum.py": "rum", "main_rum_proxy.py": "rum_proxy"}[script])
    run_dir = _unlearn_dir(work, "cifar10_mem-mix_n30", DEFAULT_RUN, RUM_TAGS[script])
    m = _check_run(run_dir, "RUM", "cifar10_mem-mix_n30")
    assert m["mem_level"] == "mix" and m["rum"]["group_sizes"] == [10, 10, 10]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["step0_GA", "step1_GA", "step2_GA"]
    if script == "main_rum_proxy.py":
        assert m["rum"]["proxy"] == "confidence"
        assert m["rum"]["proxy_file"] == f"ckpts/original/{DEFAULT_RUN}/proxies.npz"


@pytest.mark.parametrize("name,stem", [("s4_tow", "tow"), ("s4_tow_mia", "tow_mia")])
def test_s4_analysis(readme, name, stem):
    work, res = readme
    for setup in ("proxy_retrain", "proxy_FT"):
        _ok(readme, setup)
    r = _ok(readme, name)
    out = work / "ckpts" / "analysis"
    assert all((out / f"{stem}{s}").is_file() for s in (".md", ".csv", ".json"))
    assert "| FT |" in r.stdout  # the row label: the method's paper name
    rows = list(csv.DictReader((out / f"{stem}.csv").open()))
    ft = [row for row in rows if row["method_tag"] == "FT_lr0.01_ep1_sgd"]
    assert len(ft) == 1 and ft[0]["mem_proxy"] == "confidence" and ft[0]["mem_level"] == "high"
    assert ft[0]["missing_retrain_seeds"] == "" and 0 <= float(ft[0][f"{stem}_mean"]) <= 1
    # only FT rows and their retrain references: the filters kept nothing else
    assert {row["method"] for row in rows} == {"FT", "retrain"}


def test_s4_proxy_filter_without_runs_is_a_clear_error(readme):
    """No forget set was chosen by the max_conf proxy: exit status 2, one line that lists what exists."""
    r = readme[1]["s4_no_match"]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("analysis.py: error: no run under ckpts/unlearn matches") and "max_conf" in lines[0]
