"""``raw`` / ``original``: no update (upstream-spec §5.8-9).

The model given by ``--mask`` is evaluated as it is: the "original model" row of the tables.
"""
from __future__ import annotations

from unlearn.base import UnlearnConfig, UnlearnTask


def unlearn(task: UnlearnTask, cfg: UnlearnConfig) -> None:
    """Leave ``task.model`` untouched."""
    return None
