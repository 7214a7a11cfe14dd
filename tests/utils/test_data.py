"""utils/data.py: the per-class validation split, digits, CIFAR-10/100 from torchvision's on-disk
format, and the error for a missing data directory (DESIGN.md §3, upstream-spec §4.4)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from utils.data import NORMALIZATION, canonical_dataset, load_data, validation_split
from utils.errors import UserError


def _reference_split(labels, seed):
    """upstream-spec §4.4 in plain Python: for c in 0..max, RandomState(seed).choice of int(0.1 n_c)
    indices of class c, concatenated in class order; train = the ascending set difference."""
    rng = np.random.RandomState(seed)
    valid = []
    for c in range(max(labels) + 1):
        idx = [i for i, t in enumerate(labels) if t == c]
        valid += list(rng.choice(idx, int(0.1 * len(idx)), replace=False))
    train = sorted(set(range(len(labels))) - set(valid))
    return train, valid


# Classes 0..5 of sizes 23, 10, 9, 31, 0, 17: class 2 (9 members) contributes nothing, class 4 is
# empty, and the draws of the later classes must still follow the reference.
def _labels():
    rng = np.random.RandomState(7)
    lab = np.repeat([0, 1, 2, 3, 5], [23, 10, 9, 31, 17])
    return rng.permutation(lab)


@pytest.mark.parametrize("seed", [1, 2, 123])
def test_validation_split_matches_reference(seed):
    labels = _labels()
    train, val = validation_split(labels, seed)
    ref_train, ref_valid = _reference_split(labels.tolist(), seed)
    assert val.dtype == np.int64 and train.dtype == np.int64
    assert val.tolist() == sorted(int(v) for v in ref_valid)
    assert train.tolist() == ref_train
    counts = {c: int((labels[val] == c).sum()) for c in range(6)}
    assert counts == {0: 2, 1: 1, 2: 0, 3: 3, 4: 0, 5: 1}


def test_validation_split_partition():
    labels = _labels()
    train, val = validation_split(labels, 1)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.union1d(train, val), np.arange(len(labels)))
    # another seed draws another split of the same sizes
    _, val2 = validation_split(labels, 2)
    assert len(val2) == len(val) and not np.array_equal(val2, val)


def test_digits():
    from sklearn.datasets import load_digits

    d = load_data("digits")
    assert d.name == "digits" and d.num_classes == 10
    assert d.x.dtype == torch.uint8 and tuple(d.x.shape) == (1437, 1, 8, 8)
    assert d.test_x.dtype == torch.uint8 and tuple(d.test_x.shape) == (360, 1, 8, 8)
    assert d.y.dtype == torch.int64 and len(d.y) == 1437 and len(d.test_y) == 360
    assert np.array_equal(np.union1d(d.train_ids, d.val_ids), np.arange(1437))
    assert len(np.intersect1d(d.train_ids, d.val_ids)) == 0
    ref_train, ref_val = _reference_split(d.y.tolist(), 1)
    assert d.train_ids.tolist() == ref_train and d.val_ids.tolist() == sorted(ref_val)
    # global id i is the i-th image of the training split (sklearn indices not divisible by 5)
    sk = load_digits()
    keep = np.arange(1797) % 5 != 0
    assert np.array_equal(d.y.numpy(), sk.target[keep])
    assert np.array_equal(d.x[0, 0].numpy(), np.round(sk.images[1] * 255 / 16).astype(np.uint8))
    assert np.array_equal(d.test_x[1, 0].numpy(), np.round(sk.images[5] * 255 / 16).astype(np.uint8))
    assert int(d.x.max()) == 255 and (d.in_channels, d.image_size) == (1, 8)
    assert (d.mean, d.std) == NORMALIZATION["digits"]
    assert d.augment == (1, False)


@pytest.mark.parametrize("name", ["CIFAR10", "cifar10", "Cifar10"])
def test_cifar10_generated(cifar_data, name):
    root, arrays = cifar_data
    a = arrays["cifar10"]
    d = load_data(name, root)
    assert d.name == "cifar10" and d.num_classes == 10
    assert d.x.dtype == torch.uint8 and tuple(d.x.shape) == (100, 3, 32, 32)
    assert np.array_equal(d.x.numpy(), a["x"]) and np.array_equal(d.y.numpy(), a["y"])
    assert np.array_equal(d.test_x.numpy(), a["test_x"]) and np.array_equal(d.test_y.numpy(), a["test_y"])
    # 10 images per class -> 1 per class in validation
    assert len(d.val_ids) == 10 and sorted(d.y.numpy()[d.val_ids].tolist()) == list(range(10))
    assert len(d.train_ids) == 90
    assert d.augment == (4, True) and (d.in_channels, d.image_size) == (3, 32)


def test_cifar100_generated(cifar_data):
    root, arrays = cifar_data
    a = arrays["cifar100"]
    d = load_data("CIFAR100", root, split_seed=3)
    assert d.name == "cifar100" and d.num_classes == 100
    assert tuple(d.x.shape) == (1000, 3, 32, 32) and tuple(d.test_x.shape) == (200, 3, 32, 32)
    assert np.array_equal(d.x.numpy(), a["x"]) and np.array_equal(d.y.numpy(), a["y"])  # fine labels
    assert np.array_equal(d.test_y.numpy(), a["test_y"])
    ref_train, ref_val = _reference_split(a["y"].tolist(), 3)
    assert d.train_ids.tolist() == ref_train and d.val_ids.tolist() == sorted(ref_val)
    assert len(d.val_ids) == 100


def test_generated_files_are_torchvision_format(cifar_data, monkeypatch):
    """torchvision's own reader (its md5 check bypassed) reads the generated files as we do."""
    tvc = pytest.importorskip("torchvision.datasets.cifar")
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    root, _ = cifar_data
    for cls, sub, name in ((tvc.CIFAR10, "cifar10", "cifar10"), (tvc.CIFAR100, "cifar100", "cifar100")):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
        ours = load_data(name, root)
        for train, x, y in ((True, ours.x, ours.y), (False, ours.test_x, ours.test_y)):
            tv = cls(str(root / sub), train=train)
            assert np.array_equal(tv.data, x.numpy().transpose(0, 2, 3, 1))
            assert np.array_equal(np.asarray(tv.targets), y.numpy())


@pytest.mark.parametrize("name,path", [("cifar10", "cifar10/cifar-10-batches-py"),
                                       ("cifar100", "cifar100/cifar-100-python")])
def test_missing_data_dir_names_path(tmp_path, name, path):
    with pytest.raises(UserError) as e:
        load_data(name, tmp_path)
    msg = str(e.value)
    assert str(tmp_path / path) in msg and "--data" in msg and "\n" not in msg


def test_incomplete_archive_names_file(tmp_path, cifar_data):
    root, _ = cifar_data
    shutil.copytree(root / "cifar10", tmp_path / "cifar10")
    (tmp_path / "cifar10/cifar-10-batches-py/data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_data("cifar10", tmp_path)


def test_unknown_dataset():
    with pytest.raises(UserError, match="--dataset 'mnist'"):
        canonical_dataset("mnist")
    assert canonical_dataset("Tiny-ImageNet") == "tinyimagenet"
