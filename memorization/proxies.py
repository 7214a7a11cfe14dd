"""The one registry of memorization proxies: every list of proxy names, sign and producer derives
from :data:`PROXIES`.

A proxy is a cheap stand-in for the memorization score of a training example. The four
learning-event proxies are recorded while pretraining (memorization/learning_events.py, written to
``proxies.npz`` beside the model); ``ho_ret`` and ``curvature`` need extra computation
(memorization/computed_proxies.py, written by ``main_memorization.py --proxies``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Proxy:
    """A memorization proxy: ``negative`` when it falls as memorization rises (a high value means a
    well-learned, little-memorized example); ``producer`` is what writes its values."""

    negative: bool
    producer: str  # "pretraining" (proxies.npz beside the model) | "main_memorization" (<ckpts>/memorization)
    help: str


# The one proxy registry: every list of proxy names, sign and producer derives from it.
PROXIES: dict[str, Proxy] = {
    "confidence": Proxy(True, "pretraining", "mean softmax probability of the true label over training"),
    "max_conf": Proxy(True, "pretraining", "mean maximum softmax probability over training"),
    "entropy": Proxy(True, "pretraining", "mean negative prediction entropy over training"),
    "bi_acc": Proxy(True, "pretraining", "fraction of training passes that classified the example correctly"),
    "ho_ret": Proxy(False, "main_memorization", "holdout retraining: symmetric KL before/after fine-tuning without it"),
    "curvature": Proxy(False, "main_memorization", "loss curvature around the example (finite differences)"),
}
PROXY_SIGN: dict[str, bool] = {name: p.negative for name, p in PROXIES.items()}
LEARNING_EVENT_PROXIES = tuple(n for n, p in PROXIES.items() if p.producer == "pretraining")
COMPUTED_PROXIES = tuple(n for n, p in PROXIES.items() if p.producer == "main_memorization")
