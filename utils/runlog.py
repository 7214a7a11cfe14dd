"""A run's per-epoch history, ``log.jsonl`` (DESIGN.md §6): one JSON object per finished epoch.

:class:`EpochLog` rewrites the whole file atomically after each row (as trainer/fit.py does for
pretraining and retrain), so a killed run leaves a complete log of the epochs it finished, and
mirrors each row to a W&B run when one is given (:mod:`utils.wandb_log`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from utils.io import atomic_write_bytes, json_default


def write_rows(path: Path, rows: list[Mapping[str, Any]]) -> None:
    """``rows`` as JSON lines, replacing ``path`` atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r, default=json_default) + "\n" for r in rows).encode())


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``log.jsonl`` ([] when there is none)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class EpochLog:
    """Callable with one history row: appends it to ``path`` (rewritten atomically) and logs it to
    ``mirror`` (a :class:`utils.wandb_log.WandbRun`) with its keys prefixed by ``prefix``."""

    def __init__(self, path: Path, *, mirror: Any = None, prefix: str = "") -> None:
        self.path, self.mirror, self.prefix = Path(path), mirror, prefix
        self.rows: list[dict] = []

    def __call__(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        write_rows(self.path, self.rows)
        if self.mirror is not None:
            self.mirror.log(row, self.prefix)


__all__ = ["EpochLog", "read_rows", "write_rows"]
