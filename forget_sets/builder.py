"""From the command line to a forget-set file: which kind, built once, reused afterwards.

``ckpts/forget_sets/<name>.npz`` (DESIGN.md §6; format in :mod:`forget_sets.select`). The kind is
chosen from the flags, first match wins:

1. ``--forget_set FILE``: the file, used as is (name = its stem).
2. ``--mem_proxy NAME --mem LEVEL``: proxy groups (:func:`forget_sets.select.proxy_groups`). The
   proxy file is ``--proxy_file``, else: for the learning-event proxies (confidence, max_conf,
   entropy, bi_acc) the ``proxies.npz`` that ``main_train.py`` wrote next to the pretrained model;
   for ``ho_ret`` / ``curvature`` ``<ckpts>/memorization/<dataset>_<arch>_proxies.npz``.
3. ``--mem LEVEL``: memorization groups from the score file (:func:`memorization.scores.find_score_file`,
   searched in the working directory, the repository root and ``<ckpts>/memorization``).
   ``--mem`` wins over ``--group_index`` when both are given (the original README passes both as
   placeholders; the original code also took the memorization branch then); a note says so.
4. ``--group_index G``: entanglement (ES) groups: the original model's embeddings of the training
   split, 15 groups by distance to the centroid (:func:`evaluation.entanglement.centroid_distance_groups`),
   ``G`` in 0..14 or -1 (mix). Without ``--num_indexes_to_replace`` the whole group.
5. ``--class_to_replace C[,C...]`` (not -1): class-wise; with ``--num_indexes_to_replace N`` a
   random N of those classes, else all of them.
6. ``--num_indexes_to_replace N``: N random training examples (``RandomState(seed - 1)``).

``--shuffle`` (mem and proxy kinds only) pools the three groups and redraws them with
``RandomState(--seed)`` (:func:`forget_sets.select.shuffle_groups`).

Evaluation subsets. Whenever memorization scores are found (any kind), the file also holds
``extra_high_mem`` / ``extra_mid_mem`` / ``extra_low_mem``: the original's evaluation sets
high[:1000], mid[:1000], low[-1000:] of the groups built with the forget-set size (capped at 1000),
always from the *true*, unshuffled scores (the original took them from the shuffled groups under
``--shuffle``, which makes "high_mem accuracy" meaningless there).

Reuse. A file that already exists is reused when its manifest selects the same examples (the keys
in :data:`IDENTITY_KEYS`, among them the sha256 of the score file or model file the selection came
from; for proxies the sha256 of the proxy's values on the training ids, float64 little endian, so
that a proxy file rewritten with other proxies added does not count as a change). A file whose manifest differs is refused (runs that used it reference its sha256);
``--overwrite`` rebuilds it. Where the file lives never matters, only what is in it.

Names follow :func:`forget_sets.select.forget_set_name`; ES forget sets depend on the model, so
their name carries ``_<arch>-<first 8 hex of the model file's sha256>``. The name is also stored in
the manifest (``name``).
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from utils.data import ImageData
from utils.errors import UserError
from memorization.proxies import LEARNING_EVENT_PROXIES, PROXY_SIGN
from forget_sets.file import (ForgetSet, forget_set_name, load_forget_set, make_forget_set, save_forget_set, sha256_file)
from forget_sets.select import (eval_subsets, memorization_groups, proxy_groups, random_forget, select_level, shuffle_groups)

REPO = Path(__file__).resolve().parent.parent
ES_GROUPS = 15
EVAL_SUBSET = 1000
# The manifest keys that decide which examples are selected (compared on reuse).
IDENTITY_KEYS = ("dataset", "split_seed", "num_train", "kind", "n", "level", "proxy", "group", "classes",
                 "seed", "shuffle", "score_sha256", "proxy_sha256", "model_sha256", "n_groups")


@dataclass
class ForgetPlan:
    """What will be built, known before any work: kind, name, path, selection manifest."""

    kind: str
    name: str
    path: Path
    manifest: dict[str, Any]
    note: str
    given_file: bool = False  # --forget_set FILE
    source: dict[str, Any] = field(default_factory=dict)  # score / proxy / model file paths


def score_search_dirs(args: argparse.Namespace) -> list[Path]:
    return [Path.cwd(), REPO, Path(args.ckpts) / "memorization"]


def _find_scores(args: argparse.Namespace, *, required: bool) -> Path | None:
    from memorization.scores import find_score_file

    try:
        return find_score_file(args.dataset, mem_file=args.mem_file, search_dirs=score_search_dirs(args))
    except UserError:
        if required or args.mem_file is not None:
            raise
        return None


def _load_scores(path: Path, data: ImageData) -> np.ndarray:
    from memorization.scores import load_scores, score_key

    return load_scores(path, score_key(data.name, path), expected_len=len(data.x))


def memorization_scores(args: argparse.Namespace, data: ImageData) -> tuple[Path, np.ndarray]:
    """``(score file, scores indexed by global id)``: the file ``--mem`` forget sets are built from
    (``--mem_file``, else :func:`memorization.scores.find_score_file` over :func:`score_search_dirs`),
    loaded and validated. A missing or unusable file is a :class:`UserError`."""
    sf = _find_scores(args, required=True)
    return sf, _load_scores(sf, data)


def proxy_file_for(args: argparse.Namespace, proxy: str, model_file: Path | None) -> Path:
    """``--proxy_file``, else where the proxy's producer writes it (see the module docstring)."""
    if args.proxy_file:
        p = Path(args.proxy_file)
        if not p.is_file():
            raise UserError(f"--proxy_file {args.proxy_file}: no such file")
        return p
    if proxy in LEARNING_EVENT_PROXIES:
        if model_file is None:
            from utils.pretrained import resolve_model_file

            model_file = resolve_model_file(args.mask, args)
        p = Path(model_file).parent / "proxies.npz"
        if not p.is_file():
            raise UserError(f"--mem_proxy {proxy}: no proxy file at {p} (main_train.py writes proxies.npz next to "
                            f"the model it trains); pass --proxy_file PATH")
        return p
    p = Path(args.ckpts) / "memorization" / f"{args.dataset}_{args.arch}_proxies.npz"
    if not p.is_file():
        raise UserError(f"--mem_proxy {proxy}: no proxy file at {p}; create it with: python main_memorization.py "
                        f"--dataset {args.dataset} --arch {args.arch} --proxies {proxy}, or pass --proxy_file PATH")
    return p


def _n(args: argparse.Namespace, what: str) -> int:
    if args.num_indexes_to_replace is None:
        raise UserError(f"{what} needs --num_indexes_to_replace N (the forget-set size)")
    return int(args.num_indexes_to_replace)


def plan_forget_set(args: argparse.Namespace, data: ImageData, *, model_file: Path | None = None,
                    log: Callable[[str], None] = print) -> ForgetPlan:
    """Decide the kind and compute the selection manifest and name; reads flags and (hashes of)
    input files only, writes nothing. Every unusable input is a :class:`UserError`."""
    base: dict[str, Any] = {"dataset": data.name, "split_seed": int(data.split_seed),
                            "num_train": int(len(data.train_ids))}
    root = Path(args.ckpts) / "forget_sets"
    mem = getattr(args, "mem", None)
    shuffle = bool(getattr(args, "shuffle", False))
    classes = [int(c) for c in (args.class_to_replace or [-1])]
    class_wise = -1 not in classes

    if args.forget_set:
        p = Path(args.forget_set)
        return ForgetPlan("file", p.stem, p, {}, f"forget set: {p} (--forget_set)", given_file=True)

    if args.mem_proxy is not None:
        proxy = str(args.mem_proxy)
        if proxy not in PROXY_SIGN:
            raise UserError(f"--mem_proxy {proxy!r}: unknown proxy; accepted: {', '.join(PROXY_SIGN)}")
        if mem is None:
            raise UserError(f"--mem_proxy {proxy} needs --mem LEVEL (low, mid, high or mix)")
        n = _n(args, "--mem_proxy")
        pf = proxy_file_for(args, proxy, model_file)
        from memorization.scores import load_proxy

        values = load_proxy(pf, proxy, data.train_ids)
        m = {**base, "kind": "proxy", "proxy": proxy, "level": mem, "n": n, "shuffle": shuffle,
             "proxy_sha256": hashlib.sha256(np.ascontiguousarray(values, "<f8").tobytes()).hexdigest()}
        if shuffle:
            m["seed"] = int(args.seed)
        note = f"forget set: proxy {proxy}, level {mem}, n {n} from {pf}"
        source = {"proxy_file": str(pf)}
        kind = "proxy"
    elif mem is not None:
        n = _n(args, "--mem")
        sf = _find_scores(args, required=True)
        m = {**base, "kind": "mem", "level": mem, "n": n, "shuffle": shuffle, "score_sha256": sha256_file(sf)}
        if shuffle:
            m["seed"] = int(args.seed)
        note = f"forget set: memorization level {mem}, n {n} from {sf}"
        if args.group_index is not None:
            note += f" (--mem takes precedence over --group_index {args.group_index}, which is ignored)"
        source = {"score_file": str(sf)}
        kind = "mem"
    elif args.group_index is not None:
        if shuffle:
            raise UserError("--shuffle applies to --mem / --mem_proxy forget sets only")
        from utils.pretrained import resolve_model_file

        mf = Path(model_file) if model_file is not None else resolve_model_file(args.mask, args)
        g = int(args.group_index)
        if not (g == -1 or 0 <= g < ES_GROUPS):
            raise UserError(f"--group_index {g}: out of range; accepted: 0..{ES_GROUPS - 1} or -1 (mix)")
        msha = sha256_file(mf)
        m = {**base, "kind": "es", "group": g, "n": args.num_indexes_to_replace, "n_groups": ES_GROUPS,
             "model_sha256": msha, "arch": args.arch}
        note = f"forget set: entanglement group {g} of {ES_GROUPS} under {mf}"
        source = {"model_file": str(mf)}
        kind = "es"
    elif class_wise or args.num_indexes_to_replace is not None:
        if shuffle:
            raise UserError("--shuffle applies to --mem / --mem_proxy forget sets only")
        n = args.num_indexes_to_replace
        if class_wise:
            m = {**base, "kind": "class", "classes": classes, "n": n, "seed": int(args.seed)}
            note = f"forget set: class {','.join(map(str, classes))}" + (f", {n} random" if n else ", all examples")
            kind = "class"
        else:
            m = {**base, "kind": "random", "n": int(n), "seed": int(args.seed)}
            note = f"forget set: {n} random examples (seed {args.seed})"
            kind = "random"
        source = {}
    else:
        raise UserError("no forget set given: pass --mem LEVEL, --mem_proxy NAME --mem LEVEL, --group_index G, "
                        "--class_to_replace C or --num_indexes_to_replace N (with --num_indexes_to_replace for the "
                        "size), or --forget_set FILE")
    name = forget_set_name(m)
    if kind == "es":
        name += f"_{args.arch}-{m['model_sha256'][:8]}"
    m["name"] = name
    return ForgetPlan(kind, name, root / f"{name}.npz", m, note, source=source)


def embed_ids(model: torch.nn.Module, data: ImageData, ids: np.ndarray, *, device: torch.device | str,
              batch_size: int = 512) -> np.ndarray:
    """``model.embed`` features (eval mode, no augmentation) of the training examples ``ids``;
    float64 ``[N, D]``."""
    from trainer.device import autocast
    from utils.batches import iterate

    device = torch.device(device)
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for b in iterate(data.x, data.y, np.asarray(ids, np.int64), batch_size, device=device):
            with autocast(device):
                out.append(model.embed(b.x).float().cpu())
    model.train(was)
    if not out:
        return np.zeros((0, int(getattr(model, "embed_dim", 0))), np.float64)
    return torch.cat(out).double().numpy()


def load_model_file(model_file: Path, args: argparse.Namespace, data: ImageData, device: torch.device) -> torch.nn.Module:
    from models import build_model
    from trainer.device import prepare_model
    from utils.pretrained import load_into

    model = build_model(args.arch, data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std, imagenet_arch=getattr(args, "imagenet_arch", False))
    load_into(model, Path(model_file), arch=args.arch, num_classes=data.num_classes)
    return prepare_model(model, device)


def _eval_extras(args: argparse.Namespace, data: ImageData, size: int,
                 scores: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """high_mem/mid_mem/low_mem subsets from the true scores when a score file is found."""
    info: dict[str, Any] = {}
    if scores is None:
        sf = _find_scores(args, required=False)
        if sf is None:
            return {}, info
        scores = _load_scores(sf, data)
        info = {"eval_score_file": str(sf), "eval_score_sha256": sha256_file(sf)}
    k = max(1, min(int(size), EVAL_SUBSET, len(data.train_ids)))
    groups = memorization_groups(data.train_ids, scores[data.train_ids], k)
    return eval_subsets(groups, EVAL_SUBSET), info


def build(plan: ForgetPlan, args: argparse.Namespace, data: ImageData, *,
          device: torch.device | str = "cpu") -> ForgetSet:
    """Compute the forget set of ``plan`` (no file is written)."""
    m = dict(plan.manifest)
    train_ids = data.train_ids
    extras: dict[str, np.ndarray] = {}
    if plan.kind == "mem":
        sf = Path(plan.source["score_file"])
        scores = _load_scores(sf, data)
        n = m["n"]
        groups = memorization_groups(train_ids, scores[train_ids], n)
        chosen = shuffle_groups(groups, n, int(args.seed)) if m.get("shuffle") else groups
        forget = select_level(chosen, m["level"], n)
        extras, _ = _eval_extras(args, data, n, scores)
        m.update(score_file=str(sf), eval_score_file=str(sf), eval_score_sha256=m["score_sha256"])
    elif plan.kind == "proxy":
        from memorization.scores import load_proxy

        pf = Path(plan.source["proxy_file"])
        values = load_proxy(pf, m["proxy"], train_ids)
        n = m["n"]
        groups = proxy_groups(train_ids, values, n, negative=PROXY_SIGN[m["proxy"]])
        chosen = shuffle_groups(groups, n, int(args.seed)) if m.get("shuffle") else groups
        forget = select_level(chosen, m["level"], n)
        extras, info = _eval_extras(args, data, n)
        m.update(proxy_file=str(pf), **info)
    elif plan.kind == "es":
        from forget_sets.select import centroid_distance_groups, es_forget_ids

        mf = Path(plan.source["model_file"])
        model = load_model_file(mf, args, data, torch.device(device))
        emb = embed_ids(model, data, train_ids, device=device)
        groups = centroid_distance_groups(emb, train_ids, ES_GROUPS)
        n = m["n"] if m["n"] is not None else len(groups[0])
        forget = es_forget_ids(groups, int(m["group"]), int(n))
        extras, info = _eval_extras(args, data, len(forget))
        m.update(model_file=str(mf), **info)
    elif plan.kind in ("random", "class"):
        classes = m.get("classes") if plan.kind == "class" else None
        forget = random_forget(train_ids, data.labels(train_ids), m["n"], classes, int(m["seed"]))
        extras, info = _eval_extras(args, data, len(forget))
        m.update(info)
    else:  # pragma: no cover - plan_forget_set never yields another kind
        raise ValueError(plan.kind)
    return make_forget_set(train_ids, forget, m, extras)


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest.get(k) for k in IDENTITY_KEYS}


def check_fits(fs: ForgetSet, data: ImageData, label: str) -> None:
    """The forget set must belong to this dataset and split."""
    ds = fs.manifest.get("dataset")
    if ds is not None and str(ds).lower() != data.name:
        raise UserError(f"{label}: a forget set of {ds}, but --dataset is {data.name}")
    split = fs.manifest.get("split_seed")
    if split is not None and int(split) != int(data.split_seed):
        raise UserError(f"{label}: built with --split_seed {split}, but --split_seed is {data.split_seed}")
    if len(fs.forget_ids) == 0:
        raise UserError(f"{label}: the forget set is empty")
    ids = np.concatenate([fs.forget_ids, fs.retain_ids])
    bad = np.setdiff1d(ids, data.train_ids)
    if bad.size:
        raise UserError(f"{label}: {bad.size} ids are not training ids of {data.name} (split seed "
                        f"{data.split_seed}), e.g. {bad[:5].tolist()}")
    if np.intersect1d(fs.forget_ids, fs.retain_ids).size:
        raise UserError(f"{label}: forget and retain ids overlap")


def obtain(plan: ForgetPlan, args: argparse.Namespace, data: ImageData, *, device: torch.device | str = "cpu",
           log: Callable[[str], None] = print) -> ForgetSet:
    """Load ``plan.path`` if it holds the same selection, else build and save it."""
    if plan.given_file:
        fs = load_forget_set(plan.path)
        check_fits(fs, data, f"--forget_set {plan.path}")
        if not any(k in fs.extras for k in ("high_mem", "mid_mem", "low_mem")):
            extras, _ = _eval_extras(args, data, len(fs.forget_ids))
            fs.extras.update(extras)  # in memory only: the given file is not ours to rewrite
        log(plan.note + f": {len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain")
        return fs
    if plan.path.is_file():
        fs = load_forget_set(plan.path)
        old, new = _identity(fs.manifest), _identity(plan.manifest)
        if old == new:
            check_fits(fs, data, f"forget set file {plan.path}")
            log(plan.note + f": reusing {plan.path} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain)")
            return fs
        diff = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
        if not getattr(args, "overwrite", False):
            raise UserError(f"forget set file {plan.path} exists but selects differently ({', '.join(diff)} differ: "
                            f"{', '.join(f'{k} {old.get(k)!r} vs {new.get(k)!r}' for k in diff[:2])}); runs that used it "
                            f"reference its sha256. Pass --overwrite to rebuild it, or move it away")
        log(f"forget set file {plan.path}: manifest differs ({', '.join(diff)}); rebuilding (--overwrite)")
    fs = build(plan, args, data, device=device)
    check_fits(fs, data, f"forget set {plan.name}")
    save_forget_set(plan.path, fs)
    log(plan.note + f": built {plan.path} ({len(fs.forget_ids)} forget, {len(fs.retain_ids)} retain"
        + (f"; eval subsets from {fs.manifest.get('eval_score_file')}" if fs.extras else "") + ")")
    return fs


def build_forget_set(args: argparse.Namespace, data: ImageData, *, device: torch.device | str = "cpu",
                     model_file: Path | None = None, log: Callable[[str], None] = print) -> tuple[ForgetSet, Path]:
    """Plan, then load or build and save: ``(forget set, its file)``."""
    plan = plan_forget_set(args, data, model_file=model_file, log=log)
    return obtain(plan, args, data, device=device, log=log), plan.path


def forget_ids_sha256(fs: ForgetSet) -> str:
    """Content identity of a forget set: sha256 of its sorted forget ids (int64, little endian)."""
    return hashlib.sha256(np.sort(np.asarray(fs.forget_ids, "<i8")).tobytes()).hexdigest()


__all__ = ["ForgetPlan", "plan_forget_set", "obtain", "build", "build_forget_set", "embed_ids",
           "forget_ids_sha256", "check_fits", "proxy_file_for", "score_search_dirs", "memorization_scores",
           "IDENTITY_KEYS",
           "ES_GROUPS"]
