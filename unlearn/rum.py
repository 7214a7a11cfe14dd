"""RUM: refine the forget set into memorization groups, then unlearn them one after another.

The meta-algorithm of Zhao et al. (NeurIPS 2024; rum-spec §1), as plain functions. The stage
:mod:`stages.rum` (main_rum.py: true memorization scores; main_rum_proxy.py: a memorization proxy)
builds the inputs, run :func:`run_meta` and write the run directories.

**Refinement** (:func:`refine`). The forget set S (n ids, any forget set; the README's is the
``--mem mix`` set) is ordered by a *memorization key* -- the memorization score, or a proxy value
with its sign flipped when the proxy falls as memorization rises (:func:`memorization_key`,
``memorization.proxies.PROXY_SIGN``) -- stably in descending order (ties keep forget-set order), and
cut into K parts: the first K-1 parts (the most memorized) get ``n // K`` ids each, the last (the
least memorized) the remaining ``n - (K-1)(n // K)``. The groups are returned in *processing order*,
low -> high memorization (group 0 = the least memorized). For K = 3 and the mix set
``high[:n//3] + mid[:n//3] + low[(-n)//3:]`` the sizes are exactly the mix parts' (n//3, n//3 and
the rest for low), so whenever the three parts occupy disjoint score ranges (always, unless the
training set is tiny) the groups *are* the mix parts; the pipeline checks and records it. Cutting a
sorted list generalizes to any K, any forget set and any score.

**Shuffle baseline** (:func:`shuffled_groups`): random groups of the same sizes, a permutation of
S drawn with ``np.random.RandomState(seed)``.

**Retain set of step j** (:func:`step_retain_sets`, rum-spec §1.3): every training id minus
groups 0..j -- the groups already processed and the current one are excluded, groups still to come
stay in the retain set; the last step's retain set is the forget set's own retain set.

**Meta step** (:func:`run_meta`): one method per group, in processing order, each step starting
from the model the previous step produced (DESIGN.md §7.7); ``none`` skips a group and leaves the
weights untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from unlearn import METHODS, step_methods

NONE = "none"
# The methods a RUM step may run (retrain restarts from scratch and cannot chain; raw/original = none).
STEP_METHODS = step_methods()
ALPHA_METHODS = tuple(m for m in STEP_METHODS if "alpha" in METHODS[m].hparams)
NOT_ITERATIVE = tuple(m for m in STEP_METHODS if not METHODS[m].iterative)
DEFAULT_MASK_RATIO = 0.5


@dataclass(frozen=True)
class StepSpec:
    """One step of a default plan: method and its hyper-parameters (None = the flag's default)."""

    method: str
    lr: float | None = None
    epochs: int | None = None
    alpha: float | None = None


# The two RUM examples (rum-spec §1.4), in low -> mid -> high memorization order.
DEFAULT_PLANS: dict[str, tuple[StepSpec, ...]] = {
    # main_rum.py: nothing - Fine-tune (10 epochs, lr 0.1) - SalUn (5 epochs, lr 0.1)
    "mem": (StepSpec(NONE), StepSpec("FT", lr=0.1, epochs=10), StepSpec("RL", lr=0.1, epochs=5)),
    # main_rum_proxy.py: NegGrad+ three times
    "proxy": (StepSpec("NG", lr=0.01, epochs=5, alpha=0.99), StepSpec("NG", lr=0.01, epochs=5, alpha=0.97),
              StepSpec("NG", lr=0.001, epochs=10, alpha=0.97)),
}


# --------------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------------

def memorization_key(values: np.ndarray, *, negative: bool) -> np.ndarray:
    """A key that rises with memorization: ``values`` (scores or a positive proxy) or ``-values``
    (a negatively correlated proxy such as confidence). Non-finite values (the entropy proxy's
    NaNs, which come from 0·log 0 terms of very confident predictions) get ``-inf``: the lowest
    memorization, processed first."""
    v = np.asarray(values, dtype=np.float64)
    key = -v if negative else v.copy()
    key[~np.isfinite(v)] = -np.inf
    return key


def group_sizes(n: int, k: int) -> list[int]:
    """Sizes in processing order (low -> high): the least memorized group takes the remainder."""
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} ids into {k} non-empty groups")
    base = n // k
    return [n - (k - 1) * base] + [base] * (k - 1)


def refine(forget_ids: np.ndarray, key: np.ndarray, k: int) -> list[np.ndarray]:
    """K memorization groups of ``forget_ids`` in processing order, low -> high (see the module
    docstring). ``key[i]`` is the memorization key of ``forget_ids[i]``; within a group the ids
    keep the descending-key order."""
    ids = np.asarray(forget_ids, dtype=np.int64)
    key = np.asarray(key, dtype=np.float64)
    if key.shape != ids.shape:
        raise ValueError(f"key must align with forget_ids: {key.shape} vs {ids.shape}")
    sizes = group_sizes(len(ids), k)
    desc = ids[np.argsort(-key, kind="stable")]
    # descending order: high parts first (n // K each), the least memorized part (the remainder) last
    cuts = np.cumsum(sizes[::-1])[:-1]
    return [g.copy() for g in np.split(desc, cuts)][::-1]


def shuffled_groups(forget_ids: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """The shuffle baseline: a ``RandomState(seed)`` permutation of ``forget_ids`` cut into groups
    of ``sizes`` (processing order)."""
    ids = np.asarray(forget_ids, dtype=np.int64)
    if sum(sizes) != len(ids):
        raise ValueError(f"sizes {list(sizes)} do not add up to {len(ids)}")
    perm = ids[np.random.RandomState(int(seed)).permutation(len(ids))]
    return [g.copy() for g in np.split(perm, np.cumsum(sizes)[:-1])]


def step_retain_sets(retain_ids: np.ndarray, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Retain set of each step j: ``retain_ids`` (all training ids minus the whole forget set) plus
    the groups still to come (j+1..K-1); sorted. The groups must be disjoint and outside retain."""
    retain = np.asarray(retain_ids, dtype=np.int64)
    out = []
    for j in range(len(groups)):
        later = [np.asarray(g, np.int64) for g in groups[j + 1:]]
        out.append(np.sort(np.concatenate([retain, *later])) if later else np.sort(retain))
    return out


def group_labels(k: int, shuffle: bool = False) -> list[str]:
    """Names of the groups in processing order: low/mid/high for K = 3, low/high for K = 2,
    q1..qK otherwise (q1 the least memorized); r1..rK for shuffled groups."""
    if shuffle:
        return [f"r{j + 1}" for j in range(k)]
    if k == 3:
        return ["low", "mid", "high"]
    if k == 2:
        return ["low", "high"]
    if k == 1:
        return ["all"]
    return [f"q{j + 1}" for j in range(k)]


# --------------------------------------------------------------------------------------------
# The plan: one method and its hyper-parameters per group
# --------------------------------------------------------------------------------------------

@dataclass
class StepHparams:
    method: str
    lr: float
    epochs: int
    alpha: float


def resolve_steps(k: int, *, methods: Sequence[str] | None, unlearn: str | None, default: Sequence[StepSpec],
                  rum_lr: Sequence[float] | None, rum_epochs: Sequence[int] | None,
                  rum_alpha: Sequence[float] | None, lr: float | None, epochs: int | None, alpha: float | None,
                  flag_defaults: tuple[float, int, float]) -> tuple[list[StepHparams], str]:
    """Method and hyper-parameters of each of the K steps; returns ``(steps, source)``.

    Methods: ``methods`` (``--rum_methods``) when given, else ``unlearn`` (``--unlearn M``: M for
    every group), else the script's default plan (``source`` "default"). Each hyper-parameter of
    step j: ``--rum_<x>[j]`` when given, else the global flag when given on the command line
    (``lr``/``epochs``/``alpha`` are None when not given), else the default plan's value (default
    plan only), else the flag's default (``flag_defaults`` = --unlearn_lr, --unlearn_epochs,
    --alpha). The list lengths must already equal K (main_rum.py checks them)."""
    if methods is not None:
        names, plan, source = list(methods), None, "rum_methods"
    elif unlearn is not None:
        names, plan, source = [unlearn] * k, None, "unlearn"
    else:
        plan, source = list(default), "default"
        names = [s.method for s in plan]
    out = []
    for j, m in enumerate(names):
        spec = plan[j] if plan is not None else StepSpec(m)

        def pick(lst, glob, own, dflt):
            if lst is not None:
                return lst[j]
            if glob is not None:
                return glob
            return own if own is not None else dflt

        out.append(StepHparams(method=m, lr=float(pick(rum_lr, lr, spec.lr, flag_defaults[0])),
                               epochs=int(pick(rum_epochs, epochs, spec.epochs, flag_defaults[1])),
                               alpha=float(pick(rum_alpha, alpha, spec.alpha, flag_defaults[2]))))
    return out, source


def _num(v: float) -> str:
    return f"{v:g}"


def rum_tag(steps: Sequence[StepHparams], *, grouping: str, shuffle: bool, common: Sequence[str] = (),
            mask_ratio: float | None = None, mask_order: str = "largest", scrub: str | None = None) -> str:
    """``RUM_<m0>-<m1>-..._<grouping>[_shuffle]_lr<..>_ep<..>[_alpha<..>][_<scrub>][_q<ratio>][_<common>]``,
    e.g. ``RUM_none-FT-RL_mem_lrx-0.1-0.1_epx-10-5_q0.5_sgd`` or
    ``RUM_NG-NG-NG_proxy-confidence_lr0.01-0.01-0.001_ep5-5-10_alpha0.99-0.97-0.97_sgd``: per-step
    values in processing order, ``x`` where a step has no such value (none; wfisher's lr/epochs;
    alpha of a method without one)."""
    methods = [s.method for s in steps]
    parts = ["RUM", "-".join(methods), grouping]
    if shuffle:
        parts.append("shuffle")
    it = [s.method not in (NONE,) + NOT_ITERATIVE for s in steps]
    parts.append("lr" + "-".join(_num(s.lr) if i else "x" for s, i in zip(steps, it)))
    parts.append("ep" + "-".join(str(s.epochs) if i else "x" for s, i in zip(steps, it)))
    if any(m in ALPHA_METHODS for m in methods):
        parts.append("alpha" + "-".join(_num(s.alpha) if s.method in ALPHA_METHODS else "x" for s in steps))
    if scrub and "SCRUB" in methods:
        parts.append(scrub)
    if "RL" in methods and mask_ratio is not None:
        parts.append(f"q{_num(mask_ratio)}" + ("" if mask_order == "largest" else f"-{mask_order}"))
    parts += list(common)
    return "_".join(parts)


# --------------------------------------------------------------------------------------------
# The meta step
# --------------------------------------------------------------------------------------------

@dataclass
class Step:
    """What step ``index`` does: ``method`` on ``forget_ids`` with ``retain_ids``."""

    index: int
    label: str
    method: str
    forget_ids: np.ndarray
    retain_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # anything the executor needs (hyper-parameters)


@dataclass
class StepResult:
    step: Step
    seconds: float  # the step's unlearning time (0 for none)
    info: dict[str, Any] = field(default_factory=dict)  # what the executor reports (mask fraction, ...)


StepFn = Callable[[nn.Module, Step], tuple[nn.Module, float, dict[str, Any]]]
Hook = Callable[[nn.Module, Step, "StepResult | None"], None]


def run_meta(model: nn.Module, steps: Sequence[Step], execute: StepFn, *,
             after_step: Hook | None = None) -> tuple[nn.Module, list[StepResult]]:
    """Run the steps in order, each from the model the previous one produced (DESIGN.md §7.7).

    ``execute(model, step) -> (model, seconds, info)`` unlearns one group (it may modify ``model``
    in place or return another); a ``none`` step is not executed: the model passes on untouched
    and its time is 0. ``after_step(model, step, result)`` runs after every step (evaluation and
    the step's run directory); its time is not counted."""
    results = []
    for step in steps:
        if step.method == NONE:
            res = StepResult(step, 0.0, {})
        else:
            model, seconds, info = execute(model, step)
            res = StepResult(step, float(seconds), dict(info))
        results.append(res)
        if after_step is not None:
            after_step(model, step, res)
    return model, results


__all__ = ["NONE", "STEP_METHODS", "DEFAULT_PLANS", "DEFAULT_MASK_RATIO", "StepSpec", "StepHparams", "Step",
           "StepResult", "memorization_key", "group_sizes", "refine", "shuffled_groups", "step_retain_sets",
           "group_labels", "resolve_steps", "rum_tag", "run_meta"]
