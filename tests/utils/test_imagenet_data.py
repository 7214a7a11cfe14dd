"""The streamed ``imagenet`` dataset (utils.data + utils.lazy_images) on a tiny fake ImageFolder."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils.batches import Augment, iterate
from utils.data import AUGMENT, NORMALIZATION, canonical_dataset, load_data, validation_split
from utils.errors import UserError
from utils.lazy_images import LazyImages

# Class folder names whose sorted order differs from the order they are written in.
CLASSES = ("n03", "n01", "n02")


def _write_split(folder: Path, per_class: int, rng: np.random.RandomState) -> None:
    for c in CLASSES:
        d = folder / c
        d.mkdir(parents=True)
        for i in rng.permutation(per_class):  # written out of order; ImageFolder sorts
            h, w = rng.randint(33, 60, size=2)
            arr = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
            if i % 4 == 3:  # grayscale PNG: converted to RGB on decode
                Image.fromarray(arr[..., 0], "L").save(d / f"{c}_{i:02d}.png")
            else:
                Image.fromarray(arr).save(d / f"{c}_{i:02d}.JPEG", quality=90)
        (d / "notes.txt").write_text("not an image")  # not an IMG_EXTENSIONS file: skipped


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """``<root>/imagenet/{train,val}/<class>/...``: 3 classes x 10 train and 3 x 2 val images of
    random sizes between 33 and 59 px. Treat as read-only."""
    root = tmp_path_factory.mktemp("inet")
    rng = np.random.RandomState(0)
    _write_split(root / "imagenet" / "train", 10, rng)
    _write_split(root / "imagenet" / "val", 2, rng)
    return root


def _reference(path: str, size: int, resize: int) -> np.ndarray:
    """Resize the shorter side to ``resize`` (bilinear) and center-crop ``size``, spelled out in PIL."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return np.asarray(im.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def test_aliases_and_constants():
    for n in ("imagenet", "ImageNet", "imagenet1k", "ILSVRC2012"):
        assert canonical_dataset(n) == "imagenet"
    assert canonical_dataset("tiny-imagenet") == "tinyimagenet"
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert AUGMENT["imagenet"] == Augment(16, True)


def test_load_lists_files_in_imagefolder_order(imagenet_root, monkeypatch):
    from torchvision.datasets import ImageFolder

    def no_decoding(*a, **k):
        raise AssertionError("load_data must not decode images")

    monkeypatch.setattr(Image, "open", no_decoding)
    d = load_data("imagenet", imagenet_root, split_seed=3)
    monkeypatch.undo()
    tv_train = ImageFolder(str(imagenet_root / "imagenet" / "train"))
    tv_val = ImageFolder(str(imagenet_root / "imagenet" / "val"))
    assert tv_train.classes == sorted(CLASSES) and d.num_classes == 3
    assert isinstance(d.x, LazyImages) and isinstance(d.test_x, LazyImages)
    assert d.x.paths == [p for p, _ in tv_train.samples] and d.test_x.paths == [p for p, _ in tv_val.samples]
    assert d.y.dtype == torch.int64 and d.y.tolist() == tv_train.targets and d.test_y.tolist() == tv_val.targets
    assert len(d.x) == 30 and len(d.test_x) == 6
    assert d.x.shape == torch.Size([30, 3, 224, 224]) and isinstance(d.x.shape, torch.Size)
    assert d.in_channels == 3 and d.image_size == 224 and (d.x.image_size, d.x.resize) == (224, 256)
    assert (d.mean, d.std) == NORMALIZATION["imagenet"] and d.augment == Augment(16, True)
    train_ids, val_ids = validation_split(d.y.numpy(), 3)
    assert np.array_equal(d.train_ids, train_ids) and np.array_equal(d.val_ids, val_ids)
    assert len(val_ids) == 3 and sorted(d.labels(val_ids).tolist()) == [0, 1, 2]
    moved = d.to(torch.device("cpu"))
    assert moved.x is d.x and moved.test_x is d.test_x


def test_getitem_is_resize_then_center_crop(imagenet_root):
    from torchvision import transforms

    d = load_data("imagenet", imagenet_root, image_size=32, workers=0)
    assert (d.x.image_size, d.x.resize) == (32, 36) and d.x.shape == torch.Size([30, 3, 32, 32])
    xb = d.x[torch.tensor([0, 5])]
    assert xb.dtype == torch.uint8 and xb.shape == (2, 3, 32, 32)
    tv = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32), transforms.PILToTensor()])
    for k, i in enumerate((0, 5)):
        assert np.array_equal(xb[k].numpy(), _reference(d.x.paths[i], 32, 36))
        assert torch.equal(xb[k], tv(Image.open(d.x.paths[i]).convert("RGB")))
    gray = next(i for i, p in enumerate(d.x.paths) if p.endswith(".png"))
    assert torch.equal(d.x[gray][0], d.x[gray][1])  # grayscale -> 3 equal channels
    # Every index form the toolkit uses gives the same images.
    assert torch.equal(d.x[np.array([0, 5])], xb) and torch.equal(d.x[[0, 5]], xb)
    assert torch.equal(d.x[0], xb[0]) and torch.equal(d.x[torch.tensor(5)], xb[1])
    assert torch.equal(d.x[:1], xb[:1]) and torch.equal(d.x[[-30, -25]], xb)
    assert d.x[torch.tensor([[0, 5], [5, 0]])].shape == (2, 2, 3, 32, 32)
    assert d.x[np.zeros(0, np.int64)].shape == (0, 3, 32, 32)
    assert torch.equal(d.test_x[[1]][0], tv(Image.open(d.test_x.paths[1]).convert("RGB")))
    with pytest.raises(IndexError):
        d.x[[30]]
    # Threads change nothing but speed.
    threaded = LazyImages(d.x.paths, size=32, resize=36, workers=2)
    ids = torch.arange(30)
    assert torch.equal(threaded[ids], d.x[ids])
    threaded.close()
    assert torch.equal(pickle.loads(pickle.dumps(threaded))[ids[:3]], d.x[ids[:3]])


def test_iterate_and_predict_on_lazy_data(imagenet_root):
    from models import build_model
    from trainer.evaluate import predict, predict_split

    d = load_data("imagenet", imagenet_root, image_size=32, workers=2).to(torch.device("cpu"))
    full = d.x[torch.arange(len(d.x))]  # the same images in memory
    # Augmented training batches: same draws as from the in-memory tensor.
    runs = []
    for x in (d.x, full):
        gen = torch.Generator().manual_seed(0)
        runs.append(list(iterate(x, d.y, d.train_ids, 8, shuffle=True, generator=gen, augment=d.augment)))
    seen = []
    for a, b in zip(*runs):
        assert a.x.dtype == torch.float32 and a.x.shape[1:] == (3, 32, 32)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.ids, b.ids)
        assert 0 <= a.x.min() and a.x.max() <= 1
        seen += a.ids.tolist()
    assert sorted(seen) == d.train_ids.tolist()
    plain = next(iterate(d.x, d.y, d.val_ids, 8))
    assert torch.equal(plain.x, d.x[torch.as_tensor(d.val_ids)].float() / 255)

    torch.manual_seed(0)
    model = build_model("resnet18", d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                        mean=d.mean, std=d.std, imagenet_arch=True)
    logits, labels = predict(model, d.x, d.y, d.val_ids, batch_size=2)
    ref, ref_labels = predict(model, full, d.y, d.val_ids, batch_size=2)
    assert logits.shape == (3, 3) and np.array_equal(labels, d.labels(d.val_ids))
    assert np.array_equal(logits, ref) and np.array_equal(labels, ref_labels)
    t_logits, t_labels = predict_split(model, d, "test", batch_size=4)
    assert t_logits.shape == (6, 3) and t_labels.tolist() == d.test_y.tolist()


def test_missing_folders(tmp_path, imagenet_root):
    with pytest.raises(UserError) as e:
        load_data("imagenet", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "imagenet" / "train") in msg and "image-net.org" in msg and "\n" not in msg
    shutil.copytree(imagenet_root / "imagenet" / "train", tmp_path / "imagenet" / "train")
    with pytest.raises(UserError, match="val"):
        load_data("imagenet", tmp_path)
    (tmp_path / "imagenet" / "val" / "n09").mkdir(parents=True)  # a class train/ does not have
    with pytest.raises(UserError, match="n09"):
        load_data("imagenet", tmp_path)


def test_unreadable_image_names_file(tmp_path):
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.JPEG"):
        LazyImages([str(bad)], size=8, resize=8, workers=0)[[0]]


def test_image_size_is_for_streamed_datasets_only():
    with pytest.raises(UserError, match="image_size"):
        load_data("digits", image_size=32)
