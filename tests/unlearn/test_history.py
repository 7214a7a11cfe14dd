"""Per-epoch history of the iterative methods (run_epochs, NG, SCRUB): the rows handed to
``cfg.on_epoch`` (the run's log.jsonl), and their accuracies against a hand evaluation."""
import numpy as np
import pytest
import torch

from models import build_model
from trainer.evaluate import predict
from trainer.optim import SamConfig
from unlearn import get_method
from unlearn.base import SeenAccuracy, UnlearnConfig, UnlearnTask

from helpers import TOY_C as C, TOY_FORGET as FORGET, TOY_RETAIN as RETAIN, toy_data as _data


def _task(data, seed=0):
    torch.manual_seed(seed)
    model = build_model("mlp", C, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    return UnlearnTask(model, data, FORGET, RETAIN, torch.device("cpu"), seed, torch.Generator().manual_seed(seed))


def _acc(model, data, ids):
    logits, labels = predict(model, data.x, data.y, ids)
    return float((logits.argmax(1) == labels).mean())


# which accuracies each method's history holds
KEYS = {"FT": {"retain_acc"}, "FT_l1": {"retain_acc"}, "GA": {"forget_acc"}, "RL_og": {"retain_acc", "forget_acc"},
        "NG": {"retain_acc", "forget_acc"}}


@pytest.mark.parametrize("method", list(KEYS))
def test_rows_with_a_frozen_model_match_a_hand_evaluation(method):
    """lr 0 and no augmentation: the model does not move, so the accuracies on the batches seen are
    the model's accuracies on the retain / forget sets (RL_og: against the TRUE labels; NG: batch 4 makes
    its 9 retain steps exactly 3 passes over the 12 forget examples)."""
    data = _data()
    task = _task(data)
    want = {"retain_acc": _acc(task.model, data, RETAIN), "forget_acc": _acc(task.model, data, FORGET)}
    rows = []
    cfg = UnlearnConfig(lr=0.0, epochs=2, batch_size=4, augment=False, alpha=0.9, on_epoch=rows.append)
    history = get_method(method)(task, cfg)
    assert len(rows) == 2 and [r["epoch"] for r in rows] == [1, 2]
    if history is not None:
        assert history == rows
    for r in rows:
        assert {k for k in r if k.endswith("_acc")} == KEYS[method]
        for k in KEYS[method]:
            assert r[k] == pytest.approx(want[k], abs=1e-6), k
        assert r["lr"] == 0.0 and np.isfinite(r["loss"]) and r["seconds"] >= 0


def test_ng_sam_and_sharp_minmax_rows():
    data = _data()
    for cfg in (UnlearnConfig(lr=0.05, epochs=2, batch_size=8, sam=SamConfig("min", rho=0.1)),
                UnlearnConfig(lr=0.05, epochs=2, batch_size=8, sam=SamConfig("min", rho=0.1), separate=("min", "max"),
                              mask={n: torch.rand(p.shape) < 0.5 for n, p in _task(data).model.named_parameters()})):
        rows = []
        cfg.on_epoch = rows.append
        get_method("NG")(_task(data), cfg)
        assert len(rows) == 2
        for r in rows:
            assert 0 <= r["retain_acc"] <= 1 and 0 <= r["forget_acc"] <= 1
            if cfg.separate:
                assert r["loss"] == pytest.approx(r["retain_loss"] + r["forget_loss"], rel=1e-5, abs=1e-6)


def test_scrub_rows_have_forget_accuracy_in_max_epochs_only():
    data = _data()
    rows = []
    get_method("SCRUB")(_task(data), UnlearnConfig(lr=0.01, epochs=3, batch_size=8, msteps=0, on_epoch=rows.append))
    assert [("forget_acc" in r, "max_loss" in r, "retain_acc" in r) for r in rows] == [
        (True, True, True), (False, False, True), (False, False, True)]


def test_seen_accuracy_splits_a_mixed_batch():
    data = _data()
    task = _task(data)
    seen = SeenAccuracy(task)
    ids = torch.tensor([0, 1, 2, 4])  # 0 and 4 are forget ids
    logits = torch.nn.functional.one_hot(data.y[ids], C).float()
    logits[1] = torch.nn.functional.one_hot((data.y[1] + 1) % C, C).float()  # retain id 1 wrong
    seen.update(ids, logits)
    assert seen.result() == {"retain_acc": 0.5, "forget_acc": 1.0}
    assert seen.result() == {}  # reset
