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

``--unlearn_epochs`` is accepted because the README passes it; it does nothing here: the gradient
pass is always exactly one pass over the forget set. The written paths go to stdout, one per line;
progress notes go to stderr. Existing mask files are not replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forget_sets.file import sha256_file
from forget_sets.kinds import load_model_file, plan_forget_set
from forget_sets.store import check_can_save, forget_ids_sha256, load_or_build
from stages import configs
from utils.rundir import check_writable, git_commit
from utils.data import load_data
from utils.errors import UserError
from unlearn.saliency import (DEFAULT_RATIOS, check_ratio, forget_gradients, mask_file_name, saliency_masks,
                            save_mask)


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    targets = {q: out / mask_file_name(args.mask_order, q) for q in dict.fromkeys(ratios)}
    existing = [p for p in targets.values() if p.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{flag} {out}: {existing[0].name} already exists ({len(existing)} of the mask files); "
                        f"pass --overwrite to replace them")
    return out, targets


def run(args: argparse.Namespace) -> int:
    """The whole stage (see the module docstring); returns the exit status."""
    out, targets = mask_targets(args)
    device = configs.device(args)
    data = load_data(args.dataset, args.data, split_seed=args.split_seed, download=args.download)
    model_file = configs.resolve_start_model(args)
    spec = configs.forget_spec(args, start_model=model_file)
    plan = plan_forget_set(spec, data)
    check_can_save(plan)
    model = load_model_file(model_file, spec, data, device)
    fs = load_or_build(plan, spec, data, device=device, log=note)
    if args.unlearn_epochs != 1:
        note(f"--unlearn_epochs {args.unlearn_epochs}: ignored; the gradient pass is one pass over the forget set")
    note(f"saliency of {len(fs.forget_ids)} forget examples under {model_file} on {device} "
         f"(batch {args.batch_size}, order {args.mask_order})")
    grads = forget_gradients(model, data, fs.forget_ids, device, args.batch_size)
    masks = saliency_masks(grads, list(targets), args.mask_order)
    num_params = sum(g.numel() for g in grads.values())
    base = {
        "model_file": str(model_file), "model_sha256": sha256_file(model_file),
        "forget_set": str(plan.path), "forget_set_name": plan.name,
        "forget_set_sha256": sha256_file(plan.path) if plan.path.is_file() else None,
        "forget_ids_sha256": forget_ids_sha256(fs), "num_forget": int(len(fs.forget_ids)),
        "order": args.mask_order, "arch": args.arch, "dataset": args.dataset, "split_seed": int(args.split_seed),
        "num_params": int(num_params), "batch_size": int(args.batch_size),
        "command": " ".join(["generate_mask.py"] + sys.argv[1:]), "git_commit": git_commit(),
    }
    for q, path in targets.items():
        marked = int(sum(int(m.sum()) for m in masks[q].values()))
        save_mask(path, masks[q], {**base, "ratio": float(q), "num_marked": marked})
        print(path, flush=True)
    note(f"wrote {len(targets)} mask file(s) to {out}")
    return 0

