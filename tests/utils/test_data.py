"""utils/data.py: the per-class validation split, digits, CIFAR-10/100 from torchvision's on-disk
format (bytes or str pickle keys), SVHN, Tiny-ImageNet, and the one-line errors for missing or
damaged data files (DESIGN.md §3, upstream-spec §4.4)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_cifar
from PIL import Image

from utils.batches import Augment
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
    assert d.augment == Augment(1, False)


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
    assert d.augment == Augment(4, True) and (d.in_channels, d.image_size) == (3, 32)


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
    assert d.augment == Augment(4, True, randaugment=(2, 15))  # RandAugment(2, 15), upstream-spec §4.3


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


def _one_line_error(name: str, root: Path, *needles: str) -> str:
    """``load_data(name, root)`` raises a one-line UserError containing every needle; its message."""
    with pytest.raises(UserError) as e:
        load_data(name, root)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--data: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _str_key_copy(src: Path, dst: Path) -> None:
    """Rewrite every CIFAR pickle under ``src`` into ``dst`` as Python 3 writes it: str keys, str
    values for Python 2 strings, default protocol."""
    def conv(v):
        if isinstance(v, bytes):
            return v.decode()
        return [conv(t) for t in v] if isinstance(v, list) else v

    dst.mkdir(parents=True)
    for f in src.iterdir():
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        with open(dst / f.name, "wb") as fh:
            pickle.dump({k.decode(): conv(v) for k, v in d.items()}, fh)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_str_keys(tmp_path, hundred):
    """Pickles with str keys (written by Python 3; torchvision reads them too) load like the
    Python 2 files with bytes keys, train and test files alike."""
    name, sub = ("cifar100", "cifar100/cifar-100-python") if hundred else ("cifar10", "cifar10/cifar-10-batches-py")
    arrays = write_cifar(tmp_path / "b", hundred=hundred, per_file=200 if hundred else 20, n_test=100, seed=4)
    _str_key_copy(tmp_path / "b" / sub, tmp_path / "s" / sub)
    with open(tmp_path / "s" / sub / ("test" if hundred else "test_batch"), "rb") as fh:
        assert "data" in pickle.load(fh, encoding="bytes")  # really str keys
    as_bytes, as_str = load_data(name, tmp_path / "b"), load_data(name, tmp_path / "s")
    for attr, ref in (("x", "x"), ("y", "y"), ("test_x", "test_x"), ("test_y", "test_y")):
        a, b = getattr(as_bytes, attr), getattr(as_str, attr)
        assert a.dtype == b.dtype and torch.equal(a, b)
        assert np.array_equal(b.numpy(), arrays[ref])
    assert np.array_equal(as_bytes.val_ids, as_str.val_ids) and as_str.num_classes == (100 if hundred else 10)


def _rewrite(path: Path, **changes) -> None:
    """Load a CIFAR pickle (bytes keys), apply ``changes`` (None deletes a key), write it back."""
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    for k, v in changes.items():
        if v is None:
            del d[k.encode()]
        else:
            d[k.encode()] = v
    with open(path, "wb") as fh:
        pickle.dump(d, fh)


@pytest.mark.parametrize("damage,needles", [
    ("truncate", ["UnpicklingError"]),
    ("empty", ["EOFError"]),
    ("garbage", []),
    ("no_labels", ["no 'labels' entry"]),
    ("not_a_dict", ["holds a list, not a dict"]),
    ("odd_size", ["ValueError"]),
    ("label_range", ["label 10", "0..9"]),
    ("label_count", ["20 images but 19 labels"]),
])
def test_damaged_cifar_file_is_one_line_error(tmp_path, damage, needles):
    write_cifar(tmp_path, per_file=20, n_test=20, seed=2)
    p = tmp_path / "cifar10/cifar-10-batches-py/test_batch"
    raw = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        p.write_bytes(b"")
    elif damage == "garbage":
        p.write_bytes(np.random.RandomState(0).randint(0, 256, 5000).astype(np.uint8).tobytes())
    elif damage == "not_a_dict":
        p.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "no_labels":
        _rewrite(p, labels=None)
    elif damage == "odd_size":
        _rewrite(p, data=np.zeros((20, 3000), np.uint8))
    elif damage == "label_range":
        _rewrite(p, labels=[10] + [0] * 19)
    elif damage == "label_count":
        _rewrite(p, labels=[0] * 19)
    _one_line_error("cifar10", tmp_path, str(p), *needles)


# --- SVHN ----------------------------------------------------------------------------------------

def _write_svhn(root: Path, n: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/svhn/{train,test}_32x32.mat`` as distributed (X: uint8 [32, 32, 3, N], y: [N, 1] in
    1..10, 10 meaning digit 0); returns the expected arrays."""
    from scipy.io import savemat

    rng = np.random.RandomState(seed)
    (root / "svhn").mkdir(parents=True)
    out = {}
    for split, k in (("train", n), ("test", n_test)):
        X = rng.randint(0, 256, size=(32, 32, 3, k)).astype(np.uint8)
        y = (np.arange(k) % 10 + 1)[rng.permutation(k)].reshape(-1, 1).astype(np.uint8)
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": X, "y": y})
        out[split] = (X.transpose(3, 2, 0, 1), y.reshape(-1).astype(np.int64) % 10)
    return {"x": out["train"][0], "y": out["train"][1], "test_x": out["test"][0], "test_y": out["test"][1]}


def test_svhn(tmp_path):
    a = _write_svhn(tmp_path)
    d = load_data("svhn", tmp_path)
    assert d.num_classes == 10 and d.x.dtype == torch.uint8 and tuple(d.x.shape) == (30, 3, 32, 32)
    assert np.array_equal(d.x.numpy(), a["x"]) and np.array_equal(d.y.numpy(), a["y"])
    assert np.array_equal(d.test_x.numpy(), a["test_x"]) and np.array_equal(d.test_y.numpy(), a["test_y"])
    assert 0 in d.y.tolist() and 10 not in d.y.tolist() and d.augment == Augment(0, False)


@pytest.mark.parametrize("damage", ["random", "truncate", "empty", "no_X", "flat_X", "label_count"])
def test_damaged_svhn_file_is_one_line_error(tmp_path, damage):
    from scipy.io import savemat

    _write_svhn(tmp_path)
    p = tmp_path / "svhn" / "train_32x32.mat"
    raw = p.read_bytes()
    if damage == "random":
        p.write_bytes(np.random.RandomState(1).randint(0, 256, 20000).astype(np.uint8).tobytes())
    elif damage == "truncate":
        p.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        p.write_bytes(b"")
    elif damage == "no_X":
        savemat(p, {"y": np.ones((30, 1), np.uint8)})
    elif damage == "flat_X":
        savemat(p, {"X": np.zeros((30, 3072), np.uint8), "y": np.ones((30, 1), np.uint8)})
    elif damage == "label_count":
        savemat(p, {"X": np.zeros((32, 32, 3, 30), np.uint8), "y": np.ones((29, 1), np.uint8)})
    _one_line_error("svhn", tmp_path, str(p))


# --- Tiny-ImageNet -------------------------------------------------------------------------------

WNIDS = ("n02", "n01", "n03")  # wnids.txt order, not sorted: class i is the i-th line


def _write_tiny(root: Path, per_class: int = 3, n_val: int = 6, size: int = 64) -> Path:
    """A tiny ``root/tiny-imagenet-200`` in the official layout (wnids.txt, train/<wnid>/images/
    <wnid>_<i>.JPEG, val/images/val_<i>.JPEG and val/val_annotations.txt, one grayscale image);
    returns the folder."""
    rng = np.random.RandomState(0)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for w in WNIDS:
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        for i in rng.permutation(per_class):
            Image.fromarray(rng.randint(0, 256, (size, size, 3)).astype(np.uint8)).save(d / f"{w}_{i}.JPEG")
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i in range(n_val):
        arr = rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
        img = Image.fromarray(arr[..., 0], "L") if i == 1 else Image.fromarray(arr)
        img.save(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{WNIDS[(i * 2) % 3]}\t0\t0\t{size}\t{size}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def _decode(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1)


def test_tinyimagenet(tmp_path):
    folder = _write_tiny(tmp_path)
    d = load_data("tiny-imagenet", tmp_path)
    assert d.name == "tinyimagenet" and d.num_classes == 3 and tuple(d.x.shape) == (9, 3, 64, 64)
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(d.x[4].numpy(), _decode(folder / "train" / "n01" / "images" / "n01_1.JPEG"))
    assert tuple(d.test_x.shape) == (6, 3, 64, 64) and d.test_y.tolist() == [0, 2, 1, 0, 2, 1]
    assert np.array_equal(d.test_x[1].numpy(), _decode(folder / "val" / "images" / "val_1.JPEG"))
    assert torch.equal(d.test_x[1][0], d.test_x[1][2])  # grayscale -> 3 equal channels


def test_tinyimagenet_unknown_wnid_in_val_annotations(tmp_path):
    folder = _write_tiny(tmp_path)
    ann = folder / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[2] = lines[2].replace("\tn01\t", "\tn99\t")
    ann.write_text("\n".join(lines) + "\n")
    _one_line_error("tinyimagenet", tmp_path, str(ann), "line 3", "'n99'", str(folder / "wnids.txt"))


@pytest.mark.parametrize("damage", ["no_annotations", "bad_line", "missing_val_image", "corrupt_image",
                                    "other_size", "no_train_folder", "duplicate_wnid", "empty_wnids"])
def test_damaged_tinyimagenet_is_one_line_error(tmp_path, damage):
    folder = _write_tiny(tmp_path)
    ann = folder / "val" / "val_annotations.txt"
    if damage == "no_annotations":
        ann.unlink()
        needles = [str(ann)]
    elif damage == "bad_line":
        ann.write_text(ann.read_text() + "val_9.JPEG n01 0 0 64 64\n")  # spaces, not tabs
        needles = [str(ann), "line 7"]
    elif damage == "missing_val_image":
        (folder / "val" / "images" / "val_4.JPEG").unlink()
        needles = ["val_4.JPEG"]
    elif damage == "corrupt_image":
        (folder / "train" / "n03" / "images" / "n03_2.JPEG").write_bytes(b"not a jpeg")
        needles = ["n03_2.JPEG"]
    elif damage == "other_size":
        Image.new("RGB", (32, 48)).save(folder / "val" / "images" / "val_5.JPEG")
        needles = ["val_5.JPEG", "32x48", "64x64"]
    elif damage == "no_train_folder":
        shutil.rmtree(folder / "train" / "n01")
        needles = [str(folder / "train" / "n01" / "images"), "'n01'"]
    elif damage == "duplicate_wnid":
        (folder / "wnids.txt").write_text("n02\nn01\nn03\nn01\n")
        needles = ["wnids.txt", "'n01'"]
    else:
        (folder / "wnids.txt").write_text("\n")
        needles = ["wnids.txt"]
    _one_line_error("tinyimagenet", tmp_path, *needles)



@pytest.mark.parametrize("dataset", ["svhn", "tinyimagenet"])
def test_entry_script_reports_damage_in_one_line(tmp_path, monkeypatch, capsys, dataset):
    """Through ``main_train.py``: exit status 2, one ``prog: error:`` line naming the damaged file,
    no traceback, nothing written."""
    import main_train
    from helpers import run_cli

    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    if dataset == "svhn":
        _write_svhn(data)
        bad = data / "svhn" / "test_32x32.mat"
        bad.write_bytes(np.random.RandomState(2).randint(0, 256, 4000).astype(np.uint8).tobytes())
    else:
        bad = _write_tiny(data) / "val" / "val_annotations.txt"
        bad.write_text(bad.read_text() + "val_0.JPEG\tn77\t0\t0\t64\t64\n")
    code, out, err = run_cli(main_train, ["--dataset", dataset, "--data", data, "--epochs", "1", "--device", "cpu"],
                             monkeypatch, capsys, work)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("main_train.py: error: --data: "), err
    assert str(bad) in lines[0] and list(work.iterdir()) == []
