"""ImageNet memorization forget sets from Feldman & Zhang's ``imagenet_index.npz`` (upstream-spec §5.4).

    python imagenet_mem_subset.py --num_indexes_to_replace 3000 --seed 2 \\
        [--mem_file imagenet_index.npz] [--train_dir datasets/imagenet/train] [--ckpts ckpts] [--save_dir .]

Reads ``tr_mem`` (scores) and ``tr_filenames`` (bytes; an image's key is the part of its name before
the first '.') from the index file (``--mem_file``, else ``imagenet_index.npz`` in the working
directory, ``--data`` or ``--data``/imagenet) and lists the ImageNet training folder (``--train_dir``,
default ``--data``/imagenet/train) exactly as torchvision's ``ImageFolder`` orders it (classes
sorted, files sorted): an image's global id is its ``ImageFolder`` index, and it is matched to the
index file by the stem of its file name. Only the file names are read, never the images.

Groups are chosen by score among the index entries found in the folder, with the rules of
:func:`forget_sets.select.memorization_groups` (high = top N, low = bottom N, mid = the N closest to
0.5; ties in index-file order). Writes

* ``<ckpts>/forget_sets/imagenet_mem-{low,mid,high,mix}_n{N}.npz``: forget sets (ids in score order,
  not dataset order: the original's evaluation subsets high[:1000] etc. were taken in dataset
  order, which made them arbitrary; here they are the 1000 most extreme, ``extra_*_mem``);
* ``<save_dir or .>/imagenet_filenames_indices_{N}_{seed}.npz`` for the original code: keys
  ``high_mem_indices``, ``med_mem_indices``, ``low_mem_indices``, ascending ``ImageFolder``
  indices as the original wrote them. ``--seed`` only names this file.

An existing forget-set file with the same selection is kept; a different one needs --overwrite.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arg_parser import build_parser, validate_common
from utils.cli import run_main
from utils.errors import UserError
from forget_sets.select import eval_subsets, memorization_groups, select_level
from forget_sets.file import forget_set_name, load_forget_set, make_forget_set, save_forget_set, sha256_file
from utils.io import atomic_save_npz

INDEX_NAME = "imagenet_index.npz"
LEVELS = ("low", "mid", "high", "mix")
EVAL_SUBSET = 1000


def parse(argv=None):
    p = build_parser("imagenet_mem_subset.py")
    p.add_argument("--train_dir", default=None,
                   help="(new) ImageNet training folder in ImageFolder layout (default: <data>/imagenet/train)")
    args = p.parse_args(argv)
    try:
        validate_common(args)
    except UserError as e:
        p.error(str(e))
    return args


def find_index(args) -> Path:
    if args.mem_file is not None:
        p = Path(args.mem_file)
        if not p.is_file():
            raise UserError(f"--mem_file {args.mem_file}: no such file; pass Feldman & Zhang's {INDEX_NAME}")
        return p
    tried = [Path.cwd() / INDEX_NAME, Path(args.data) / INDEX_NAME, Path(args.data) / "imagenet" / INDEX_NAME]
    for p in tried:
        if p.is_file():
            return p
    raise UserError(f"no {INDEX_NAME}: looked for {', '.join(map(str, tried))}; download it from "
                    f"https://pluskid.github.io/influence-memorization/ or pass --mem_file PATH")


def read_index(path: Path) -> tuple[np.ndarray, list[str]]:
    """``(tr_mem float64, keys)`` with key = file name before the first '.'."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"tr_mem", "tr_filenames"} - keys
            if missing:
                raise UserError(f"{path}: missing {', '.join(sorted(missing))} (keys present: "
                                f"{', '.join(sorted(keys)) or 'none'}); is it Feldman & Zhang's {INDEX_NAME}?")
            mem = np.asarray(z["tr_mem"])
            names = np.asarray(z["tr_filenames"])
    except UserError:
        raise
    except Exception as e:  # unreadable, damaged, pickled object arrays
        raise UserError(f"{path}: not a readable {INDEX_NAME} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]})") from None
    if mem.ndim != 1 or names.ndim != 1 or len(mem) != len(names):
        raise UserError(f"{path}: tr_mem {mem.shape} and tr_filenames {names.shape} must be 1-D of equal length")
    if not np.issubdtype(mem.dtype, np.number):
        raise UserError(f"{path}: tr_mem must hold numbers, got {mem.dtype}")
    mem = mem.astype(np.float64)
    bad = ~np.isfinite(mem)
    if bad.any():
        raise UserError(f"{path}: tr_mem has {int(bad.sum())} non-finite values (first at {int(np.flatnonzero(bad)[0])})")
    keys = [(n.decode() if isinstance(n, bytes) else str(n)).split(".")[0] for n in names.tolist()]
    return mem, keys


def list_image_folder(train_dir: Path) -> list[str]:
    """File paths in torchvision ``ImageFolder`` order (index = global id)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not train_dir.is_dir():
        raise UserError(f"--train_dir {train_dir}: no such directory (an ImageFolder: one folder per class)")
    try:
        _, class_to_idx = find_classes(str(train_dir))
        samples = make_dataset(str(train_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"--train_dir {train_dir}: not an ImageFolder ({' '.join(str(e).split())[:200]})") from None
    return [s for s, _ in samples]


def main() -> int:
    args = parse()
    n = args.num_indexes_to_replace
    if n is None:
        raise UserError("--num_indexes_to_replace N is required (the size of each memorization group)")
    index_path = find_index(args)
    train_dir = Path(args.train_dir) if args.train_dir else Path(args.data) / "imagenet" / "train"
    mem, keys = read_index(index_path)
    files = list_image_folder(train_dir)
    where: dict[str, int] = {}
    for i, f in enumerate(files):
        where.setdefault(os.path.basename(f).split(".")[0], i)
    pos = np.array([where.get(k, -1) for k in keys], dtype=np.int64)
    found = pos >= 0
    print(f"{index_path}: {len(keys)} scored images; {train_dir}: {len(files)} images; "
          f"{int(found.sum())} matched by file name")
    if not found.any():
        raise UserError(f"no file of --train_dir {train_dir} is named in {index_path} (e.g. {keys[0] if keys else '-'}"
                        f" vs {os.path.basename(files[0]) if files else 'no images'}); is it the ImageNet training set?")
    if not found.all():
        print(f"note: {int((~found).sum())} scored images are not in {train_dir} and are left out")
    ids, scores = pos[found], mem[found]
    groups = memorization_groups(ids, scores, n)  # ids in index-file order: ties keep that order
    score_of = dict(zip(ids.tolist(), scores.tolist()))
    num_train = len(files)
    train_ids = np.arange(num_train, dtype=np.int64)
    sha = sha256_file(index_path)
    extras = eval_subsets(memorization_groups(ids, scores, min(max(n, 1), EVAL_SUBSET, len(ids))), EVAL_SUBSET)
    out_dir = Path(args.ckpts) / "forget_sets"
    written = []
    for level in LEVELS:
        forget = select_level(groups, level, n)
        manifest = {"dataset": "imagenet", "split_seed": None, "num_train": num_train, "kind": "mem",
                    "level": level, "n": int(n), "shuffle": False, "score_sha256": sha,
                    "score_file": str(index_path), "eval_score_file": str(index_path), "eval_score_sha256": sha,
                    "train_dir": str(train_dir), "id_space": "torchvision ImageFolder index of train_dir"}
        manifest["name"] = forget_set_name(manifest)
        fs = make_forget_set(train_ids, forget, manifest, extras)
        path = out_dir / f"{manifest['name']}.npz"
        if path.is_file() and not args.overwrite:
            old = load_forget_set(path)
            if np.array_equal(old.forget_ids, fs.forget_ids) and np.array_equal(old.retain_ids, fs.retain_ids):
                print(f"{level}: {path} already holds this forget set")
                continue
            raise UserError(f"{path} holds a different forget set; pass --overwrite to replace it")
        save_forget_set(path, fs)
        s = np.array([score_of[int(i)] for i in fs.forget_ids])
        print(f"{level}: {len(fs.forget_ids)} images, scores {s.min():.4f}..{s.max():.4f} (mean {s.mean():.4f}) -> {path}")
        written.append(path)
    compat_dir = Path(args.save_dir) if args.save_dir else Path(".")
    compat = compat_dir / f"imagenet_filenames_indices_{n}_{args.seed}.npz"
    atomic_save_npz(compat, high_mem_indices=np.sort(groups["high"]), med_mem_indices=np.sort(groups["mid"]),
                    low_mem_indices=np.sort(groups["low"]))
    print(f"original-code index file -> {compat}")
    return 0


if __name__ == "__main__":
    run_main(main)
