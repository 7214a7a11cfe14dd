"""Row labels: a method's paper name plus only the hyperparameters that tell its rows apart.

A table row is one (method, hyperparameters, start-model recipe). Its label is the method's paper
name from the registry (:data:`unlearn.METHODS`; NegGrad+ with ``--separate`` is Sharp MinMax,
RUM is RUM) followed by the hyperparameters whose values differ among that method's rows, e.g.
``NegGrad+ (α=0.97)``, ``RUM (none→FT→SalUn)``. Values every row of a method shares go in a
caption line instead (:func:`label_rows` returns them); the start model has its own column.

1. :func:`run_hparams` reads one run's hyperparameters from its ``metrics.json`` (``hparams``,
   ``sam``, ``rum``) as an ordered ``name -> value`` dict with the raw names of
   :data:`HPARAM_FIELDS` (the CSV columns); a row keeps the values all its runs agree on.
2. :func:`label_rows` labels the rows of one table. A label longer than :data:`MAX_LABEL`
   characters keeps the fewest leading differing hyperparameters (in :data:`HPARAM_FIELDS` order)
   that still tell the method's rows apart; the others are listed per row (``hidden``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from unlearn import METHODS, NOOP, RUM
from unlearn.base import UnlearnConfig

__all__ = ["MAX_LABEL", "HPARAM_FIELDS", "display_name", "method_rank", "run_hparams", "common_hparams",
           "fmt_value", "fmt_item", "csv_hparams", "RowSpec", "Labels", "label_rows"]

MAX_LABEL = 40
_D = UnlearnConfig()
# Raw name -> shown name, in label priority order; the CSV's hyperparameter columns.
_SHOWN: dict[str, str] = {
    "steps": "steps", "grouping": "by", "alpha": "α", "beta": "β", "gamma": "γ", "kd_T": "T", "msteps": "msteps",
    "no_l1_epochs": "no-ℓ1 ep", "mask_ratio": "q", "mask_order": "mask order", "separate": "sep", "sam": "SAM",
    "mask": "mask", "lr": "lr", "epochs": "ep", "optimizer": "opt", "batch_size": "bs", "momentum": "mom",
    "weight_decay": "wd", "milestones": "milestones", "augment": "aug", "warmup": "warm-up", "precision": "precision",
}
HPARAM_FIELDS: tuple[str, ...] = tuple(_SHOWN)
# Settings shown only where some row of the method departs from the default.
SECONDARY: dict[str, Any] = {"momentum": _D.momentum, "weight_decay": _D.weight_decay,
                             "milestones": tuple(_D.milestones), "augment": _D.augment, "warmup": 0,
                             "precision": "fp32"}
_TRAINING = ("lr", "epochs", "optimizer", "batch_size", "momentum", "weight_decay", "milestones", "augment")
_RECIPE = ("lr", "epochs", "batch_size", "momentum", "weight_decay", "warmup", "augment", "optimizer", "precision")


def _registry_name(method: str) -> str | None:
    return {m.lower(): m for m in METHODS}.get(str(method).lower())


def display_name(method: str, hparams: Mapping[str, Any] | None = None) -> str:
    """The paper name of ``method`` (``Sharp MinMax`` for NegGrad+ with ``separate``)."""
    if str(method).lower() == RUM.lower():
        return RUM
    name = _registry_name(method)
    if name is None:
        return str(method)
    if name == "NG" and (hparams or {}).get("separate") is not None:
        return "Sharp MinMax"
    return METHODS[name].label


def method_rank(method: str) -> int:
    """Row order: the original model first, then the registry's order, RUM last."""
    name = _registry_name(method)
    if name in NOOP:
        return -1
    if name is None:
        return len(METHODS) + (0 if str(method).lower() == RUM.lower() else 1)
    return list(METHODS).index(name)


def _plain(v: Any) -> Any:
    """JSON lists as tuples (hashable, comparable with the defaults)."""
    return tuple(_plain(x) for x in v) if isinstance(v, list) else v


def _sam_text(sam: Mapping[str, Any] | None, separate: bool) -> str | None:
    if not sam:
        return None
    parts = [] if separate else [str(sam.get("sign", "min"))]
    parts += [f"ρ={fmt_value(sam.get('rho'))}", f"λ={fmt_value(sam.get('lamb'))}"]
    if sam.get("adaptive"):
        parts.append("adaptive")
    return " ".join(parts)


def _mask_text(h: Mapping[str, Any]) -> str | None:
    f = h.get("mask_file")
    if not f:
        return None
    stem = Path(str(f)).name.rsplit(".", 1)[0]
    stem = stem[len("mask"):].lstrip("_") if stem.startswith("mask") else stem
    return stem.replace("_", " ") or "yes"


def _step_values(steps: Sequence[Any], key: str) -> Any:
    vals = [None if not isinstance(s, dict) else _plain(s.get(key)) for s in steps]
    present = [v for v in vals if v is not None]
    if not present:
        return None
    return present[0] if len(set(map(repr, present))) == 1 else tuple(vals)


def _rum_hparams(h: Mapping[str, Any], rum: Mapping[str, Any] | None) -> dict[str, Any]:
    methods = [str(m) for m in h.get("methods") or []]
    out: dict[str, Any] = {"steps": "→".join("none" if m.lower() == "none" else display_name(m) for m in methods)}
    rum = rum or {}
    if rum.get("grouping"):
        g = str(rum["grouping"])
        out["grouping"] = (f"{g} {rum['proxy']}" if g == "proxy" and rum.get("proxy") else g) + \
            (" shuffled" if rum.get("shuffle") else "")
    steps = h.get("steps") or []
    for key in HPARAM_FIELDS:
        if key in ("steps", "grouping", "mask_ratio", "mask_order", "mask", "sam", "separate"):
            continue
        v = _step_values(steps, key)
        if v is not None:
            out[key] = v
    if h.get("mask_ratio") is not None:
        out["mask_ratio"] = _plain(h["mask_ratio"])
        out["mask_order"] = h.get("mask_order")
    return out


def run_hparams(method: str, hparams: Mapping[str, Any], sam: Mapping[str, Any] | None = None,
                rum: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run's hyperparameters, ``raw name -> value`` in :data:`HPARAM_FIELDS` order (lists as
    tuples; RUM's per-step values as one value when the steps agree, else a tuple per step)."""
    h = dict(hparams or {})
    if str(method).lower() == RUM.lower():
        out = _rum_hparams(h, rum)
    elif str(method).lower() == "retrain":
        rec = h.get("recipe") or {}
        out = {k: _plain(rec[k]) for k in _RECIPE if k in rec}
    else:
        name = _registry_name(method)
        if name is None or name in NOOP:
            return {}
        m = METHODS[name]
        out = {k: _plain(h[k]) for k in m.hparams if k in h}
        if not h.get("no_l1_epochs"):
            out.pop("no_l1_epochs", None)  # as in the run tag: 0 is not shown
        if m.iterative:
            if h.get("separate"):
                out["separate"] = "-".join(str(x) for x in h["separate"])
            out["sam"] = _sam_text(sam, bool(h.get("separate")))
            out["mask"] = _mask_text(h)
            out.update({k: _plain(h[k]) for k in _TRAINING if k in h})
    return {k: out[k] for k in sorted(out, key=_order)}


def _order(key: str) -> tuple[int, str]:
    return (HPARAM_FIELDS.index(key) if key in _SHOWN else len(_SHOWN), key)


def common_hparams(dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The items every dict of ``dicts`` has with the same value (a row's hyperparameters)."""
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(k in d and repr(d[k]) == repr(v) for d in dicts[1:])}


def fmt_value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "/".join(fmt_value(x) for x in v)
    return str(v)


def fmt_item(key: str, v: Any) -> str:
    """One hyperparameter as a label shows it: ``α=0.97``, ``none→FT→SalUn``, ``no SAM``."""
    if key in ("steps", "grouping"):
        return fmt_value(v)
    if key == "sam":
        return "no SAM" if v is None else f"SAM {v}"
    if key == "mask":
        return "no mask" if v is None else f"mask {v}"
    if key == "augment" and isinstance(v, bool):
        return "aug" if v else "no aug"
    return f"{_SHOWN.get(key, key)}={fmt_value(v)}"


def csv_hparams(hp: Mapping[str, Any]) -> list[str]:
    """The CSV cells of :data:`HPARAM_FIELDS` plus ``other_hparams`` (JSON of any other key)."""
    cells = ["" if hp.get(k) is None else fmt_value(hp[k]) for k in HPARAM_FIELDS]
    other = {k: v for k, v in hp.items() if k not in _SHOWN}
    return cells + [json.dumps(other, sort_keys=True, default=str) if other else ""]


@dataclass
class RowSpec:
    """What :func:`label_rows` needs of one row."""

    row: str  # the row id
    name: str  # paper name (display_name)
    pretrained: str  # the start model's recipe label
    hparams: dict[str, Any]
    method_tag: str = ""


@dataclass
class Labels:
    labels: dict[str, str] = field(default_factory=dict)  # row id -> label
    shared: dict[str, list[str]] = field(default_factory=dict)  # paper name -> items shared by its rows
    hidden: dict[str, list[str]] = field(default_factory=dict)  # row id -> differing items left out of the label


def _value(spec: RowSpec, key: str) -> Any:
    return spec.hparams.get(key, SECONDARY.get(key))


def _visible(specs: Sequence[RowSpec], key: str) -> bool:
    return key not in SECONDARY or any(repr(_value(s, key)) != repr(SECONDARY[key]) for s in specs)


def _make(name: str, items: Iterable[str]) -> str:
    items = list(items)
    return f"{name} ({', '.join(items)})" if items else name


def _unique(specs: Sequence[RowSpec], labels: Mapping[str, str]) -> bool:
    seen = {(labels[s.row], s.pretrained) for s in specs}
    return len(seen) == len(specs)


def _compress(text: str) -> str:
    """``NegGrad+→NegGrad+→NegGrad+`` -> ``NegGrad+×3`` (runs of one step method)."""
    parts, out = text.split("→"), []
    for p in parts:
        if out and out[-1][0] == p:
            out[-1][1] += 1
        else:
            out.append([p, 1])
    return "→".join(p if n == 1 else f"{p}×{n}" for p, n in out)


def _label_group(name: str, specs: Sequence[RowSpec], res: Labels) -> None:
    keys = sorted({k for s in specs for k in s.hparams} | {k for k in SECONDARY if _visible(specs, k)}, key=_order)
    keys = [k for k in keys if _visible(specs, k)]
    varying = [k for k in keys if len({repr(_value(s, k)) for s in specs}) > 1]
    res.shared[name] = [fmt_item(k, _value(specs[0], k)) for k in keys
                        if k not in varying and _value(specs[0], k) is not None]
    items = {s.row: {k: fmt_item(k, _value(s, k)) for k in varying} for s in specs}
    shown = varying
    labels = {s.row: _make(name, items[s.row].values()) for s in specs}
    if max(map(len, labels.values())) > MAX_LABEL:
        for i in range(1, len(varying) + 1):
            cand = {s.row: _make(name, (items[s.row][k] for k in varying[:i])) for s in specs}
            if _unique(specs, cand):
                shown, labels = varying[:i], cand
                break
    for s in specs:
        lab = labels[s.row]
        if len(lab) > MAX_LABEL and "steps" in shown:
            lab = _make(name, (_compress(items[s.row][k]) if k == "steps" else items[s.row][k] for k in shown))
        if len(lab) > MAX_LABEL:
            lab = lab[:MAX_LABEL - 1] + "…"
        labels[s.row] = lab
        res.hidden[s.row] = [items[s.row][k] for k in varying if k not in shown and _value(s, k) is not None]
    _disambiguate(specs, labels)
    res.labels.update(labels)


def _disambiguate(specs: Sequence[RowSpec], labels: dict[str, str]) -> None:
    """Rows of one method, start model and label (settings the hyperparameter record lacks, such
    as the precision): each gets the method-tag parts the others lack."""
    groups: dict[tuple[str, str], list[RowSpec]] = {}
    for s in specs:
        groups.setdefault((labels[s.row], s.pretrained), []).append(s)
    for (lab, _), same in groups.items():
        if len(same) < 2:
            continue
        parts = [s.method_tag.split("_") for s in same]
        common = set(parts[0]).intersection(*map(set, parts[1:]))
        extras = [" ".join(x for x in p if x not in common) for p in parts]
        for s, extra in zip(same, extras):
            if extra or extras.count("") > 1:  # the one tag with nothing more keeps the plain label
                labels[s.row] = f"{lab} [{extra or s.method_tag}]"


def label_rows(specs: Sequence[RowSpec]) -> Labels:
    """Labels of every row (see the module docstring); rows are grouped by paper name."""
    res = Labels()
    groups: dict[str, list[RowSpec]] = {}
    for s in specs:
        groups.setdefault(s.name, []).append(s)
    for name, group in groups.items():
        _label_group(name, group, res)
    return res
