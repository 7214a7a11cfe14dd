"""The subsampled memorization estimator (Feldman & Zhang 2020), as pure functions.

K models are trained, model k on a random subset of ``int(ratio * len(train_ids))`` examples of
the training split. For a training example i,

    mem_i = mean_{k: i in S_k} correct[k, i]  -  mean_{k: i not in S_k} correct[k, i],

the accuracy on i of the models that trained on it minus that of the models that did not.

Ids and arrays. Every [K, N] array is indexed by *global id*, an example's index in the whole
original training split (N = ``len(data.x)``): ``subset_masks[k, i]`` says whether model k trained
on i, ``correct[k, i]`` whether it classifies i correctly (evaluated on every id, validation ids
included). Validation ids are never in a subset.

The score file, ``<ckpts>/memorization/<dataset>_memorization.npz``:

* ``memorization`` float64 [N]: the estimate where ``valid``, else 0.0, so the file reads with
  :func:`memorization.scores.load_scores` (finite everywhere) and is indexed like the published files;
* ``valid`` bool [N]: the ids that carry an estimate: training ids that were in at least one
  subset and out of at least one. Validation ids are never valid (every model excluded them, so
  the "in" mean is undefined); a training id without an estimate is reported when it happens
  (it needs K small: with K = 128 and ratio 0.7 the chance is about 1e-20 per id);
* ``subset_masks`` bool [K, N], ``correct`` bool [K, N], ``seeds`` int64 [K] (model k's seed:
  its initialization, its subset, its batch order), ``test_acc`` float64 [K], ``train_ids``,
  ``manifest`` (JSON: dataset, arch, recipe, ratio, K, seed, split seed, ...).

Determinism. Model k's seed is ``SeedSequence([seed, k])`` and its subset is drawn from that seed
alone, so a model's subset and initialization do not depend on which shard or chunk trains it.

Shards. ``--shard i --num_shards n`` trains the models with ``k % n == i``; its progress file
``<dataset>_memorization_shard{i}of{n}.npz`` holds the same [K, N] arrays plus ``done`` [K] and is
rewritten (atomically) after every chunk of models, so a killed run resumes without training a
finished model again. ``--merge`` combines the progress files into the score file.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from memorization.scores import computed_score_name
from utils.errors import UserError
from utils.io import atomic_save_npz

# Manifest entries that must agree between progress files (and with the arguments on resume).
RECIPE_KEYS = ("dataset", "arch", "imagenet_arch", "epochs", "lr", "batch_size", "momentum", "weight_decay",
               "warmup", "augment", "subset_ratio", "num_models", "seed", "split_seed", "num_examples",
               "num_train")


# --------------------------------------------------------------------------------------------
# Subsets, seeds, shards
# --------------------------------------------------------------------------------------------

def model_seeds(seed: int, num_models: int) -> np.ndarray:
    """int64 [K]: model k's seed, ``SeedSequence([seed, k])`` (independent of sharding)."""
    return np.array([int(np.random.SeedSequence([int(seed), k]).generate_state(1, dtype=np.uint32)[0])
                     for k in range(int(num_models))], dtype=np.int64)


def subset_size(num_train: int, ratio: float) -> int:
    """Examples per subset: ``int(ratio * num_train)``, kept within [1, num_train - 1] so that every
    model leaves something out."""
    if num_train < 2:
        raise ValueError(f"need at least 2 training examples, got {num_train}")
    return min(max(int(ratio * num_train), 1), num_train - 1)


def subset_ids(train_ids: np.ndarray, ratio: float, model_seed: int) -> np.ndarray:
    """Sorted global ids of the subset of the model with seed ``model_seed``."""
    ids = np.asarray(train_ids, dtype=np.int64)
    m = subset_size(len(ids), ratio)
    pos = np.random.default_rng(int(model_seed)).permutation(len(ids))[:m]
    return np.sort(ids[pos])


def subset_masks(train_ids: np.ndarray, num_examples: int, ratio: float, seeds: Sequence[int]) -> np.ndarray:
    """bool [K, N]: ``masks[k, i]`` = model k trains on global id i."""
    masks = np.zeros((len(seeds), int(num_examples)), dtype=bool)
    for k, s in enumerate(seeds):
        masks[k, subset_ids(train_ids, ratio, s)] = True
    return masks


def shard_models(num_models: int, shard: int, num_shards: int) -> np.ndarray:
    """The model indices shard ``shard`` of ``num_shards`` trains: ``k % num_shards == shard``."""
    if not 0 <= shard < num_shards:
        raise UserError(f"--shard {shard}: must be in [0, --num_shards {num_shards})")
    return np.arange(shard, int(num_models), int(num_shards), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------

def estimate(masks: np.ndarray, correct: np.ndarray, train_ids: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(memorization float64 [N], valid bool [N])`` from ``masks``/``correct`` (bool [K, N]).

    ``valid`` = in at least one subset and out of at least one (and, when ``train_ids`` is given,
    a training id); the score is 0.0 where not valid.
    """
    masks = np.asarray(masks, dtype=bool)
    c = np.asarray(correct, dtype=np.float64)
    if masks.shape != c.shape or masks.ndim != 2:
        raise ValueError(f"masks and correct must both be [K, N], got {masks.shape} and {c.shape}")
    n_in = masks.sum(0)
    n_out = (~masks).sum(0)
    valid = (n_in > 0) & (n_out > 0)
    if train_ids is not None:
        is_train = np.zeros(masks.shape[1], dtype=bool)
        is_train[np.asarray(train_ids, dtype=np.int64)] = True
        valid &= is_train
    acc_in = (c * masks).sum(0) / np.maximum(n_in, 1)
    acc_out = (c * ~masks).sum(0) / np.maximum(n_out, 1)
    mem = np.where(valid, acc_in - acc_out, 0.0)
    return mem.astype(np.float64), valid


# --------------------------------------------------------------------------------------------
# Progress (shard) files and the score file
# --------------------------------------------------------------------------------------------

def score_path(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / computed_score_name(dataset)


def shard_path(out_dir: str | os.PathLike, dataset: str, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / f"{dataset.lower()}_memorization_shard{shard}of{num_shards}.npz"


def summary_path(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset.lower()}_memorization_summary.json"


@dataclass
class Progress:
    """What a shard has trained so far (or, all ``done``, the whole estimator)."""

    manifest: dict[str, Any]
    train_ids: np.ndarray
    seeds: np.ndarray  # int64 [K]
    masks: np.ndarray  # bool [K, N]
    correct: np.ndarray = field(default=None)  # bool [K, N]
    done: np.ndarray = field(default=None)  # bool [K]
    test_acc: np.ndarray = field(default=None)  # float64 [K], NaN where not done

    def __post_init__(self) -> None:
        K, N = self.masks.shape
        if self.correct is None:
            self.correct = np.zeros((K, N), dtype=bool)
        if self.done is None:
            self.done = np.zeros(K, dtype=bool)
        if self.test_acc is None:
            self.test_acc = np.full(K, np.nan)

    @property
    def num_models(self) -> int:
        return int(self.masks.shape[0])

    def record(self, k: int, correct: np.ndarray, test_acc: float) -> None:
        self.correct[k] = np.asarray(correct, dtype=bool)
        self.test_acc[k] = float(test_acc)
        self.done[k] = True


def new_progress(manifest: Mapping[str, Any], train_ids: np.ndarray) -> Progress:
    """An empty progress for the estimator described by ``manifest`` (its seeds and subsets)."""
    K = int(manifest["num_models"])
    seeds = model_seeds(int(manifest["seed"]), K)
    masks = subset_masks(train_ids, int(manifest["num_examples"]), float(manifest["subset_ratio"]), seeds)
    return Progress(dict(manifest), np.asarray(train_ids, dtype=np.int64), seeds, masks)


def save_progress(path: str | os.PathLike, p: Progress) -> None:
    atomic_save_npz(path, manifest=np.array(json.dumps(p.manifest, sort_keys=True)),
                    train_ids=p.train_ids.astype(np.int64), seeds=p.seeds.astype(np.int64),
                    subset_masks=p.masks, correct=p.correct, done=p.done, test_acc=p.test_acc)


def load_progress(path: str | os.PathLike) -> Progress:
    """Read a progress (shard) file or a score file; an unreadable one is a :class:`UserError`."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            a = {k: np.asarray(z[k]) for k in z.files}
        manifest = json.loads(str(a["manifest"][()]))
        masks = a["subset_masks"].astype(bool)
        K = masks.shape[0]
        prog = Progress(manifest, a["train_ids"].astype(np.int64), a["seeds"].astype(np.int64), masks,
                        a["correct"].astype(bool), a["done"].astype(bool) if "done" in a else np.ones(K, bool),
                        a["test_acc"].astype(np.float64) if "test_acc" in a else np.full(K, np.nan))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"memorization progress file {str(p)!r} is not readable "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:160]}); delete it or pass --overwrite") from None
    if prog.correct.shape != masks.shape or prog.done.shape != (K,) or prog.seeds.shape != (K,):
        raise UserError(f"memorization progress file {str(p)!r} has inconsistent array shapes; "
                        f"delete it or pass --overwrite")
    return prog


def recipe_mismatch(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """``key found-vs-expected`` for every recipe entry on which two manifests differ."""
    out = []
    for k in RECIPE_KEYS:
        a, b = found.get(k), expected.get(k)
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and float(a) == float(b)
        else:
            same = a == b
        if not same:
            out.append(f"{k} {a!r} vs {b!r}")
    return out


def describe_ids(ids: Sequence[int], limit: int = 12) -> str:
    ids = [int(i) for i in ids]
    head = ", ".join(map(str, ids[:limit]))
    return head + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def merge_progress(parts: Sequence[tuple[Path, Progress]]) -> Progress:
    """Combine progress files into one with every model done.

    The files must describe the same estimator (recipe, K, seeds, subsets). A model that no file
    has finished is an error naming the models and the shard that should have trained them."""
    if not parts:
        raise UserError("--merge: no shard files to merge")
    path0, first = parts[0]
    out = Progress(dict(first.manifest), first.train_ids, first.seeds, first.masks.copy())
    for path, p in parts:
        diff = recipe_mismatch(p.manifest, first.manifest)
        if diff or not np.array_equal(p.seeds, first.seeds) or not np.array_equal(p.masks, first.masks):
            raise UserError(f"--merge: {path} and {path0} were computed with different settings "
                            f"({'; '.join(diff) or 'seeds or subsets differ'})")
        take = p.done & ~out.done
        out.correct[take] = p.correct[take]
        out.test_acc[take] = p.test_acc[take]
        out.done |= p.done
    missing = np.flatnonzero(~out.done)
    if missing.size:
        n = int(first.manifest.get("num_shards", 1))
        shards = sorted({int(k) % n for k in missing})
        raise UserError(f"--merge: {missing.size} of {out.num_models} models are not finished: models "
                        f"{describe_ids(missing)} (shard{'s' if len(shards) > 1 else ''} "
                        f"{describe_ids(shards)} of {n}); run those shards again, then --merge")
    return out


def score_arrays(p: Progress) -> dict[str, np.ndarray]:
    """The arrays of the score file of a finished estimator."""
    if not p.done.all():
        raise ValueError(f"{int((~p.done).sum())} models are not finished")
    mem, valid = estimate(p.masks, p.correct, p.train_ids)
    manifest = {k: v for k, v in p.manifest.items() if k not in ("shard", "num_shards")}
    return {"memorization": mem, "valid": valid, "subset_masks": p.masks, "correct": p.correct,
            "seeds": p.seeds.astype(np.int64), "test_acc": p.test_acc, "train_ids": p.train_ids,
            "manifest": np.array(json.dumps(manifest, sort_keys=True))}


def write_scores(path: str | os.PathLike, p: Progress) -> dict[str, np.ndarray]:
    arrays = score_arrays(p)
    atomic_save_npz(path, **arrays)
    return arrays
