"""evaluation/evaluate.py: accuracies, MIA-efficacy, collapse flag and outputs of a model on a forget set."""
import numpy as np
import pytest
import torch

from models import build_model
from trainer.evaluate import predict
from utils.data import load_data
from evaluation.evaluate import SUBSETS, evaluate
from forget_sets.file import make_forget_set
from evaluation.mia import FEATURES


@pytest.fixture(scope="module")
def data():
    return load_data("digits")


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    m = build_model("mlp", 10, in_channels=1, image_size=8, mean=data.mean, std=data.std)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = data.x[data.train_ids[:600]].float() / 255
    y = data.y[data.train_ids[:600]]
    for _ in range(60):  # a partly trained model: accuracies differ between splits
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m


def _acc(model, data, ids, test=False):
    x, y = (data.test_x, data.test_y) if test else (data.x, data.y)
    logits, labels = predict(model, x, y, ids)
    return float((logits.argmax(1) == labels).mean())


def test_metrics_and_outputs(data, model):
    forget = data.train_ids[::20]
    extras = {"high_mem": data.train_ids[:30], "mid_mem": data.train_ids[100:130], "low_mem": data.train_ids[-30:]}
    fs = make_forget_set(data.train_ids, forget, {"dataset": "digits", "kind": "mem", "level": "high"}, extras)
    ev = evaluate(model, data, fs, "cpu", seed=0)
    m = ev.metrics
    assert set(m) == {"accuracy", "mia", "collapsed"}
    assert set(m["accuracy"]) == {"retain", "forget", "val", "test", *SUBSETS}
    assert set(m["mia"]) == set(FEATURES)
    assert all(0.0 <= v <= 1.0 for v in m["mia"].values())
    assert m["accuracy"]["forget"] == pytest.approx(_acc(model, data, fs.forget_ids))
    assert m["accuracy"]["retain"] == pytest.approx(_acc(model, data, fs.retain_ids))
    assert m["accuracy"]["val"] == pytest.approx(_acc(model, data, data.val_ids))
    assert m["accuracy"]["test"] == pytest.approx(_acc(model, data, np.arange(len(data.test_y)), test=True))
    for k in SUBSETS:
        assert m["accuracy"][k] == pytest.approx(_acc(model, data, extras[k]))
    assert m["collapsed"] is False
    for name, ids in (("retain", fs.retain_ids), ("forget", fs.forget_ids), ("val", data.val_ids)):
        got_ids, logits, labels = ev.outputs[name]
        assert got_ids.tolist() == ids.tolist()
        want, _ = predict(model, data.x, data.y, ids)
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
        assert labels.tolist() == data.labels(ids).tolist()
    assert ev.outputs["test"][0].tolist() == list(range(len(data.test_y)))
    # deterministic: the same seed gives the same MIA
    assert evaluate(model, data, fs, "cpu", seed=0).metrics["mia"] == m["mia"]


def test_no_subsets_collapsed_and_class_removal(data):
    torch.manual_seed(1)
    dead = build_model("mlp", 10, in_channels=1, image_size=8, mean=data.mean, std=data.std)
    with torch.no_grad():
        dead.fc.weight.zero_()
        dead.fc.bias.copy_(torch.arange(10, dtype=torch.float32))  # always predicts class 9
    labels = data.labels(data.train_ids)
    fs = make_forget_set(data.train_ids, data.train_ids[labels == 3],
                         {"dataset": "digits", "kind": "class", "classes": [3], "n": None})
    ev = evaluate(dead, data, fs, "cpu", mia=False)
    m = ev.metrics
    assert set(m["accuracy"]) == {"retain", "forget", "val", "test"}
    assert m["collapsed"] is True and m["mia"] == {k: None for k in FEATURES}
    assert m["test_classes_removed"] == [3]
    test_ids = ev.outputs["test"][0]
    assert 3 not in set(data.test_y.numpy()[test_ids].tolist())
    assert len(test_ids) == int((data.test_y != 3).sum())
    assert m["accuracy"]["forget"] == 0.0
