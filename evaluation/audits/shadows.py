"""Shadow models for LiRA: trained with the target's recipe on random subsets, stored once, reused.

A shadow set is K models of one training recipe (the start model's pretraining recipe: dataset,
architecture, epochs, learning rate, batch size, momentum, weight decay, warm-up, augmentation,
optimizer incl. SAM, precision, split), each trained on the training split less a *pool* of ids
or a random half of it:

* pool ``retrain`` (default): one shadow set per forget set F; every shadow leaves out the whole
  of F and nothing else: K retrains of F with other seeds. A retrain of F is exchangeable with
  them, so its test is calibrated by construction whatever the forget examples' mutual
  similarity, and every shadow is OUT for every forget example; none is IN, so there is no
  likelihood ratio. This is U-LiRA's question (Hayes et al. 2024) asked directly: is the
  unlearned model's ``phi`` on x a draw from retrained models'?
* pool ``forget``: one set per forget set; the pool is F plus as many other training ids drawn at
  random (:func:`shadow_pool`) and every shadow leaves out a random half of it, so it trains on
  as many examples as a retrain of F and each x in F has IN and OUT shadows (about K/2 each: the
  likelihood ratio). Its OUT shadow of x left out only about half of the rest of F, so where
  forget examples help each other (the most typical ones) it is more confident on x than a
  retrain and the test is conservative (docs/stage_audit.md measures it).
* pool ``all``: a random half of the whole training split per shadow (Carlini et al. 2022's
  setup, one shadow set for every forget set). Its OUT models have seen half the data a retrain
  has, so their ``phi`` on unseen examples runs lower and the test rejects a retrain far too often
  (docs/stage_audit.md measures it): kept for comparison only.

Under ``forget`` and ``all`` shadow k leaves out the first ``floor(|pool|/2)`` ids of a
permutation of the sorted pool drawn from ``default_rng(seed_k)``, ``seed_k = SeedSequence([seed, k])`` (the estimator's
:func:`memorization.estimator.model_seeds`), which also seeds its initialization and batches;
so shadow k is the same model whichever run trains it, and a set grows by training models
K..K'-1.

The file ``<audit dir>/shadows_<dataset>_<arch>_<optimizer>_ep<E>_h<recipe hash>_<pool>.npz``:
``manifest`` (JSON: recipe key, pool kind, seed, K, N), ``pool_ids``, ``seeds`` [K], ``done``
[K], ``in_mask`` bool [K, N] (shadow k trained on global id i), ``phi`` float32 [K, N] (LiRA's
statistic on every image of the training split, validation ids included) and ``test_phi``
float32 [K, N_test], ``test_acc`` [K]. Written after every chunk of models (a killed run resumes).
"""
from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from evaluation.audits.lira import logit_confidence
from evaluation.audits.pools import DEFAULT_POOL, POOLS
from memorization.estimator import model_seeds
from models import build_for
from trainer.device import prepare_model
from trainer.ensemble import auto_chunk, predict_ensemble, train_models
from trainer.fit import Recipe
from trainer.optim import SamConfig
from utils.data import ImageData
from utils.errors import UserError
from utils.io import atomic_save_npz
from utils.paths import safe_name, short_hash

__all__ = ["POOLS", "DEFAULT_POOL", "RECIPE_FIELDS", "ShadowSet", "recipe_from_key", "shadow_file_name", "left_out",
           "new_shadow_set", "save_shadows", "load_shadows", "find_shadows", "train_shadows", "describe_recipe",
           "shadow_pool"]


# The recipe-key entries a shadow set must share with its target (start_recipe key, stages/configs.py).
RECIPE_FIELDS = ("dataset", "arch", "imagenet_arch", "epochs", "lr", "batch_size", "momentum", "weight_decay",
                 "warmup", "augment", "optimizer", "precision", "split_seed")
_SAM_TAG = re.compile(r"sam-(min|max)_rho([^_]+)_lamb([^_]+)(_adaptive)?$")


def recipe_from_key(key: Mapping[str, Any]) -> Recipe:
    """The training :class:`Recipe` of a start-recipe key (``optimizer`` ``sgd`` or a SAM tag
    ``sam-min_rho1_lamb1_adaptive``). A key without the recipe (a model this toolkit did not
    pretrain) is a ValueError."""
    missing = [k for k in RECIPE_FIELDS if k not in key]
    if missing:
        raise ValueError(f"not a pretraining recipe (lacks {', '.join(missing)})")
    opt = str(key["optimizer"])
    sam = None
    if opt != "sgd":
        m = _SAM_TAG.match(opt)
        if m is None:
            raise ValueError(f"unknown optimizer {opt!r}")
        sam = SamConfig(sign=m.group(1), rho=float(m.group(2)), lamb=float(m.group(3)), adaptive=bool(m.group(4)))
    return Recipe(epochs=int(key["epochs"]), lr=float(key["lr"]), batch_size=int(key["batch_size"]),
                  momentum=float(key["momentum"]), weight_decay=float(key["weight_decay"]), warmup=int(key["warmup"]),
                  augment=bool(key["augment"]), sam=sam, precision=str(key["precision"]))


def canonical_key(key: Mapping[str, Any]) -> dict[str, Any]:
    return {k: key[k] for k in RECIPE_FIELDS if k in key}


def describe_recipe(key: Mapping[str, Any]) -> str:
    """``mlp sgd ep10 lr0.1 bs64 aug`` (what a shadow set or a target was trained with)."""
    k = dict(key)
    return (f"{k.get('arch')} {k.get('optimizer')} ep{k.get('epochs')} lr{k.get('lr')} bs{k.get('batch_size')} "
            f"{'aug' if k.get('augment') else 'noaug'} mom{k.get('momentum')} wd{k.get('weight_decay')} "
            f"warm{k.get('warmup')} {k.get('precision')} split{k.get('split_seed')}")


def shadow_file_name(key: Mapping[str, Any], pool: str, pool_ids: np.ndarray) -> str:
    k = canonical_key(key)
    ids = f"{len(pool_ids)}-{short_hash({'ids': np.asarray(pool_ids).tolist()})}"
    tag = "all" if pool == "all" else f"retrain{ids}" if pool == "retrain" else f"pool{ids}"
    return safe_name(f"shadows_{k['dataset']}_{k['arch']}_{k['optimizer']}_ep{k['epochs']}_h{short_hash(k)}_{tag}") \
        + ".npz"


def left_out(pool_ids: np.ndarray, model_seed: int, pool: str = "forget") -> np.ndarray:
    """The sorted ids the shadow of seed ``model_seed`` leaves out: a random half (``floor(n/2)``)
    of the sorted pool, drawn with ``default_rng(model_seed)``; the whole pool for pool
    ``retrain``."""
    pool_ids = np.sort(np.asarray(pool_ids, np.int64))
    if pool == "retrain":
        return pool_ids
    pool = pool_ids
    perm = np.random.default_rng(int(model_seed)).permutation(len(pool))
    return np.sort(pool[perm[: len(pool) // 2]])


@dataclass
class ShadowSet:
    manifest: dict[str, Any]
    pool_ids: np.ndarray
    seeds: np.ndarray  # int64 [K]
    done: np.ndarray  # bool [K]
    in_mask: np.ndarray  # bool [K, N]
    phi: np.ndarray  # float32 [K, N]
    test_phi: np.ndarray  # float32 [K, N_test]
    test_acc: np.ndarray  # float64 [K]

    @property
    def key(self) -> dict[str, Any]:
        return self.manifest["recipe"]

    def finished(self) -> "ShadowSet":
        """The finished models only."""
        d = self.done
        return ShadowSet(self.manifest, self.pool_ids, self.seeds[d], d[d], self.in_mask[d], self.phi[d],
                         self.test_phi[d], self.test_acc[d])


def new_shadow_set(key: Mapping[str, Any], pool: str, pool_ids: np.ndarray, train_ids: np.ndarray,
                   num_examples: int, num_test: int, num_models: int, seed: int = 0,
                   old: ShadowSet | None = None) -> ShadowSet:
    """An empty set of ``num_models`` shadows (subsets and seeds drawn), keeping the finished
    models of ``old`` (the same set, fewer models)."""
    seeds = model_seeds(seed, num_models)
    train = np.asarray(train_ids, np.int64)
    mask = np.zeros((num_models, num_examples), bool)
    for k, s in enumerate(seeds):
        mask[k, train] = True
        mask[k, left_out(pool_ids, s, pool)] = False
    manifest = {"recipe": canonical_key(key), "pool": pool, "seed": int(seed), "num_models": int(num_models),
                "num_examples": int(num_examples), "num_train": int(len(train)), "pool_size": int(len(pool_ids)),
                "statistic": "phi = z_y - logsumexp_{j != y} z_j (float32 eval-mode logits)"}
    s = ShadowSet(manifest, np.sort(np.asarray(pool_ids, np.int64)), seeds, np.zeros(num_models, bool), mask,
                  np.zeros((num_models, num_examples), np.float32), np.zeros((num_models, num_test), np.float32),
                  np.full(num_models, np.nan))
    if old is not None:
        k0 = min(len(old.seeds), num_models)
        if not np.array_equal(old.in_mask[:k0], mask[:k0]):
            raise ValueError("the stored shadow set was drawn differently; it cannot be extended")
        for name in ("done", "phi", "test_phi", "test_acc"):
            getattr(s, name)[:k0] = getattr(old, name)[:k0]
    return s


def save_shadows(path: Path, s: ShadowSet) -> None:
    atomic_save_npz(path, manifest=np.array(json.dumps(s.manifest, sort_keys=True)), pool_ids=s.pool_ids,
                    seeds=s.seeds.astype(np.int64), done=s.done, in_mask=s.in_mask, phi=s.phi, test_phi=s.test_phi,
                    test_acc=s.test_acc)


def load_shadows(path: Path) -> ShadowSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: np.asarray(z[k]) for k in z.files}
        return ShadowSet(json.loads(str(a["manifest"][()])), a["pool_ids"].astype(np.int64),
                         a["seeds"].astype(np.int64), a["done"].astype(bool), a["in_mask"].astype(bool),
                         a["phi"].astype(np.float32), a["test_phi"].astype(np.float32),
                         a["test_acc"].astype(np.float64))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise UserError(f"shadow file {path} is not readable ({type(e).__name__}); delete it and train the "
                        f"shadows again") from None


def find_shadows(audit_dir: Path, key: Mapping[str, Any], pool: str, pool_ids: np.ndarray,
                 min_models: int = 2) -> tuple[Path, ShadowSet | None, list[str]]:
    """The stored shadow set of the recipe ``key`` and pool ``pool_ids`` (its file,
    :func:`shadow_file_name`) when it has at least ``min_models`` finished models; else
    ``(path, None, reasons)``, the reasons naming the stored sets of the same dataset and
    architecture that do not fit (for the error message)."""
    want = canonical_key(key)
    path = Path(audit_dir) / shadow_file_name(key, pool, pool_ids)
    reasons = []
    if path.is_file():
        f = load_shadows(path).finished()
        if len(f.seeds) >= min_models:
            return path, f, reasons
        reasons.append(f"{path.name} has {len(f.seeds)} finished shadow models (need {min_models})")
    for other in sorted(Path(audit_dir).glob("shadows_*.npz")):
        if other == path:
            continue
        s = load_shadows(other)
        if s.key.get("dataset") != want.get("dataset") or s.key.get("arch") != want.get("arch"):
            continue
        diff = [f"{k} {s.key.get(k)!r} vs {want.get(k)!r}" for k in RECIPE_FIELDS if s.key.get(k) != want.get(k)]
        reasons.append(f"{other.name}: " + (f"recipe differs ({'; '.join(diff[:3])})" if diff else
                                            f"another pool ({s.manifest.get('pool')}, {len(s.pool_ids)} ids)"))
    return path, None, reasons


def train_shadows(s: ShadowSet, path: Path, data: ImageData, dev_data: ImageData, device: torch.device, *,
                  imagenet_arch: bool = False, log: Callable[[str], None] = print) -> ShadowSet:
    """Train every unfinished shadow of ``s`` (batched ensembles where faster), record its
    ``phi`` on the whole training split and the test split, save after every chunk; returns ``s``."""
    key = s.key
    recipe = recipe_from_key(key)
    todo = [int(k) for k in np.flatnonzero(~s.done)]
    if not todo:
        return s

    def build(k: int) -> torch.nn.Module:
        torch.manual_seed(int(s.seeds[k]))
        return prepare_model(build_for(key["arch"], data, imagenet_arch=imagenet_arch), device)

    chunk = auto_chunk(build(todo[0]), dev_data.x[:1].to(device).float().div_(255), recipe.batch_size)
    all_ids = np.arange(len(data.x), dtype=np.int64)
    test_ids = np.arange(len(data.test_y), dtype=np.int64)
    y, ty = data.y.numpy(), data.test_y.numpy()
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk):
        ks = todo[start:start + chunk]
        models = [build(k) for k in ks]
        mode = train_models(models, dev_data, [np.flatnonzero(s.in_mask[k]) for k in ks], s.seeds[ks], recipe,
                            device=device, desc=f"shadows {ks[0]}..{ks[-1]}", log=log)
        batched = mode == "batched"
        logits = predict_ensemble(models, dev_data.x, all_ids, device=device, batched=batched).numpy()
        t_logits = predict_ensemble(models, dev_data.test_x, test_ids, device=device, batched=batched).numpy()
        s.phi[ks] = logit_confidence(logits, y).astype(np.float32)
        s.test_phi[ks] = logit_confidence(t_logits, ty).astype(np.float32)
        s.test_acc[ks] = (t_logits.argmax(2) == ty[None]).mean(1)
        s.done[ks] = True
        save_shadows(path, s)
        log(f"shadows {int(s.done.sum())}/{len(s.done)} done ({time.perf_counter() - t0:.1f}s, chunk of {len(ks)} "
            f"{mode}, mean test acc {100 * float(s.test_acc[ks].mean()):.2f}%) -> {path}")
    return s


def shadow_pool(pool: str, forget_ids: np.ndarray, train_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """The sorted pool of ids the shadows leave random halves of: ``all`` = the training split;
    ``retrain`` = the forget ids (each shadow leaves all of them out); ``forget`` = the forget ids plus ``min(|F|, |rest|)`` other training ids, the first of a
    ``default_rng(seed)`` permutation of the sorted rest (so a shadow leaves out ``|F|`` ids)."""
    train = np.sort(np.asarray(train_ids, np.int64))
    if pool == "all":
        return train
    if pool == "retrain":
        return np.unique(np.asarray(forget_ids, np.int64))
    if pool != "forget":
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    f = np.unique(np.asarray(forget_ids, np.int64))
    rest = np.setdiff1d(train, f)
    pick = np.random.default_rng(int(seed)).permutation(len(rest))[:min(len(f), len(rest))]
    return np.union1d(f, rest[pick])
