"""The memorization level of every forget example, for the audits' breakdown.

A forget set of kind ``mem`` or ``proxy`` and level low, mid or high holds examples of that
level only. A ``mix`` set is ``high[:n//3] + mid[:n//3] + low[-(n//3):]`` of the memorization
groups (:func:`forget_sets.select.select_level`); given the groups its examples are labelled by
the group that put them there (high first, as the set dropped repeats keeping the first). Any
other forget set (random, class-wise, ES, a shuffled mix, a mix without its score file) is one
level, ``all``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["LEVEL_ORDER", "example_levels"]

LEVEL_ORDER = ("all", "low", "mid", "high", "mix")


def example_levels(forget_ids: np.ndarray, kind: str | None, level: str | None,
                   groups: Mapping[str, np.ndarray] | None = None, n: int | None = None) -> np.ndarray:
    """Labels (``"low" | "mid" | "high" | "all"``) of ``forget_ids``.

    Args:
        forget_ids: the forget set's global ids.
        kind, level: the forget set's manifest ``kind`` and ``level``.
        groups: for a mix set, :func:`forget_sets.select.memorization_groups` of its score file.
        n: the set's ``n`` (group size the mix was cut from).
    """
    ids = np.asarray(forget_ids, np.int64)
    out = np.full(len(ids), "all", dtype=object)
    if kind not in ("mem", "proxy") or level is None:
        return out
    if level in ("low", "mid", "high"):
        out[:] = level
        return out
    if level == "mix" and groups is not None and n:
        third = int(n) // 3
        parts = (("high", np.asarray(groups["high"])[:third]), ("mid", np.asarray(groups["mid"])[:third]),
                 ("low", np.asarray(groups["low"])[len(groups["low"]) - third:] if third else np.zeros(0)))
        done = np.zeros(len(ids), bool)
        for name, g in parts:
            hit = np.isin(ids, g) & ~done
            out[hit] = name
            done |= hit
    return out
