"""Registry of unlearning methods: ``METHODS[name](task, cfg)`` (see :mod:`unlearn.base`).

Each method lives in its own module with its update rule in the docstring.
"""
from __future__ import annotations

import importlib

from unlearn.base import UnlearnConfig, UnlearnFn, UnlearnTask

# name -> "module:function"; imported on first use so one method's import cost never hits another.
_REGISTRY: dict[str, str] = {
    "raw": "unlearn.noop:unlearn",
    "original": "unlearn.noop:unlearn",
    "retrain": "unlearn.retrain:unlearn",
    "FT": "unlearn.finetune:unlearn",
    "FT_l1": "unlearn.l1_sparse:unlearn",
    "FT_prune": "unlearn.l1_sparse:unlearn",
    "GA": "unlearn.neggrad:unlearn",
    "NG": "unlearn.neggrad_plus:unlearn",
    "SCRUB": "unlearn.scrub:unlearn",
    "wfisher": "unlearn.wfisher:unlearn",
    "RL": "unlearn.salun:unlearn",
    "RL_og": "unlearn.random_label:unlearn",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def get_method(name: str) -> UnlearnFn:
    if name not in _REGISTRY:
        raise KeyError(f"unknown unlearning method {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    module, fn = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), fn)


def method_names() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["UnlearnConfig", "UnlearnTask", "UnlearnFn", "get_method", "method_names", "register"]
