"""The phases every unlearning stage shares (main_forget.py, main_random.py, main_rum.py,
main_rum_proxy.py): the start model, the timed method, the metrics.json record and the closing
lines."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from arg_parser import group_dests, parse_args
from evaluation.evaluate import evaluate
from forget_sets.file import ForgetSet
from forget_sets.store import forget_ids_sha256
from models import build_for, load_into
from stages.configs import sam_config
from trainer.device import synchronize
from trainer.fit import CHECKPOINT
from trainer.step import NonFiniteLoss
import unlearn
from unlearn.base import UnlearnConfig, UnlearnTask
from utils.data import ImageData
from utils.errors import UserError
from utils.lock import is_held
from utils.wandb_log import WandbRun, WandbSettings, start as start_wandb
from utils.rundir import is_complete, save_model, write_metrics, write_outputs


# Flags that do not change a run's result (where it runs, where files go, how it is launched):
# a finished run is the same run whatever their values.
RESULT_NEUTRAL = frozenset({"data", "download", "device", "gpu", "workers", "ckpts", "save_dir", "save", "overwrite",
                            "resume", "checkpoint", "no_save", "mask", "path", "runs", "out", "compile"})


# The flag groups an unlearning run reads (main_forget.py, main_random.py).
FORGET_GROUPS = ("data", "training", "sam", "forget_set", "unlearning")


def finished_run(run_dir: Path, args: argparse.Namespace, prog: str, groups: Sequence[str],
                 identity: dict | None = None) -> bool:
    """Whether ``run_dir`` already holds this finished run: True (after one line saying where) when
    its config.json records the same ``identity`` (every setting that changes the result, resolved;
    runs written before identities were recorded: the same values of the flags the stage reads, the
    parser's ``groups`` less :data:`RESULT_NEUTRAL`). A finished run of other settings is refused in
    one line naming them (it must not be reused, nor replaced without ``--overwrite``). False when
    there is no finished run, or with ``--overwrite``."""
    if args.overwrite or not is_complete(run_dir):
        return False
    try:
        config = json.loads((run_dir / "config.json").read_text())
        old_args, old_ident = config.get("args", {}), config.get("identity")
    except (OSError, ValueError, AttributeError):
        old_args = old_ident = None
    if identity is not None and old_ident is not None:
        old, new = old_ident, json.loads(json.dumps(identity, default=str))
        keys, dash = set(old) | set(new), ""
    else:
        old, new = old_args, json.loads(json.dumps(vars(args), default=str))
        keys, dash = group_dests(*groups) - RESULT_NEUTRAL, "--"
    differ = None if old is None else sorted(k for k in keys if old.get(k) != new.get(k))
    if differ is None or differ:
        what = ("its config.json is unreadable" if differ is None else "other settings: " + ", ".join(
            f"{dash}{k} {old.get(k)!r} there vs {new.get(k)!r} here" for k in differ[:3]))
        raise UserError(f"{run_dir} holds a finished run of {what}; pass --overwrite to replace it")
    print(f"{prog}: {run_dir} already holds this finished run; nothing to do (--overwrite recomputes it)")
    return True


def refuse_other_unfinished(run_dir: Path, candidates: Sequence[Path], what: str) -> None:
    """``--resume`` finds no checkpoint in ``run_dir`` while one of ``candidates`` (runs of the same
    kind) was killed unfinished (a checkpoint, no metrics.json, no live writer): it was started with
    other settings, so resuming cannot mean this run and starting afresh is not what was asked.
    Refused in one line naming it. Runs in progress (their lock held) are not candidates."""
    others = sorted(c for c in candidates if Path(c) != Path(run_dir) and (Path(c) / CHECKPOINT).is_file()
                    and not is_complete(Path(c)) and not is_held(c))
    if others:
        raise UserError(f"--resume: there is no unfinished {what} of these settings ({run_dir}), but {others[0]} "
                        f"is an unfinished {what} of other settings; resume it with its own flags, or drop "
                        f"--resume to start this one")


def wandb_run(args: argparse.Namespace, name: str, group: str | None = None) -> WandbRun | None:
    """A W&B run mirroring this run when the ``--wandb-*`` flags ask for one (utils/wandb_log.py);
    ``group`` defaults to ``<arch>-<dataset>-<method>``."""
    settings = WandbSettings(mode=getattr(args, "wandb_mode", None), project=getattr(args, "wandb_project", None),
                             entity=getattr(args, "wandb_entity", None), run_id=getattr(args, "wandb_run_id", None),
                             group=getattr(args, "wandb_group_name", None))
    return start_wandb(settings, name=name, config=vars(args),
                       group=group or f"{args.arch}-{args.dataset}-{getattr(args, 'unlearn', None) or 'RUM'}")


class Diverged(Exception):
    """The unlearning loss became NaN or infinite (exit status 1)."""


def main_of(run: Callable[..., int], prog: str, argv: Sequence[str] | None, *, description: str | None = None,
            epilog: str | None = None, **kw: Any) -> int:
    """Parse ``argv`` and ``run(args, prog, **kw)``; a divergence is one line on stderr, exit 1."""
    args = parse_args(argv, prog=prog, description=description, epilog=epilog)
    try:
        return run(args, prog, **kw)
    except Diverged as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1


def start_model(args: argparse.Namespace, data: ImageData, model_file: Path | None) -> torch.nn.Module:
    """The model ``--arch`` for ``data``, loaded from ``model_file`` when given (a checkpoint that
    does not fit is a one-line error)."""
    model = build_for(args.arch, data, imagenet_arch=args.imagenet_arch)
    if model_file is not None:
        load_into(model, model_file, arch=args.arch, num_classes=data.num_classes)
    return model


def run_timed(method: str, task: UnlearnTask, cfg: UnlearnConfig, device: torch.device) -> float:
    """Run ``method`` on ``task`` (``task.model`` is modified in place), timed alone (CUDA
    synchronized); returns the seconds. A NaN/infinite loss or non-finite weights raise
    :class:`Diverged` naming ``--unlearn`` and ``--unlearn_lr``."""
    fn = unlearn.get_method(method)  # looked up at call time (tests spy on it)
    synchronize(device)
    t0 = time.perf_counter()
    try:
        fn(task, cfg)
    except NonFiniteLoss as e:
        raise Diverged(f"--unlearn {method} diverged ({e}); nothing was saved as finished. "
                       f"Lower --unlearn_lr (now {cfg.lr:g}) or the number of epochs") from None
    synchronize(device)
    seconds = time.perf_counter() - t0
    if not all(bool(torch.isfinite(p).all()) for p in task.model.parameters()):
        raise Diverged(f"--unlearn {method} left non-finite weights; nothing was saved as finished. "
                       f"Lower --unlearn_lr (now {cfg.lr:g})")
    return seconds


def unlearn_metrics(args: argparse.Namespace, *, method: str, tag: str, data: ImageData, forget_set: str,
                    forget_kind: str, fs: ForgetSet, fs_file: Path, fs_sha: str, ev: Any, seconds: float,
                    pretrained: Path | None, model_name: str, hparams: dict[str, Any],
                    device: torch.device, start_recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metrics.json`` record of an unlearning run (the schema analysis.py reads);
    ``start_recipe``: :func:`stages.configs.start_recipe` of the start model (the retrain pairing key)."""
    m = fs.manifest
    sam = sam_config(args)
    return {
        "method": method, "method_tag": tag, "dataset": data.name, "arch": args.arch, "seed": int(args.seed),
        "forget_set": forget_set, "forget_set_file": str(fs_file), "forget_set_sha256": fs_sha,
        "forget_ids_sha256": forget_ids_sha256(fs), "forget_kind": m.get("kind", forget_kind),
        "mem_level": m.get("level") if m.get("kind") in ("mem", "proxy") else None,
        "mem_proxy": m.get("proxy") if m.get("kind") == "proxy" else None,
        "group_index": m.get("group") if m.get("kind") == "es" else None,
        "num_forget": int(len(fs.forget_ids)), "num_retain": int(len(fs.retain_ids)),
        **ev.metrics,
        "unlearn_seconds": seconds,
        "pretrained": None if pretrained is None else str(pretrained), "model_name": model_name,
        "start_recipe": start_recipe,
        "sam": None if sam is None else {**asdict(sam), "separate": list(args.separate) if args.separate else None},
        "hparams": hparams,
        "device": str(device),
    }


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def summary_line(metrics: dict[str, Any], run_dir: Path) -> str:
    a = metrics["accuracy"]
    conf = metrics["mia"].get("confidence")
    return (f"{metrics['method_tag']}: retain {pct(a['retain'])}  forget {pct(a['forget'])}  test {pct(a['test'])}  "
            f"MIA(confidence) {'n/a' if conf is None else f'{conf:.3f}'}  {metrics['unlearn_seconds']:.1f}s"
            + ("  [COLLAPSED]" if metrics["collapsed"] else "") + f"  -> {run_dir}")


def finish_run(args: argparse.Namespace, model: torch.nn.Module, data: ImageData, fs: ForgetSet, run_dir: Path,
               device: torch.device, make_metrics: Callable[[Any], dict[str, Any]],
               commit: Callable[[], Path] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``fs`` and write the run directory: model.pt (unless ``--no_save``),
    outputs.npz, then metrics.json (``make_metrics(evaluation)``), which marks the run finished;
    only then the resume checkpoint (retrain) is removed, so a kill at any point keeps either a
    resumable or a finished run. ``commit`` then puts the run in place (``utils.rundir.commit_run_dir``:
    a replacement under ``--overwrite`` replaces the old run only now) and returns where it is.
    Prints the summary line and a warning when the model collapsed."""
    ev = evaluate(model, data, fs, device, seed=args.seed)
    metrics = make_metrics(ev)
    if not args.no_save:
        save_model(run_dir, model, arch=args.arch, num_classes=data.num_classes, dataset=data.name)
    write_outputs(run_dir, ev.outputs)
    write_metrics(run_dir, metrics)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    if commit is not None:
        run_dir = commit()
    print(summary_line(metrics, run_dir))
    if metrics["collapsed"]:
        print(f"warning: the model collapsed (retain accuracy {pct(metrics['accuracy']['retain'])} is at chance "
              f"level); its ToW is not meaningful. Flagged in metrics.json.")
    return metrics
