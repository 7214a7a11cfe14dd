"""``--release`` in the mask stage (generate_mask.py, stages/mask.py) and in the unlearning config
(stages/configs.unlearn_config -> unlearn.release.release_config): the release's mask is the
smallest-saliency fraction (upstream-spec §6.1-5) of the gradient accumulated over its shuffled,
augmented forget loader (§6.1-4); its unlearning optimizer is AdamW and its mask soft (§5.7, §5.9)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generate_mask
from arg_parser import parse_args
from models import build_model
from stages import configs
from stages.mask import gradient_batches, mask_order, mask_targets
from trainer.mask import is_release_mask
from unlearn.saliency import forget_gradients, load_mask, read_mask_file, saliency_masks
from utils.batches import iterate
from utils.cli import run_main
from utils.data import load_data

COMMON = ["--dataset", "digits", "--arch", "cnn_s", "--epochs", "5", "--batch_size", "64"]


def _args(*extra):
    return parse_args([*COMMON, *extra], prog="generate_mask.py")


def test_release_forces_the_smallest_order_and_names_the_files(tmp_path):
    default = _args("--save_dir", str(tmp_path))
    assert mask_order(default) == "largest" and gradient_batches(default, load_data("digits")) == {}
    rel = _args("--save_dir", str(tmp_path), "--release", "--mask_ratio", "0.5")
    assert mask_order(rel) == "smallest"
    _, targets = mask_targets(rel)
    assert targets == {0.5: tmp_path / "mask_smallest_0.5_release.pt"}
    data = load_data("digits")
    kw = gradient_batches(rel, data)
    assert kw["shuffle"] and kw["augment"] == data.augment
    assert kw["generator"].initial_seed() == rel.seed
    assert gradient_batches(_args("--save_dir", str(tmp_path), "--release", "--no_aug"), data)["augment"] is None


def _digits_model(seed=0):
    data = load_data("digits")
    torch.manual_seed(seed)
    model = build_model("cnn_s", data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                        mean=data.mean, std=data.std)
    return model, data


def test_release_gradients_are_the_sum_over_the_shuffled_augmented_batches():
    """|sum_b grad(-CE_b)| over the batches a seeded shuffled, augmented pass draws, by hand."""
    model, data = _digits_model()
    ids = data.train_ids[:150]
    got = forget_gradients(model, data, ids, "cpu", 64, shuffle=True, augment=data.augment,
                           generator=torch.Generator().manual_seed(7))
    model.eval()
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    sizes = []
    for b in iterate(data.x, data.y, ids, 64, shuffle=True, generator=torch.Generator().manual_seed(7),
                     augment=data.augment):
        sizes.append(len(b.y))
        model.zero_grad()
        (-F.cross_entropy(model(b.x), b.y)).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad
    assert sizes == [64, 64, 22]
    for n in acc:
        torch.testing.assert_close(got[n], acc[n].abs(), rtol=1e-5, atol=1e-7)
    plain = forget_gradients(model, data, ids, "cpu", 64)
    assert any(not torch.allclose(plain[n], got[n]) for n in got)  # order and augmentation matter


def test_generate_mask_release_end_to_end(tmp_path, monkeypatch, capsys):
    model, data = _digits_model(1)
    model_file = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict()}, model_file)
    out = tmp_path / "masks"
    argv = ["--save", str(out), "--num_indexes_to_replace", "60", "--mask_ratio", "0.3", "--release", "--seed", "3",
            "--mask", str(model_file), *COMMON, "--ckpts", str(tmp_path / "ck")]
    monkeypatch.setattr(sys, "argv", ["generate_mask.py", *argv])
    with pytest.raises(SystemExit) as e:
        run_main(generate_mask.main)
    assert e.value.code in (0, None)
    path = out / "mask_smallest_0.3_release.pt"
    assert capsys.readouterr().out.split() == [str(path)]
    mask = load_mask(path, model)
    _, man = read_mask_file(path)
    assert (man["order"], man["release"], man["seed"], man["augment"], man["ratio"]) == ("smallest", True, 3, True, 0.3)
    forget = np.load(man["forget_set"])["forget_ids"]
    grads = forget_gradients(model, data, forget, "cpu", 64, shuffle=True, augment=data.augment,
                             generator=torch.Generator().manual_seed(3))
    ref = saliency_masks(grads, [0.3], "smallest")[0.3]
    assert all(torch.equal(mask[n], ref[n]) for n in ref)
    # a rerun finds the file holding this mask
    with pytest.raises(SystemExit) as e:
        run_main(generate_mask.main)
    assert e.value.code in (0, None) and "nothing to do" in capsys.readouterr().err


def test_unlearn_config_with_release():
    model, _ = _digits_model()
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    args = parse_args(["--unlearn", "NG", "--release", "--unlearn_lr", "0.02", *COMMON], prog="main_forget.py")
    cfg = configs.unlearn_config(args, mask)
    assert cfg.release and cfg.optimizer == "adamw" and cfg.lr == 0.02 and is_release_mask(cfg.mask)
    plain = configs.unlearn_config(parse_args(["--unlearn", "NG", *COMMON], prog="main_forget.py"), mask)
    assert not plain.release and plain.optimizer == "sgd" and not is_release_mask(plain.mask)
