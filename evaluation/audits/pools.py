"""The shadow pools LiRA's shadow models can be drawn with (:mod:`evaluation.audits.shadows`
describes each); kept free of heavy imports so the command line can list them."""
from __future__ import annotations

__all__ = ["POOLS", "DEFAULT_POOL"]

POOLS = ("retrain", "forget", "all")
DEFAULT_POOL = "retrain"
