"""imagenet_mem_subset.py: ImageNet memorization forget sets from Feldman & Zhang's
``imagenet_index.npz`` (docs/stage_memorization.md).

Reads ``tr_mem`` (scores) and ``tr_filenames`` (bytes; an image's key is the part of its name before
the first '.') from the index file (``--mem_file``, else ``imagenet_index.npz`` in the working
directory, ``--data`` or ``--data``/imagenet) and lists the ImageNet training folder (``--train_dir``,
default ``--data``/imagenet/train) exactly as torchvision's ``ImageFolder`` orders it (classes
sorted, files sorted; :func:`utils.data.image_folder`): an image's global id is its ``ImageFolder``
index, and it is matched to the index file by the stem of its file name. Only the file names are
read, never the images.

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

import argparse
import os
from pathlib import Path

import numpy as np

from arg_parser import parse_args as common_parse_args
from forget_sets.file import ForgetSet, forget_set_name, load_forget_set, make_forget_set, save_forget_set, sha256_file
from forget_sets.kinds import EVAL_SUBSET
from forget_sets.select import LEVELS, eval_subsets, memorization_groups, select_level
from utils import paths
from utils.data import image_folder
from utils.errors import UserError
from utils.io import atomic_save_npz
from utils.rundir import check_writable

INDEX_NAME = "imagenet_index.npz"


def _add_train_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train_dir", default=None,
                   help="(new) ImageNet training folder in ImageFolder layout (default: <data>/imagenet/train)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The common flags plus ``--train_dir``."""
    return common_parse_args(argv, "imagenet_mem_subset.py", extend=_add_train_dir)


def find_index(mem_file: str | None, data_root: str) -> Path:
    """``--mem_file``, else the first ``imagenet_index.npz`` in the cwd, ``--data``, ``--data``/imagenet."""
    if mem_file is not None:
        p = Path(mem_file)
        if not p.is_file():
            raise UserError(f"--mem_file {mem_file}: no such file; pass Feldman & Zhang's {INDEX_NAME}")
        return p
    tried = [Path.cwd() / INDEX_NAME, Path(data_root) / INDEX_NAME, Path(data_root) / "imagenet" / INDEX_NAME]
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
        raise UserError(f"{path}: tr_mem has {int(bad.sum())} non-finite values "
                        f"(first at {int(np.flatnonzero(bad)[0])})")
    keys = [(n.decode() if isinstance(n, bytes) else str(n)).split(".")[0] for n in names.tolist()]
    return mem, keys


def list_train_images(train_dir: Path) -> list[str]:
    """File paths in torchvision ``ImageFolder`` order (index = global id)."""
    if not train_dir.is_dir():
        raise UserError(f"--train_dir {train_dir}: no such directory (an ImageFolder: one folder per class)")
    samples, _ = image_folder(train_dir, flag="--train_dir")
    return [s for s, _ in samples]


def match_index(index_path: Path, keys: list[str], train_dir: Path, files: list[str]) -> np.ndarray:
    """The global id of every index entry (-1 where its image is not in ``files``); none found is
    an error."""
    where: dict[str, int] = {}
    for i, f in enumerate(files):
        where.setdefault(os.path.basename(f).split(".")[0], i)
    pos = np.array([where.get(k, -1) for k in keys], dtype=np.int64)
    found = pos >= 0
    print(f"{index_path}: {len(keys)} scored images; {train_dir}: {len(files)} images; "
          f"{int(found.sum())} matched by file name")
    if not found.any():
        example = os.path.basename(files[0]) if files else "no images"
        raise UserError(f"no file of --train_dir {train_dir} is named in {index_path} (e.g. {keys[0] if keys else '-'}"
                        f" vs {example}); is it the ImageNet training set?")
    if not found.all():
        print(f"note: {int((~found).sum())} scored images are not in {train_dir} and are left out")
    return pos


def plan_forget_sets(ckpts: str, ids: np.ndarray, scores: np.ndarray, groups: dict[str, np.ndarray], n: int,
                     num_train: int, index_path: Path, train_dir: Path, *,
                     overwrite: bool) -> list[tuple[str, Path, ForgetSet | None]]:
    """One forget set per level, ``(level, file, set to write or None when the file already holds
    it)``; a file holding a different set is refused (unless ``overwrite``) before anything is
    written. The manifest names the index file and training folder, never their absolute paths."""
    train_ids = np.arange(num_train, dtype=np.int64)
    sha = sha256_file(index_path)
    extras = eval_subsets(memorization_groups(ids, scores, min(max(n, 1), EVAL_SUBSET, len(ids))), EVAL_SUBSET)
    out = []
    for level in LEVELS:
        manifest = {"dataset": "imagenet", "split_seed": None, "num_train": num_train, "kind": "mem",
                    "level": level, "n": int(n), "shuffle": False, "score_sha256": sha,
                    "score_file": index_path.name, "eval_score_file": index_path.name, "eval_score_sha256": sha,
                    "train_dir": train_dir.name, "id_space": "torchvision ImageFolder index of train_dir"}
        manifest["name"] = forget_set_name(manifest)
        fs = make_forget_set(train_ids, select_level(groups, level, n), manifest, extras)
        path = paths.forget_set_path(ckpts, manifest["name"])
        if path.is_file() and not overwrite:
            old = load_forget_set(path)
            if np.array_equal(old.forget_ids, fs.forget_ids) and np.array_equal(old.retain_ids, fs.retain_ids):
                out.append((level, path, None))
                continue
            raise UserError(f"{path} holds a different forget set; pass --overwrite to replace it")
        out.append((level, path, fs))
    return out


def write_forget_sets(planned: list[tuple[str, Path, ForgetSet | None]], ids: np.ndarray,
                      scores: np.ndarray) -> None:
    """Write the planned forget sets and say what each holds."""
    score_of = dict(zip(ids.tolist(), scores.tolist()))
    for level, path, fs in planned:
        if fs is None:
            print(f"{level}: {path} already holds this forget set")
            continue
        save_forget_set(path, fs)
        s = np.array([score_of[int(i)] for i in fs.forget_ids])
        print(f"{level}: {len(fs.forget_ids)} images, scores {s.min():.4f}..{s.max():.4f} "
              f"(mean {s.mean():.4f}) -> {path}")


def _holds(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the npz file ``path`` holds exactly ``arrays`` (False when unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return set(z.files) == set(arrays) and all(np.array_equal(z[k], v) for k, v in arrays.items())
    except Exception:
        return False


def run(args: argparse.Namespace) -> int:
    """``imagenet_mem_subset.py``: the four forget sets and the original code's index file."""
    n = args.num_indexes_to_replace
    if n is None:
        raise UserError("--num_indexes_to_replace N is required (the size of each memorization group)")
    index_path = find_index(args.mem_file, args.data)
    train_dir = Path(args.train_dir) if args.train_dir else Path(args.data) / "imagenet" / "train"
    mem, keys = read_index(index_path)
    files = list_train_images(train_dir)
    pos = match_index(index_path, keys, train_dir, files)
    found = pos >= 0
    ids, scores = pos[found], mem[found]
    groups = memorization_groups(ids, scores, n)  # ids in index-file order: ties keep that order
    check_writable(paths.forget_sets_dir(args.ckpts), "--ckpts")
    compat_dir = Path(args.save_dir) if args.save_dir else Path(".")
    check_writable(compat_dir, "--save_dir")
    compat = compat_dir / f"imagenet_filenames_indices_{n}_{args.seed}.npz"
    indices = {"high_mem_indices": np.sort(groups["high"]), "med_mem_indices": np.sort(groups["mid"]),
               "low_mem_indices": np.sort(groups["low"])}
    if compat.exists() and not args.overwrite and not _holds(compat, indices):
        raise UserError(f"--save_dir {compat_dir}: {compat.name} exists with other indices; pass --overwrite to "
                        f"replace it")
    planned = plan_forget_sets(args.ckpts, ids, scores, groups, n, len(files), index_path, train_dir,
                               overwrite=args.overwrite)
    write_forget_sets(planned, ids, scores)
    atomic_save_npz(compat, **indices)
    print(f"original-code index file -> {compat}")
    return 0
