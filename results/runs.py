"""Unlearning runs on disk: reading them, and choosing the ones a table holds.

1. **Discovery.** Every ``metrics.json`` under a root directory that has the keys of an unlearning
   run (written by ``main_forget.py`` / ``main_rum.py`` at
   ``<ckpts>/unlearn/<forget_set>/<method_tag>/seed<seed>/``) is one :class:`Run`; other JSON files
   are reported as skipped.
2. **Selection.** :class:`Filters` choose rows and columns: the method (case-insensitive; ``raw``
   and ``original`` are the same), the memorization level of mem and proxy forget sets, the proxy,
   the forget-set size and the ES group; dataset and architecture when set. The method filter
   selects rows only: retrain runs are always kept as references. One table holds one dataset and
   one architecture (:func:`check_single`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from utils.errors import UserError

__all__ = ["ORIGINAL", "MIA_ATTACK", "Run", "column_label", "load_run", "discover", "Filters", "select",
           "check_single", "describe"]

ORIGINAL = ("original", "raw")
MIA_ATTACK = "confidence"
RUM_KEYS = ("grouping", "proxy", "shuffle", "groups")
REQUIRED = ("method", "method_tag", "dataset", "arch", "seed", "forget_set", "accuracy")


@dataclass
class Run:
    """One unlearning (or retrain, or original-model) run, read from its ``metrics.json``."""

    path: Path  # the run directory
    method: str
    method_tag: str
    dataset: str
    arch: str
    seed: int
    forget_set: str
    sha: str | None
    kind: str | None
    mem_level: str | None
    mem_proxy: str | None
    group_index: int | None
    num_forget: int | None
    accuracy: dict[str, float]
    mia: dict[str, float]
    collapsed: bool
    model_name: str | None = None  # the start model's run name (SGD vs SAM pretraining, ...)
    recipe: str | None = None  # the start model's pretraining recipe (canonical JSON): the retrain pairing key
    pretrained: str | None = None  # its label: SGD, SAM-min rho1 lamb1 adaptive, ...
    hparams: dict[str, Any] = field(default_factory=dict)  # metrics.json "hparams"
    sam: dict[str, Any] | None = None  # metrics.json "sam": SAM during unlearning (Sharp MinMax: "separate")
    rum: dict[str, Any] | None = None  # RUM's grouping: grouping, proxy, shuffle, groups
    forget_set_file: str | None = None
    row: str | None = None  # the table row (results.table.recipe_rows): method tag [+ " @<recipe>"]

    @property
    def is_retrain(self) -> bool:
        return self.method.lower() == "retrain"

    @property
    def is_original(self) -> bool:
        return self.method.lower() in ORIGINAL

    @property
    def mia_value(self) -> float:
        v = self.mia.get(MIA_ATTACK)
        return math.nan if v is None else float(v)

    @property
    def column(self) -> str:
        """The forget-set column: its name without the dataset prefix and without seed parts."""
        return column_label(self.forget_set, self.dataset)


def column_label(name: str, dataset: str) -> str:
    parts = str(name).split("_")
    if len(parts) > 1 and parts[0].lower() == str(dataset).lower():
        parts = parts[1:]
    kept = [p for p in parts if not re.fullmatch(r"seed\d+", p)]
    return "_".join(kept) or str(name)


def _canon_dataset(name: Any) -> str:
    from utils.data import canonical_dataset

    try:
        return canonical_dataset(str(name))
    except UserError:
        return str(name).lower()


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _recipe_of(m: dict[str, Any]) -> dict[str, str | None]:
    """``recipe`` and ``pretrained`` of a metrics record: its ``start_recipe`` (key and label); runs
    written before it was recorded: the start model's name without its seed."""
    sr = m.get("start_recipe")
    if isinstance(sr, dict) and sr.get("key") is not None:
        return {"recipe": json.dumps(sr["key"], sort_keys=True, default=str),
                "pretrained": str(sr.get("label") or "unknown")}
    name = m.get("model_name")
    if not name:
        return {"recipe": None, "pretrained": None}
    base = re.sub(r"_seed\d+$", "", str(name))
    return {"recipe": json.dumps({"model": base}), "pretrained": base}


def load_run(path: Path) -> Run:
    """Read one ``metrics.json``; raises ``ValueError`` when it is not an unlearning run's."""
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if not isinstance(m, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ValueError(f"not an unlearning run's metrics (lacks {', '.join(missing)})")
    acc = m["accuracy"]
    if not isinstance(acc, dict):
        raise ValueError("'accuracy' is not an object")
    mia = m.get("mia") or {}
    if not isinstance(mia, dict):
        raise ValueError("'mia' is not an object")
    try:
        return Run(
            path=path.parent, method=str(m["method"]), method_tag=str(m["method_tag"]),
            dataset=_canon_dataset(m["dataset"]), arch=str(m["arch"]).lower(), seed=int(m["seed"]),
            forget_set=str(m["forget_set"]), sha=_opt_str(m.get("forget_set_sha256")) or None,
            kind=_opt_str(m.get("forget_kind")), mem_level=_opt_str(m.get("mem_level")),
            mem_proxy=_opt_str(m.get("mem_proxy")), group_index=_opt_int(m.get("group_index")),
            num_forget=_opt_int(m.get("num_forget")),
            accuracy={k: (math.nan if v is None else float(v)) for k, v in acc.items()},
            mia={k: (math.nan if v is None else float(v)) for k, v in mia.items()
                 if not isinstance(v, (dict, list))},
            collapsed=bool(m.get("collapsed", False)),
            model_name=_opt_str(m.get("model_name")),
            hparams=dict(m.get("hparams") or {}) if isinstance(m.get("hparams"), dict) else {},
            sam=m["sam"] if isinstance(m.get("sam"), dict) else None,
            rum={k: m["rum"].get(k) for k in RUM_KEYS} if isinstance(m.get("rum"), dict) else None,
            forget_set_file=_opt_str(m.get("forget_set_file")),
            **_recipe_of(m),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad value ({' '.join(str(e).split())[:120]})") from None


def discover(root: str | Path) -> tuple[list[Run], list[str]]:
    """All runs under ``root`` (sorted by path) and one line per skipped ``metrics.json``. Hidden
    directories (``.<run>.overwrite``: a replacement not yet in place) hold no run."""
    root = Path(root)
    runs, skipped = [], []
    if not root.is_dir():
        return runs, skipped
    for p in sorted(root.rglob("metrics.json")):
        if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue
        try:
            runs.append(load_run(p))
        except ValueError as e:
            skipped.append(f"{p}: {e}")
    return runs, skipped


@dataclass
class Filters:
    """What a table holds; None keeps everything. Named as the flags of ``analysis.py`` say."""

    dataset: str | None = None
    arch: str | None = None
    unlearn: str | None = None
    mem: str | None = None
    mem_proxy: str | None = None
    num_forget: int | None = None  # --num_indexes_to_replace
    group_index: int | None = None
    retrain: str | None = None  # --retrain: the method tag of the retrain runs used as references

    def flags(self) -> str:
        out = []
        for flag, v in (("--dataset", self.dataset), ("--arch", self.arch), ("--unlearn", self.unlearn),
                        ("--mem", self.mem), ("--mem_proxy", self.mem_proxy),
                        ("--num_indexes_to_replace", self.num_forget), ("--group_index", self.group_index),
                        ("--retrain", self.retrain)):
            if v is not None:
                out.append(f"{flag} {v}")
        return " ".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _size_matches(run: Run, n: int) -> bool:
    if run.num_forget == n:
        return True
    return re.search(rf"(^|_)n{n}(_|$)", run.forget_set) is not None


def _method_matches(run: Run, unlearn: str) -> bool:
    want = unlearn.lower()
    have = run.method.lower()
    if want in ORIGINAL:
        return have in ORIGINAL
    return have == want


def select(runs: Sequence[Run], f: Filters) -> list[Run]:
    """The runs the filters keep. Retrain runs pass the ``unlearn`` filter (they are the
    references) and ``--retrain`` keeps those of one tag; every other filter applies to them as well."""
    out = []
    for r in runs:
        if f.retrain is not None and r.is_retrain and r.method_tag != f.retrain:
            continue
        if f.dataset is not None and r.dataset != f.dataset:
            continue
        if f.arch is not None and r.arch != f.arch:
            continue
        if f.unlearn is not None and not r.is_retrain and not _method_matches(r, f.unlearn):
            continue
        if f.mem is not None and (r.mem_level or "").lower() != f.mem:
            continue
        if f.mem_proxy is not None and (r.mem_proxy or "").lower() != f.mem_proxy:
            continue
        if f.num_forget is not None and not _size_matches(r, f.num_forget):
            continue
        if f.group_index is not None and r.group_index != f.group_index:
            continue
        out.append(r)
    return out


def check_single(runs: Sequence[Run]) -> None:
    """One dataset and one architecture per table; a mix is a :class:`UserError`."""
    for what, flag in (("dataset", "--dataset"), ("arch", "--arch")):
        counts: dict[str, int] = {}
        for r in runs:
            counts[getattr(r, what)] = counts.get(getattr(r, what), 0) + 1
        if len(counts) > 1:
            listing = ", ".join(f"{k} ({v} runs)" for k, v in sorted(counts.items()))
            noun = "datasets" if what == "dataset" else "architectures"
            raise UserError(f"the selected runs mix {noun}: {listing}; one table holds one {what}: "
                            f"choose with {' or '.join(f'{flag} {k}' for k in sorted(counts))}")


def describe(runs: Sequence[Run]) -> str:
    """What ``runs`` hold (datasets, archs, methods, forget sets), for an error message."""
    def uniq(xs: Iterable[Any]) -> str:
        vals = sorted({str(x) for x in xs})
        return ", ".join(vals[:8]) + (", ..." if len(vals) > 8 else "")

    return (f"datasets {uniq(r.dataset for r in runs)}; archs {uniq(r.arch for r in runs)}; "
            f"methods {uniq(r.method for r in runs)}; forget sets {uniq(r.column for r in runs)}")
