"""From the forget-set flags to a forget set: which kind, and how each kind selects its examples.

The kind is chosen from the flags (:class:`ForgetSpec`), first match wins:

1. ``--forget_set FILE``: the file, used as is; it is read and checked when planned. Its name is
   the file's stem made safe for a directory name (:func:`utils.paths.safe_name`).
2. ``--mem_proxy NAME --mem LEVEL``: proxy groups (:func:`forget_sets.select.proxy_groups`). The
   proxy file is ``--proxy_file``, else where the proxy's producer writes it
   (:data:`memorization.proxies.PROXIES`): the learning-event proxies' ``proxies.npz`` beside the
   pretrained model, or ``<ckpts>/memorization/<dataset>_<arch>_proxies.npz``.
3. ``--mem LEVEL``: memorization groups from the score file (searched in the working directory,
   the repository root and ``<ckpts>/memorization``). ``--mem`` wins over ``--group_index`` when
   both are given (the original README passes both as placeholders); a note says so.
4. ``--group_index G``: entanglement (ES) groups: the start model's embeddings of the training
   split, 15 groups by distance to the centroid, ``G`` in 0..14 or -1 (mix).
5. ``--class_to_replace C[,C...]`` (not -1): class-wise; with ``--num_indexes_to_replace N`` a
   random N of those classes, else all of them.
6. ``--num_indexes_to_replace N``: N random training examples (``RandomState(seed - 1)``).

``--shuffle`` (mem and proxy kinds) pools the three groups and redraws them with
``RandomState(--seed)``.

Evaluation subsets. Whenever memorization scores are found (any kind), the set also holds
``extra_high_mem`` / ``extra_mid_mem`` / ``extra_low_mem``: the original's evaluation sets
high[:1000], mid[:1000], low[-1000:] of the groups built with the forget-set size (capped at 1000),
always from the *true*, unshuffled scores.

Every set built from flags must leave a non-empty retain set: ``--num_indexes_to_replace`` must lie
in 1..(number of training examples - 1), checked when planned.

The manifest identifies its inputs by content (sha256) and file *name* only, never by directory, so
the same forget set built under another ``--ckpts`` is the same file, byte for byte.

Names follow :func:`forget_sets.file.forget_set_name`; ES forget sets depend on the model, so their
name carries ``_<arch>-<first 8 hex of the model file's sha256>``. Loading and saving:
:mod:`forget_sets.store`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from utils.data import ImageData
from utils.errors import UserError
from forget_sets.file import (ForgetSet, check_fits, forget_set_name, load_forget_set, make_forget_set,
                              sha256_file)
from forget_sets.select import (centroid_distance_groups, es_forget_ids, eval_subsets, memorization_groups,
                                proxy_groups, random_forget, select_level, shuffle_groups)
from memorization.proxies import LEARNING_EVENT_PROXIES, PROXY_SIGN
from memorization.scores import find_score_file, load_proxy, load_scores, score_key
from models import build_for, load_into
from trainer.device import prepare_model
from trainer.evaluate import embed
from utils import paths

ES_GROUPS = 15
EVAL_SUBSET = 1000


@dataclass(frozen=True)
class ForgetSpec:
    """What selects a forget set: the forget-set flags as plain values (built from the command line
    by :func:`stages.configs.forget_spec`)."""

    ckpts: Path  # artifact root: forget sets go to <ckpts>/forget_sets
    dataset: str
    arch: str  # ES groups: the model's architecture; computed proxies are per (dataset, arch)
    seed: int  # random and class-wise sets, --shuffle
    num_indexes_to_replace: int | None = None  # forget-set size N
    class_to_replace: tuple[int, ...] = (-1,)
    mem: str | None = None  # low | mid | high | mix
    mem_proxy: str | None = None
    mem_file: str | None = None
    proxy_file: str | None = None
    group_index: int | None = None  # ES group, -1 = mix
    shuffle: bool = False
    forget_set: str | None = None  # a file used as is
    imagenet_arch: bool = False
    overwrite: bool = False  # rebuild a file whose manifest differs
    start_model: Callable[[], Path] | None = None  # resolves the start model file (ES, learning-event proxies)

    def resolve_start_model(self) -> Path:
        if self.start_model is None:
            raise UserError("this forget set needs a model (--mask) to select from")
        return self.start_model()


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
    given: ForgetSet | None = field(default=None, repr=False)  # --forget_set FILE, read and checked


def score_search_dirs(spec: ForgetSpec) -> list[Path]:
    return paths.score_search_dirs(spec.ckpts)


def _find_scores(spec: ForgetSpec, *, required: bool) -> Path | None:
    try:
        return find_score_file(spec.dataset, mem_file=spec.mem_file, search_dirs=score_search_dirs(spec))
    except UserError:
        if required or spec.mem_file is not None:
            raise
        return None


def _load_scores(path: Path, data: ImageData) -> np.ndarray:
    return load_scores(path, score_key(data.name, path), expected_len=len(data.x))


def memorization_scores(spec: ForgetSpec, data: ImageData) -> tuple[Path, np.ndarray]:
    """``(score file, scores indexed by global id)``: the file ``--mem`` forget sets are built from
    (``--mem_file``, else :func:`memorization.scores.find_score_file` over :func:`score_search_dirs`),
    loaded and validated. A missing or unusable file is a :class:`UserError`."""
    sf = _find_scores(spec, required=True)
    return sf, _load_scores(sf, data)


def proxy_file_for(spec: ForgetSpec, proxy: str) -> Path:
    """``--proxy_file``, else where the proxy's producer writes it (see the module docstring)."""
    if spec.proxy_file:
        p = Path(spec.proxy_file)
        if not p.is_file():
            raise UserError(f"--proxy_file {spec.proxy_file}: no such file")
        return p
    if proxy in LEARNING_EVENT_PROXIES:
        p = paths.learning_event_proxy_path(spec.resolve_start_model())
        if not p.is_file():
            raise UserError(f"--mem_proxy {proxy}: no proxy file at {p} (main_train.py writes proxies.npz next to "
                            f"the model it trains); pass --proxy_file PATH")
        return p
    p = paths.computed_proxy_path(spec.ckpts, spec.dataset, spec.arch)
    if not p.is_file():
        raise UserError(f"--mem_proxy {proxy}: no proxy file at {p}; create it with: python main_memorization.py "
                        f"--dataset {spec.dataset} --arch {spec.arch} --proxies {proxy}, or pass --proxy_file PATH")
    return p


def _n(spec: ForgetSpec, what: str) -> int:
    if spec.num_indexes_to_replace is None:
        raise UserError(f"{what} needs --num_indexes_to_replace N (the forget-set size)")
    return int(spec.num_indexes_to_replace)


def plan_forget_set(spec: ForgetSpec, data: ImageData) -> ForgetPlan:
    """Decide the kind (first match wins, see the module docstring) and compute the selection
    manifest and name; reads flags and (hashes of) input files only, writes nothing. Every
    unusable input is a :class:`UserError`."""
    if spec.forget_set:
        return _plan_given(spec, data)
    base: dict[str, Any] = {"dataset": data.name, "split_seed": int(data.split_seed),
                            "num_train": int(len(data.train_ids))}
    classes = [int(c) for c in (spec.class_to_replace or [-1])]
    _check_size(spec, data, classes)
    if spec.mem_proxy is not None:
        kind, m, note, source = _plan_proxy(spec, data, base)
    elif spec.mem is not None:
        kind, m, note, source = _plan_mem(spec, base)
    elif spec.group_index is not None:
        kind, m, note, source = _plan_es(spec, base)
    elif -1 not in classes or spec.num_indexes_to_replace is not None:
        kind, m, note, source = _plan_random(spec, base, classes)
    else:
        raise UserError("no forget set given: pass --mem LEVEL, --mem_proxy NAME --mem LEVEL, --group_index G, "
                        "--class_to_replace C or --num_indexes_to_replace N (with --num_indexes_to_replace for the "
                        "size), or --forget_set FILE")
    name = forget_set_name(m)
    if kind == "es":
        name += f"_{spec.arch}-{m['model_sha256'][:8]}"
    m["name"] = name
    return ForgetPlan(kind, name, paths.forget_set_path(spec.ckpts, name), m, note, source=source)


_Planned = tuple[str, dict[str, Any], str, dict[str, Any]]


def given_set_name(forget_set: str) -> str:
    """The name of a ``--forget_set`` file's forget set: its stem through
    :func:`utils.paths.safe_name`; a name of dots only ("." or "..") is a :class:`UserError`, since
    the name becomes a directory of the run directory (``<ckpts>/unlearn/<name>/...``)."""
    name = paths.safe_name(Path(forget_set).stem)
    if not name.strip("."):
        raise UserError(f"--forget_set {forget_set}: the file name gives no usable forget-set name ({name!r}); "
                        f"rename the file (letters, digits, '.', '_', '-')")
    return name


def _plan_given(spec: ForgetSpec, data: ImageData) -> ForgetPlan:
    """``--forget_set FILE``: read and check the file now (before any work)."""
    p = Path(spec.forget_set)
    name = given_set_name(spec.forget_set)
    fs = load_forget_set(p)
    check_fits(fs, data, f"--forget_set {p}")
    return ForgetPlan("file", name, p, {}, f"forget set: {p} (--forget_set)", given_file=True, given=fs)


def _check_size(spec: ForgetSpec, data: ImageData, classes: list[int]) -> None:
    """A forget set from flags must leave a non-empty retain set: ``--num_indexes_to_replace`` in
    1..(training examples - 1), and a class-wise set without it must not take every class."""
    total = int(len(data.train_ids))
    n = spec.num_indexes_to_replace
    if n is None:
        if spec.mem_proxy is None and spec.mem is None and spec.group_index is None and -1 not in classes:
            if bool(np.isin(data.labels(data.train_ids), classes).all()):
                raise UserError(f"--class_to_replace {','.join(map(str, classes))}: every one of the {total} "
                                f"training examples has one of these classes, which leaves an empty retain set; "
                                f"leave out a class or pass --num_indexes_to_replace N below {total}")
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise UserError(f"--num_indexes_to_replace {n!r}: must be a positive integer")
    n = int(n)
    if n > total:
        raise UserError(f"--num_indexes_to_replace {n}: larger than the {total} training examples; "
                        f"accepted: 1..{total - 1}")
    if n == total:
        raise UserError(f"--num_indexes_to_replace {n}: the whole training split ({total} examples), which leaves "
                        f"an empty retain set; accepted: 1..{total - 1}")


def _plan_proxy(spec: ForgetSpec, data: ImageData, base: dict[str, Any]) -> _Planned:
    proxy = str(spec.mem_proxy)
    if proxy not in PROXY_SIGN:
        raise UserError(f"--mem_proxy {proxy!r}: unknown proxy; accepted: {', '.join(PROXY_SIGN)}")
    if spec.mem is None:
        raise UserError(f"--mem_proxy {proxy} needs --mem LEVEL (low, mid, high or mix)")
    n = _n(spec, "--mem_proxy")
    pf = proxy_file_for(spec, proxy)
    values = load_proxy(pf, proxy, data.train_ids)
    m = {**base, "kind": "proxy", "proxy": proxy, "level": spec.mem, "n": n, "shuffle": bool(spec.shuffle),
         "proxy_sha256": hashlib.sha256(np.ascontiguousarray(values, "<f8").tobytes()).hexdigest()}
    if spec.shuffle:
        m["seed"] = int(spec.seed)
    return "proxy", m, f"forget set: proxy {proxy}, level {spec.mem}, n {n} from {pf}", {"proxy_file": str(pf)}


def _plan_mem(spec: ForgetSpec, base: dict[str, Any]) -> _Planned:
    n = _n(spec, "--mem")
    sf = _find_scores(spec, required=True)
    m = {**base, "kind": "mem", "level": spec.mem, "n": n, "shuffle": bool(spec.shuffle),
         "score_sha256": sha256_file(sf)}
    if spec.shuffle:
        m["seed"] = int(spec.seed)
    note = f"forget set: memorization level {spec.mem}, n {n} from {sf}"
    if spec.group_index is not None:
        note += f" (--mem takes precedence over --group_index {spec.group_index}, which is ignored)"
    return "mem", m, note, {"score_file": str(sf)}


def _plan_es(spec: ForgetSpec, base: dict[str, Any]) -> _Planned:
    if spec.shuffle:
        raise UserError("--shuffle applies to --mem / --mem_proxy forget sets only")
    mf = Path(spec.resolve_start_model())
    g = int(spec.group_index)
    if not (g == -1 or 0 <= g < ES_GROUPS):
        raise UserError(f"--group_index {g}: out of range; accepted: 0..{ES_GROUPS - 1} or -1 (mix)")
    m = {**base, "kind": "es", "group": g, "n": spec.num_indexes_to_replace, "n_groups": ES_GROUPS,
         "model_sha256": sha256_file(mf), "arch": spec.arch}
    return "es", m, f"forget set: entanglement group {g} of {ES_GROUPS} under {mf}", {"model_file": str(mf)}


def _plan_random(spec: ForgetSpec, base: dict[str, Any], classes: list[int]) -> _Planned:
    if spec.shuffle:
        raise UserError("--shuffle applies to --mem / --mem_proxy forget sets only")
    if spec.seed < 1:
        raise UserError(f"--seed {spec.seed}: random and class-wise forget sets are drawn with RandomState(seed - 1) "
                        f"(the original's rule), so --seed must be >= 1 here")
    n = spec.num_indexes_to_replace
    if -1 not in classes:
        m = {**base, "kind": "class", "classes": classes, "n": n, "seed": int(spec.seed)}
        note = f"forget set: class {','.join(map(str, classes))}" + (f", {n} random" if n else ", all examples")
        return "class", m, note, {}
    m = {**base, "kind": "random", "n": int(n), "seed": int(spec.seed)}
    return "random", m, f"forget set: {n} random examples (seed {spec.seed})", {}


def load_model_file(model_file: Path, spec: ForgetSpec, data: ImageData, device: torch.device) -> torch.nn.Module:
    model = build_for(spec.arch, data, imagenet_arch=spec.imagenet_arch)
    load_into(model, Path(model_file), arch=spec.arch, num_classes=data.num_classes)
    return prepare_model(model, device)


def eval_extras(spec: ForgetSpec, data: ImageData, size: int,
                 scores: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """high_mem/mid_mem/low_mem subsets from the true scores when a score file is found."""
    info: dict[str, Any] = {}
    if scores is None:
        sf = _find_scores(spec, required=False)
        if sf is None:
            return {}, info
        scores = _load_scores(sf, data)
        info = {"eval_score_file": Path(sf).name, "eval_score_sha256": sha256_file(sf)}
    k = max(1, min(int(size), EVAL_SUBSET, len(data.train_ids)))
    groups = memorization_groups(data.train_ids, scores[data.train_ids], k)
    return eval_subsets(groups, EVAL_SUBSET), info


def build(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, *,
          device: torch.device | str = "cpu") -> ForgetSet:
    """Compute the forget set of ``plan`` (no file is written)."""
    m = dict(plan.manifest)
    builder = {"mem": _build_mem, "proxy": _build_proxy, "es": _build_es, "random": _build_random,
               "class": _build_random}[plan.kind]
    forget, extras, info = builder(plan, spec, data, torch.device(device))
    m.update(info)
    return make_forget_set(data.train_ids, forget, m, extras)


_Built = tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]


def _build_mem(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, device: torch.device) -> _Built:
    m, train_ids = plan.manifest, data.train_ids
    sf = Path(plan.source["score_file"])
    scores = _load_scores(sf, data)
    groups = memorization_groups(train_ids, scores[train_ids], m["n"])
    chosen = shuffle_groups(groups, m["n"], int(spec.seed)) if m.get("shuffle") else groups
    extras, _ = eval_extras(spec, data, m["n"], scores)
    info = {"score_file": sf.name, "eval_score_file": sf.name, "eval_score_sha256": m["score_sha256"]}
    return select_level(chosen, m["level"], m["n"]), extras, info


def _build_proxy(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, device: torch.device) -> _Built:
    m, train_ids = plan.manifest, data.train_ids
    pf = Path(plan.source["proxy_file"])
    values = load_proxy(pf, m["proxy"], train_ids)
    groups = proxy_groups(train_ids, values, m["n"], negative=PROXY_SIGN[m["proxy"]])
    chosen = shuffle_groups(groups, m["n"], int(spec.seed)) if m.get("shuffle") else groups
    extras, info = eval_extras(spec, data, m["n"])
    return select_level(chosen, m["level"], m["n"]), extras, {"proxy_file": pf.name, **info}


def _build_es(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, device: torch.device) -> _Built:
    m, train_ids = plan.manifest, data.train_ids
    mf = Path(plan.source["model_file"])
    model = load_model_file(mf, spec, data, device)
    groups = centroid_distance_groups(embed(model, data, train_ids, device=device), train_ids, ES_GROUPS)
    n = m["n"] if m["n"] is not None else len(groups[0])
    forget = es_forget_ids(groups, int(m["group"]), int(n))
    extras, info = eval_extras(spec, data, len(forget))
    return forget, extras, {"model_file": mf.name, **info}


def _build_random(plan: ForgetPlan, spec: ForgetSpec, data: ImageData, device: torch.device) -> _Built:
    m, train_ids = plan.manifest, data.train_ids
    classes = m.get("classes") if plan.kind == "class" else None
    forget = random_forget(train_ids, data.labels(train_ids), m["n"], classes, int(m["seed"]))
    extras, info = eval_extras(spec, data, len(forget))
    return forget, extras, info


