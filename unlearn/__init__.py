"""The method registry: the single source of each unlearning method's name, paper label, module,
run-defining hyperparameters and rules. The parser's choices, RUM's step list, run tags, table
labels and help text all derive from :data:`METHODS`.

A method is a function ``unlearn(task: UnlearnTask, cfg: UnlearnConfig)`` in its own module
(:mod:`unlearn.base`), imported on first use. Adding a method: write ``unlearn/<name>.py``, add one
:class:`Method` entry below, add its test.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from unlearn.base import UnlearnConfig, UnlearnFn, UnlearnTask
from unlearn.scrub import DEFAULTS as SCRUB_DEFAULTS


@dataclass(frozen=True)
class Method:
    name: str  # CLI name (--unlearn), e.g. "NG"
    label: str  # paper name for tables, e.g. "NegGrad+"
    target: str  # "module:function", imported on first use
    hparams: tuple[str, ...] = ()  # method-specific UnlearnConfig fields that define a run (tag, hparams)
    iterative: bool = True  # takes the optimizer, --unlearn_lr and --unlearn_epochs
    rum_step: bool = True  # may be a RUM step
    saliency: str = "optional"  # saliency mask (--path): "required" | "optional" | "never"
    defaults: Mapping[str, Any] = field(default_factory=dict)  # values of unset hparams flags
    help: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("retrain", "Retrain", "unlearn.retrain:unlearn", rum_step=False, saliency="never",
           help="train from scratch on the retain set (the reference)"),
    Method("FT", "FT", "unlearn.finetune:unlearn", help="fine-tune on the retain set"),
    Method("FT_l1", "ℓ1-sparse", "unlearn.l1_sparse:unlearn", ("alpha", "no_l1_epochs"),
           help="fine-tune with a decaying L1 penalty"),
    Method("FT_prune", "ℓ1-sparse", "unlearn.l1_sparse:unlearn", ("alpha", "no_l1_epochs"),
           help="the original's name of FT_l1"),
    Method("GA", "GA", "unlearn.neggrad:unlearn", help="gradient ascent on the forget set"),
    Method("NG", "NegGrad+", "unlearn.neggrad_plus:unlearn", ("alpha",),
           help="NegGrad+: alpha * retain CE - (1 - alpha) * forget CE; Sharp MinMax with --separate"),
    Method("SCRUB", "SCRUB", "unlearn.scrub:unlearn", ("msteps", "kd_T", "beta", "gamma"),
           defaults=SCRUB_DEFAULTS, help="teacher-student max/min distillation"),
    Method("wfisher", "IU (WoodFisher)", "unlearn.wfisher:unlearn", ("alpha",), iterative=False,
           help="one influence-function (WoodFisher) step"),
    Method("RL", "SalUn", "unlearn.salun:unlearn", saliency="required",
           help="SalUn: random labels on the salient weights (needs --path)"),
    Method("RL_og", "Random labels", "unlearn.random_label:unlearn", help="random labels on the forget set"),
    Method("raw", "Original", "unlearn.noop:unlearn", iterative=False, rum_step=False, saliency="never",
           help="no update: the original model (same as original)"),
    Method("original", "Original", "unlearn.noop:unlearn", iterative=False, rum_step=False, saliency="never",
           help="no update: the original model"),
)}
# The meta-algorithm: it has its own scripts (main_rum.py, main_rum_proxy.py), not a module here.
RUM = "RUM"
NOOP = tuple(name for name, m in METHODS.items() if m.target == "unlearn.noop:unlearn")


def method_names(*, with_rum: bool = False) -> tuple[str, ...]:
    """Every ``--unlearn`` name, in registry order (``with_rum``: and ``RUM``)."""
    return tuple(METHODS) + ((RUM,) if with_rum else ())


def step_methods() -> tuple[str, ...]:
    """The methods a RUM step may run."""
    return tuple(name for name, m in METHODS.items() if m.rum_step)


def canonical_method(name: str, *, with_rum: bool = True) -> str | None:
    """The registered spelling of ``name`` (case-insensitive), or None."""
    return {m.lower(): m for m in method_names(with_rum=with_rum)}.get(str(name).lower())


def get_method(name: str) -> UnlearnFn:
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; known: {', '.join(METHODS)}")
    module, fn = METHODS[name].target.split(":")
    return getattr(importlib.import_module(module), fn)


__all__ = ["METHODS", "Method", "NOOP", "RUM", "UnlearnConfig", "UnlearnTask", "UnlearnFn", "canonical_method",
           "get_method", "method_names", "step_methods"]
