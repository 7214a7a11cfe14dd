"""The per-example evaluation pass (trainer.evaluate.predict, main_train.py's outputs.npz) against a
straightforward reference: ``model.eval()``, ``torch.no_grad()``, float NCHW batches of 512 in id
order. On digits the outputs are bitwise equal; on CIFAR-shaped images (3 channels, channels_last
in a ResNet) equal to float precision with the same predictions. Always float32, also inside a
caller's bf16 autocast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_for, build_model
from trainer.device import prepare_model
from trainer.evaluate import eval_batch_size, predict, predict_split
from trainer.fit import Recipe, fit
from utils.data import load_data

DEV = torch.device("cpu")


def reference(model, x, y, ids, batch_size=512):
    """What the pass computed before: eval mode, no_grad, float32 NCHW batches, logits to the host."""
    was = model.training
    model.eval()
    logits = []
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            gid = torch.as_tensor(np.asarray(ids[s:s + batch_size], np.int64))
            logits.append(model(x[gid].float().div_(255)).float().cpu())
    model.train(was)
    return torch.cat(logits).numpy(), y[torch.as_tensor(np.asarray(ids, np.int64))].numpy()


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module", params=["mlp", "cnn_s"])
def trained(request, digits):
    torch.manual_seed(0)
    model = prepare_model(build_for(request.param, digits), DEV)
    fit(model, digits, digits.train_ids, Recipe(epochs=1, batch_size=64), seed=0, device=DEV, log=lambda s: None)
    return model


def test_digits_outputs_are_bitwise_equal_to_the_reference(trained, digits):
    for split, ids in (("train", digits.train_ids), ("train", digits.val_ids), ("test", None)):
        logits, labels = predict_split(trained, digits, split, ids, device=DEV)
        x, y = (digits.x, digits.y) if split == "train" else (digits.test_x, digits.test_y)
        ref_logits, ref_labels = reference(trained, x, y, ids if ids is not None else np.arange(len(y)))
        assert logits.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(logits, ref_logits)
        np.testing.assert_array_equal(labels, ref_labels)
        assert trained.training  # the mode is restored


def test_cifar_shaped_outputs_equal_the_reference_to_float_precision():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    torch.manual_seed(0)
    model = prepare_model(build_model("resnet20s", 10, mean=(0.5,) * 3, std=(0.25,) * 3), DEV)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            model(x[:64].float() / 255)
    ids = np.random.RandomState(0).permutation(300)[:250]  # unsorted, not contiguous
    logits, labels = predict(model, x, y, ids, batch_size=100, device=DEV)
    ref_logits, ref_labels = reference(model, x, y, ids)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))
    np.testing.assert_array_equal(labels, ref_labels)


def test_float32_inside_a_bf16_autocast(trained, digits):
    ids = digits.val_ids
    plain, _ = predict(trained, digits.x, digits.y, ids, device=DEV)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, _ = predict(trained, digits.x, digits.y, ids, device=DEV)
    assert inside.dtype == np.float32
    np.testing.assert_array_equal(inside, plain)


def test_no_ids_and_batch_sizes(trained, digits):
    logits, labels = predict(trained, digits.x, digits.y, np.zeros(0, np.int64), device=DEV)
    assert logits.shape == (0, 10) and labels.shape == (0,)
    assert eval_batch_size((50000, 3, 32, 32)) == 1024
    assert eval_batch_size((1797, 1, 8, 8)) == 1024
    assert eval_batch_size((1000, 3, 64, 64)) == 256
    assert eval_batch_size((1000, 3, 224, 224)) == 64


def test_main_train_outputs_equal_the_reference(tmp_path, monkeypatch, digits):
    """outputs.npz of a real main_train.py run: float32 logits, equal to the reference pass of the
    saved model."""
    import main_train

    monkeypatch.chdir(tmp_path)
    assert main_train.main(["--dataset", "digits", "--arch", "cnn_s", "--epochs", "1", "--batch_size", "128",
                            "--device", "cpu", "--save_dir", "out"]) == 0
    (run,) = (tmp_path / "out").iterdir()
    model = build_for("cnn_s", digits)
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True)["state_dict"])
    model = prepare_model(model, DEV)
    with np.load(run / "outputs.npz") as z:
        for name, (x, y) in {"train": (digits.x, digits.y), "val": (digits.x, digits.y),
                             "test": (digits.test_x, digits.test_y)}.items():
            assert z[f"{name}_logits"].dtype == np.float32
            ref_logits, ref_labels = reference(model, x, y, z[f"{name}_ids"])
            np.testing.assert_array_equal(z[f"{name}_logits"], ref_logits)
            np.testing.assert_array_equal(z[f"{name}_labels"], ref_labels)
