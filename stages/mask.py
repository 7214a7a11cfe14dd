"""generate_mask.py: SalUn saliency masks of a forget set -> <--save>/mask_<order>_<ratio>.pt (upstream-spec §6.1).

    python generate_mask.py --save {MASK_PATH} --num_indexes_to_replace 3000 --unlearn_epochs 1 \
        --mem {MEM_GROUP} --group_index {ES_GROUP}
    python generate_mask.py --dataset digits --arch cnn_s --epochs 30 --lr 0.1 --batch_size 64 \
        --save ckpts/masks/digits --num_indexes_to_replace 100 --mem high [--mask_ratio 0.5] [--mask_order smallest]

Loads the model (``--mask PATH``, else the pretrained run the arguments point to; the same loader
as the unlearning scripts), obtains the forget set with the shared builder (forget_sets/store.py;
the file under ``<ckpts>/forget_sets/`` is reused or written), accumulates ``|sum of per-batch
mean gradients of -CE|`` over one pass of the forget set (eval mode, no augmentation;
unlearn/saliency.py), ranks all parameters together and writes one mask per ``--mask_ratio``
(default 0.1, 0.2, ..., 1.0) keeping the ``--mask_order`` (default largest) fraction.

``--release`` makes the sharp-unlearn release's mask (upstream-spec §6.1): order ``smallest``
whatever ``--mask_order`` says, and the gradient pass over the forget set shuffled (seed
``--seed``) and augmented unless ``--no_aug``, as the release's training loader; the files are
``mask_smallest_<ratio>_release.pt`` and their manifest records ``"release": true``.

``--unlearn_epochs`` is accepted because the README passes it; it does nothing here: the gradient
pass is always exactly one pass over the forget set. The written paths go to stdout, one per line;
progress notes go to stderr. Existing mask files are not replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from forget_sets.file import sha256_file
from forget_sets.kinds import load_model_file, plan_forget_set
from forget_sets.store import check_can_save, forget_ids_sha256, load_or_build
from stages import configs
from utils.rundir import check_writable, git_commit
from utils.data import load_data
from utils.errors import UserError
from unlearn.saliency import (DEFAULT_RATIOS, check_ratio, forget_gradients, mask_file_name, read_mask_file,
                            saliency_masks, save_mask)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mask_order(args: argparse.Namespace) -> str:
    """``--mask_order``; with ``--release`` the release's ``smallest`` (upstream-spec §6.1-5)."""
    return "smallest" if getattr(args, "release", False) else args.mask_order


def mask_targets(args: argparse.Namespace) -> tuple[Path, dict[float, Path]]:
    """Validate the output flags before any work: ``(directory, {ratio: file})``."""
    ratios = [check_ratio(q) for q in (args.mask_ratio if args.mask_ratio else DEFAULT_RATIOS)]
    if not ratios:
        raise UserError("--mask_ratio: no ratio given; accepted: comma-separated ratios in (0, 1]")
    if not args.save_dir:
        raise UserError("--save (or --save_dir) is required: the directory the mask files are written to")
    flag = "--save" if args.save else "--save_dir"
    out = Path(args.save_dir)
    check_writable(out, flag)
    release = bool(getattr(args, "release", False))
    return out, {q: out / mask_file_name(mask_order(args), q, release) for q in dict.fromkeys(ratios)}


def still_to_write(args: argparse.Namespace, targets: dict[float, Path], model_sha: str,
                   forget_set: str, forget_set_sha: str | None) -> dict[float, Path]:
    """The targets not yet written: a file already holding this mask (same model, forget set,
    order, ratio and batch size, e.g. from a run killed after some of its files) is kept; a file of
    another mask is refused unless ``--overwrite``."""
    flag = "--save" if args.save else "--save_dir"
    todo = {}
    for q, path in targets.items():
        if not path.exists() or args.overwrite:
            todo[q] = path
            continue
        _, m = read_mask_file(path, flag)
        same = m is not None and (m.get("model_sha256"), m.get("forget_set_name"), m.get("order"), m.get("ratio"),
                                  m.get("batch_size"), bool(m.get("release", False))) == (
            model_sha, forget_set, mask_order(args), float(q), int(args.batch_size), bool(getattr(args, "release", False)))
        if same and m.get("release"):
            same = (m.get("seed"), m.get("augment")) == (int(args.seed), not args.no_aug)
        if same and forget_set_sha is not None and m.get("forget_set_sha256") not in (None, forget_set_sha):
            same = False
        if not same:
            raise UserError(f"{flag} {path.parent}: {path.name} holds another mask (other model, forget set or "
                            f"settings); pass --overwrite to replace it")
        print(f"{path}: already holds this mask", file=sys.stderr)
    return todo


def gradient_batches(args: argparse.Namespace, data) -> dict:
    """How the gradient pass draws its batches: in order, not augmented; with ``--release`` the
    release's training loader: shuffled (seed ``--seed``), augmented unless ``--no_aug``."""
    if not getattr(args, "release", False):
        return {}
    return {"shuffle": True, "generator": torch.Generator().manual_seed(int(args.seed)),
            "augment": None if args.no_aug else data.augment}


def run(args: argparse.Namespace) -> int:
    """The whole stage (see the module docstring); returns the exit status."""
    out, targets = mask_targets(args)
    device = configs.device(args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    model_file = configs.resolve_start_model(args)
    spec = configs.forget_spec(args, start_model=model_file)
    plan = plan_forget_set(spec, data)
    check_can_save(plan)
    model_sha = sha256_file(model_file)
    targets = still_to_write(args, targets, model_sha, plan.name,
                             sha256_file(plan.path) if plan.path.is_file() else None)
    if not targets:
        note(f"{out}: every mask file already holds its mask; nothing to do (--overwrite recomputes them)")
        return 0
    model = load_model_file(model_file, spec, data, device)
    fs = load_or_build(plan, spec, data, device=device, log=note)
    if args.unlearn_epochs != 1:
        note(f"--unlearn_epochs {args.unlearn_epochs}: ignored; the gradient pass is one pass over the forget set")
    order, release = mask_order(args), bool(getattr(args, "release", False))
    note(f"saliency of {len(fs.forget_ids)} forget examples under {model_file} on {device} "
         f"(batch {args.batch_size}, order {order}" + (", the release's: shuffled, "
                                                        f"{'not ' if args.no_aug else ''}augmented)" if release else ")"))
    grads = forget_gradients(model, data, fs.forget_ids, device, args.batch_size, **gradient_batches(args, data))
    masks = saliency_masks(grads, list(targets), order)
    num_params = sum(g.numel() for g in grads.values())
    base = {
        "model_file": str(model_file), "model_sha256": model_sha,
        "forget_set": str(plan.path), "forget_set_name": plan.name,
        "forget_set_sha256": sha256_file(plan.path) if plan.path.is_file() else None,
        "forget_ids_sha256": forget_ids_sha256(fs), "num_forget": int(len(fs.forget_ids)),
        "order": order, "release": release, **({"seed": int(args.seed), "augment": not args.no_aug} if release else {}),
        "arch": args.arch, "dataset": args.dataset, "split_seed": int(args.split_seed),
        "num_params": int(num_params), "batch_size": int(args.batch_size),
        "command": " ".join(["generate_mask.py"] + sys.argv[1:]), "git_commit": git_commit(),
    }
    for q, path in targets.items():
        marked = int(sum(int(m.sum()) for m in masks[q].values()))
        save_mask(path, masks[q], {**base, "ratio": float(q), "num_marked": marked})
        print(path, flush=True)
    note(f"wrote {len(targets)} mask file(s) to {out}")
    return 0

