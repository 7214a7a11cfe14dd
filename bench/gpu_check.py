"""One prepared check of the whole toolkit on a device (meant for CUDA: under 5 minutes on one GPU).

    python bench/gpu_check.py --out gpu_check.json                 # CUDA (--device auto), ~3-5 min
    python bench/gpu_check.py --device cpu --quick --out q.json    # the same stages on the CPU, < 1 min

Every stage runs in this process through its entry script's ``main(argv)``, on synthetic CIFAR-10
written in torchvision's layout (bench/synthetic.py) in a temporary working directory, for a few
steps: pretraining (fp32, bf16, SAM), the memorization estimator (a batched ensemble), retrain,
FT, NG, SCRUB, wfisher, RL_og, the SalUn mask (generate_mask.py) and SalUn (RL with the mask),
RUM, the ToW and ToW-MIA tables, the entanglement score. After each stage: exit status 0, every
new ``outputs.npz`` holds finite float32 logits, every new ``model.pt`` finite tensors with
unprefixed keys, every new ``metrics.json`` only finite numbers; on CUDA, the stage allocated GPU
memory (it ran there). A host/device mismatch anywhere shows as that stage's error.

Then (not with --quick): ``torchrun --nproc_per_node=K main_train.py`` (K = min(2, GPUs); NCCL on
CUDA, gloo on the CPU); throughput of ResNet-18 training through ``trainer.fit.fit`` in img/s
(fp32, bf16, bf16 + torch.compile, with the compile time); the memorization ensemble: one batched
step of --ensemble_models small models against as many single steps
(``trainer.ensemble.compare_step_times``). --quick keeps the stage checks, times a tiny ResNet-20s
and 4-model ensemble instead, and skips torchrun and compile.

Writes one JSON summary to --out (``ok``, the machine, each check with its seconds and detail, the
throughput figures); exit status 0 when every check passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.synthetic import image_data, write_cifar10  # noqa: E402


# --- artifact checks -----------------------------------------------------------------------------

def _non_finite(obj, where: str = "") -> list[str]:
    """Paths of non-finite numbers in a JSON tree (None is allowed: NaN is written as null)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [where or "value"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _non_finite(v, f"{where}[{i}]")]
    return []


def check_file(path: Path) -> list[str]:
    """Problems of one artifact (outputs.npz, model.pt, metrics.json, a score .npz); [] when fine."""
    name = path.name
    if name == "outputs.npz":
        with np.load(path, allow_pickle=False) as z:
            logits = [k for k in z.files if k.endswith("_logits")]
            bad = [f"{k} is {z[k].dtype}" for k in logits if z[k].dtype != np.float32]
            bad += [f"{k} not finite" for k in logits if not np.isfinite(z[k]).all()]
            return bad + ([] if logits else ["no logits"])
    if name == "model.pt":
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        pre = [k for k in state if k.startswith(("_orig_mod.", "module."))]
        return [f"non-finite {k}" for k in bad[:3]] + [f"prefixed key {k}" for k in pre[:3]]
    if name.endswith(".json"):  # metrics.json, es.json, the tables' JSON
        return [f"non-finite {p}" for p in _non_finite(json.loads(path.read_text()))[:3]]
    if name.endswith("_memorization.npz") or name == "proxies.npz":
        with np.load(path, allow_pickle=False) as z:
            return [] if all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f") else ["non-finite"]
    return []


def _files(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


# --- running the stages --------------------------------------------------------------------------

class Checks:
    def __init__(self, device: torch.device, work: Path, log_dir: Path) -> None:
        self.device, self.work, self.log_dir = device, work, log_dir
        self.results: list[dict] = []

    def record(self, name: str, ok: bool, seconds: float, detail: str = "", **extra) -> bool:
        self.results.append({"name": name, "ok": bool(ok), "seconds": round(seconds, 2), "detail": detail, **extra})
        print(f"{'ok  ' if ok else 'FAIL'} {name:<22} {seconds:6.1f}s  {detail}", flush=True)
        return ok

    def stage(self, name: str, script: str, argv: list[str], expect: str, on_device: bool = True) -> bool:
        """``<script>.main(argv)`` in the working directory; then its new artifacts are checked, one
        of them matching the glob ``expect``; ``on_device``: on CUDA it must have allocated GPU memory."""
        before = _files(self.work)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        out, err, code = io.StringIO(), io.StringIO(), 0
        t0 = time.perf_counter()
        old = os.getcwd()
        try:
            os.chdir(self.work)
            module = importlib.import_module(script)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = module.main(argv) or 0
        except SystemExit as e:  # a parser error
            code = e.code if isinstance(e.code, int) else 2
        except Exception:  # noqa: BLE001 - a UserError or a crash: the stage failed; its traceback is logged
            err.write(traceback.format_exc())
            code = 1
        finally:
            os.chdir(old)
        seconds = time.perf_counter() - t0
        (self.log_dir / f"{name}.log").write_text(f"$ python {script}.py {' '.join(argv)}\n{out.getvalue()}\n"
                                                  f"--- stderr\n{err.getvalue()}")
        extra = {}
        if cuda:
            extra["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if code != 0:
            last = (err.getvalue().strip().splitlines() or out.getvalue().strip().splitlines() or ["?"])[-1]
            return self.record(name, False, seconds, f"exit {code}: {last[:300]}", **extra)
        new = [p for p, t in _files(self.work).items()
               if before.get(p) != t and p.relative_to(self.work).parts[0] != "logs"]
        problems = [f"{p.relative_to(self.work)}: {m}" for p in new for m in check_file(p)]
        if not any(p.match(expect) for p in new):
            problems.append(f"wrote no {expect}")
        if cuda and on_device and extra["peak_gpu_mb"] <= 0:
            problems.append("no GPU memory allocated: the stage did not run on the GPU")
        detail = "; ".join(problems[:3]) if problems else f"{len(new)} new files checked"
        return self.record(name, not problems, seconds, detail, **extra)

    def timed(self, name: str, fn) -> object:
        """``fn()`` recorded as a check: its returned dict (or its error)."""
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as e:  # noqa: BLE001
            (self.log_dir / f"{name}.log").write_text(traceback.format_exc())
            self.record(name, False, time.perf_counter() - t0, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            return None
        self.record(name, True, time.perf_counter() - t0, res.pop("detail", "") if isinstance(res, dict) else "")
        return res


def stage_plan(arch: str, device: str, n_train_split: int, batch: int, quick: bool) -> list[tuple]:
    """(check name, entry module, argv, glob of a file it must write[, runs on the device]) in
    order; each stage reads what the earlier ones wrote."""
    from arg_parser import parse_args
    from stages.configs import pretrain_dir

    base = ["--dataset", "cifar10", "--data", "datasets", "--arch", arch, "--device", device, "--epochs", "1",
            "--lr", "0.1", "--batch_size", str(batch)]
    start = str(pretrain_dir(parse_args([*base, "--precision", "fp32"])))
    n = max(3, (n_train_split // 3) // 3 * 3)  # high/mid/low groups disjoint; mix = n/3 of each
    forget = [*base, "--mask", start, "--mem", "high", "--num_indexes_to_replace", str(n), "--unlearn_epochs", "1"]
    methods = {"retrain": ["--unlearn_lr", "0.1"], "FT": ["--unlearn_lr", "0.01"],
               "NG": ["--unlearn_lr", "0.01", "--alpha", "0.99"],
               "SCRUB": ["--unlearn_lr", "0.005", "--beta", "0.001", "--gamma", "0.99", "--msteps", "1", "--kd_T", "4"],
               "wfisher": ["--alpha", "0.1"], "RL_og": ["--unlearn_lr", "0.01"]}
    mem_models = "4" if quick else "16"
    plan = [
        ("pretrain_fp32", "main_train", [*base, "--precision", "fp32"], "*/outputs.npz"),
        ("pretrain_bf16", "main_train", [*base, "--precision", "bf16"], "*_bf16/outputs.npz"),
        ("pretrain_sam", "main_train", [*base, "--precision", "auto", "--sam", "min", "--rho", "0.1"],
         "*/outputs.npz"),
        ("memorization", "main_memorization", ["--dataset", "cifar10", "--data", "datasets", "--arch", "cnn_s",
                                               "--device", device, "--epochs", "1", "--batch_size", str(batch),
                                               "--num_models", mem_models], "*/cifar10_memorization.npz"),
        *[(f"forget_{m}", "main_forget", ["--unlearn", m, *forget, *hp], "*/outputs.npz") for m, hp in methods.items()],
        ("salun_mask", "generate_mask", ["--save", "masks", "--mask_ratio", "0.5", *forget], "masks/*_0.5.pt"),
        ("salun_RL", "main_forget", ["--unlearn", "RL", "--path", "masks/mask_largest_0.5.pt", "--unlearn_lr", "0.01",
                                     *forget], "*/outputs.npz"),
        ("rum", "main_rum", ["--unlearn", "FT", *[a if a != "high" else "mix" for a in forget]], "*/outputs.npz"),
        ("analysis_tow", "analysis", ["--dataset", "cifar10", "--arch", arch, "--out", "analysis"],
         "analysis/tow.json", False),
        ("analysis_tow_mia", "analysis_mia", ["--dataset", "cifar10", "--arch", arch, "--out", "analysis"],
         "analysis/tow_mia.json", False),
        ("analysis_es", "analysis", ["--es", *forget, "--out", "analysis"], "analysis/es.json"),
    ]
    return plan


# --- distributed, throughput ---------------------------------------------------------------------

def torchrun_check(work: Path, arch: str, device: torch.device, batch: int) -> dict:
    nproc = min(2, torch.cuda.device_count()) if device.type == "cuda" else 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO / "main_train.py"), "--dataset", "cifar10", "--data", "datasets", "--arch", arch, "--epochs", "1",
           "--batch_size", str(batch), "--device", device.type, "--precision", "fp32", "--save_dir", "ddp"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    runs = [p for p in (work / "ddp").iterdir() if p.is_dir()]
    problems = [m for run in runs for f in ("model.pt", "outputs.npz", "metrics.json") for m in check_file(run / f)]
    if problems:
        raise RuntimeError("; ".join(problems[:3]))
    backend = "nccl" if device.type == "cuda" else "gloo"
    note = f"{nproc} process(es), {backend}" + ("" if nproc > 1 else " not exercised (1 GPU: one process, no DDP)")
    return {"detail": note, "nproc": nproc, "backend": backend if nproc > 1 else None}


def train_throughput(arch: str, device: torch.device, n: int, batch: int, epochs: int, precision: str,
                     compile: bool) -> dict:
    """img/s of ``fit`` epochs (the first one, with any compilation, reported apart)."""
    from models import build_for
    from trainer.device import prepare_model
    from trainer.fit import Recipe, fit

    data = image_data(n, 8, val_fraction=0.0)
    torch.manual_seed(0)
    model = prepare_model(build_for(arch, data), device)
    lines: list[str] = []
    hist = fit(model, data.to(device), data.train_ids[: len(data.train_ids) // batch * batch],
               Recipe(epochs=epochs, batch_size=batch, precision=precision), seed=0, device=device,
               log=lines.append, compile=compile)
    secs = [h["seconds"] for h in hist]
    steady = min(secs[1:]) if len(secs) > 1 else secs[0]
    imgs = len(data.train_ids) // batch * batch
    fails = [ln for ln in lines if ln.startswith("--compile")]
    if not all(math.isfinite(h["train_loss"]) for h in hist):
        raise RuntimeError(f"non-finite training loss: {[h['train_loss'] for h in hist]}")
    out = {"img_per_s": round(imgs / steady, 1), "first_epoch_s": round(secs[0], 2), "steady_epoch_s": round(steady, 3),
           "images_per_epoch": imgs}
    if compile:
        out["compile_s"] = round(secs[0] - steady, 2)
        out["compiled"] = not fails
    out["detail"] = f"{out['img_per_s']} img/s" + (f", compile {out['compile_s']} s" if compile else "") + \
        (f" ({fails[0]})" if fails else "")
    return out


def ensemble_throughput(device: torch.device, models: int, arch: str, batch: int) -> dict:
    from models import build_for
    from trainer.device import prepare_model
    from trainer.ensemble import compare_step_times
    from trainer.fit import Recipe

    data = image_data(batch, 8)
    torch.manual_seed(0)
    ms = [prepare_model(build_for(arch, data), device) for _ in range(models)]
    xb = data.x[:batch].to(device).float().div_(255)
    yb = data.y[:batch].to(device)
    t_b, t_s, err = compare_step_times(ms, xb, yb, Recipe(epochs=1, batch_size=batch), device, repeats=3)
    out = {"models": models, "arch": arch, "batch": batch, "batched_step_s": t_b, "one_by_one_s": t_s,
           "batched_img_per_s": round(models * batch / t_b, 1) if t_b else None,
           "one_by_one_img_per_s": round(models * batch / t_s, 1), "batched_error": err}
    out["speedup"] = round(t_s / t_b, 2) if t_b else None
    out["detail"] = f"batched {out['batched_img_per_s']} img/s, one by one {out['one_by_one_img_per_s']} img/s" + \
        (f", {out['speedup']}x" if t_b else f" (batched failed: {err})")
    if err is not None:
        raise RuntimeError(f"the batched ensemble cannot run: {err}")
    return out


# --- driver --------------------------------------------------------------------------------------

def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    bf16_supported=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    return info


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no torchrun/compile/ResNet-18 timing (CI, CPU)")
    p.add_argument("--out", default="gpu_check.json", help="the JSON summary")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    p.add_argument("--arch", default=None, help="architecture of the stages (default resnet18; --quick resnet20s)")
    p.add_argument("--per_file", type=int, default=None, help="images per CIFAR training file (5 files)")
    p.add_argument("--ensemble_models", type=int, default=None, help="models of the ensemble timing (default 32)")
    p.add_argument("--no_compile", action="store_true", help="skip the bf16 + torch.compile timing")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv=None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    quick = args.quick
    arch = args.arch or ("resnet20s" if quick else "resnet18")
    per_file, batch = args.per_file or (20 if quick else 100), 32 if quick else 64
    t_start = time.perf_counter()
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tmp.mkdir(parents=True, exist_ok=True)
    log_dir = tmp / "logs"
    log_dir.mkdir(exist_ok=True)
    print(f"# gpu_check on {device} ({'quick' if quick else 'full'}), work dir {tmp}", flush=True)
    write_cifar10(tmp / "datasets", per_file, 40 if quick else 200)
    checks = Checks(device, tmp, log_dir)
    n_split = 5 * per_file - (5 * per_file // 10)  # the 10% per-class validation split
    for name, script, argv, *rest in stage_plan(arch, str(device), n_split, batch, quick):
        checks.stage(name, script, argv, *rest)
    summary: dict = {"machine": machine(device), "quick": quick, "arch": arch, "train_images": 5 * per_file}
    if quick:
        checks.record("torchrun", True, 0.0, "skipped (--quick)", skipped=True)
    else:
        summary["torchrun"] = checks.timed("torchrun", lambda: torchrun_check(tmp, arch, device, batch))
    t_arch, t_n, t_bs, t_ep = ("resnet20s", 64, 32, 2) if quick else ("resnet18", 8192, 256, 4)
    tp = {"arch": t_arch, "images": t_n, "batch": t_bs, "epochs": t_ep}
    for key, prec, comp in (("fp32", "fp32", False), ("bf16", "bf16", False), ("bf16_compile", "bf16", True)):
        if comp and (quick or args.no_compile):
            checks.record(f"throughput_{key}", True, 0.0, "skipped (--quick)" if quick else "skipped", skipped=True)
            continue
        tp[key] = checks.timed(f"throughput_{key}", lambda p=prec, c=comp: train_throughput(
            t_arch, device, t_n, t_bs, t_ep, p, c))
    summary["throughput"] = tp
    m = args.ensemble_models or (4 if quick else 32)
    summary["ensemble"] = checks.timed("ensemble", lambda: ensemble_throughput(device, m, "cnn_s" if not quick else "mlp",
                                                                              64 if not quick else 32))
    summary.update(ok=all(r["ok"] for r in checks.results), checks=checks.results,
                   seconds=round(time.perf_counter() - t_start, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    failed = [r["name"] for r in checks.results if not r["ok"]]
    print(f"# {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)} in {summary['seconds']} s "
          f"-> {args.out}" + (f" (logs in {log_dir})" if failed or args.work else ""))
    if not args.work and not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
