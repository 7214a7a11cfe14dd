"""Checkpoints of the original code for ImageNet / Tiny-ImageNet: the original's data transform
applied Normalize(ImageNet stats) and the model normalized again (upstream-spec §4.2), so a model
loaded here from such a checkpoint normalizes [0, 1] inputs twice and gives the original's logits;
CIFAR/SVHN checkpoints and our own model.pt files keep one pass; a model saved here after starting
from such a checkpoint keeps two passes when reloaded."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import transforms

from models import build_model, load_into, load_state
from utils.data import NORMALIZATION
from utils.errors import UserError
from utils.rundir import save_model

LINE = "its inputs were normalized twice (dataset transform and model), reproduced here"


class _OriginalNormalize(nn.Module):
    """The original code's ``NormalizeByChannelMeanStd`` (utils.py / each model file), written out."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.sub(self.mean[None, :, None, None]).div(self.std[None, :, None, None])


def _original_model(arch: str, classes: int, dataset: str, *, imagenet_arch: bool = False) -> nn.Module:
    """A model as the original's ``setup_model_dataset`` builds it: the architecture, then
    ``model.normalize = NormalizeByChannelMeanStd(dataset stats)``; random weights and BN stats."""
    torch.manual_seed(0)
    model = build_model(arch, classes, mean=(0.0,) * 3, std=(1.0,) * 3, imagenet_arch=imagenet_arch)
    model.normalize = _OriginalNormalize(*NORMALIZATION[dataset])
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return model.eval()


def _write_original(model: nn.Module, path: Path, *, wrapped: bool = True, linear_head: bool = False) -> Path:
    """The checkpoint as the original writes it: ``{"state_dict", "best_sa", ...}`` of a
    DataParallel model (``module.`` keys); ResNet-20s heads are named ``linear``."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if linear_head:
        state = {("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
    if wrapped:
        state = {"module." + k: v for k, v in state.items()}
        torch.save({"state_dict": state, "best_sa": 51.2, "epoch": 4, "result": {"train_ta": [40.0]}}, path)
    else:
        torch.save(state, path)
    return path


def _ours(arch: str, classes: int, dataset: str, *, imagenet_arch: bool = False) -> nn.Module:
    """A fresh model here, as ``build_for`` makes it for ``dataset``."""
    mean, std = NORMALIZATION[dataset]
    return build_model(arch, classes, mean=mean, std=std, imagenet_arch=imagenet_arch).eval()


def _original_inputs(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """What the original's test transform hands the model for the [0, 1] image ``x``: ToTensor then
    Normalize for the ImageNet-type datasets, ToTensor only for CIFAR/SVHN (upstream-spec §4.3)."""
    if dataset in ("tinyimagenet", "imagenet"):
        return transforms.Normalize(*NORMALIZATION[dataset])(x)
    return x


@pytest.mark.parametrize("arch,classes,dataset,imagenet_arch,wrapped", [
    ("resnet18", 200, "tinyimagenet", False, True),
    ("resnet20s", 200, "tinyimagenet", False, True),
    ("resnet18", 200, "tinyimagenet", False, False),
    ("resnet18", 1000, "imagenet", True, True),
])
def test_original_imagenet_type_checkpoint_gives_the_original_logits(tmp_path, capsys, arch, classes, dataset,
                                                                     imagenet_arch, wrapped) -> None:
    orig = _original_model(arch, classes, dataset, imagenet_arch=imagenet_arch)
    path = _write_original(orig, tmp_path / "0tiny_orig", wrapped=wrapped, linear_head=arch == "resnet20s")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = orig(_original_inputs(x, dataset))
    model = _ours(arch, classes, dataset, imagenet_arch=imagenet_arch)
    load_into(model, path, arch=arch, num_classes=classes)
    with torch.no_grad():
        got = model(x)
        single = _ours(arch, classes, dataset, imagenet_arch=imagenet_arch)
        single.load_state_dict({k: v for k, v in model.state_dict().items() if k != "normalize.passes"})
        once = single.normalize.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(single(x), expected, rtol=1e-3, atol=1e-3)  # one pass would not do
    m, s = (torch.tensor(v)[None, :, None, None] for v in NORMALIZATION[dataset])
    assert torch.allclose(model.normalize(x), (once - m) / s) and torch.allclose(once, (x - m) / s)
    assert model.normalize.n_passes == 2 and int(model.state_dict()["normalize.passes"]) == 2
    out = capsys.readouterr().out
    assert out == f"{path}: a checkpoint of the original code for {dataset}; {LINE}\n"


@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("cifar100", 100), ("svhn", 10)])
def test_original_cifar_svhn_checkpoints_stay_single_normalized(tmp_path, capsys, dataset, classes) -> None:
    orig = _original_model("resnet18", classes, dataset)
    path = _write_original(orig, tmp_path / "0c10_orig")
    x = torch.rand(2, 3, 32, 32)
    model = _ours("resnet18", classes, dataset)
    load_into(model, path, arch="resnet18", num_classes=classes)
    with torch.no_grad():
        assert torch.allclose(model(x), orig(_original_inputs(x, dataset)), rtol=1e-5, atol=1e-5)
    assert model.normalize.n_passes == 1 and "normalize.passes" not in model.state_dict()
    assert capsys.readouterr().out == ""


def test_saved_after_an_original_checkpoint_reloads_double_normalized(tmp_path, capsys) -> None:
    orig = _original_model("resnet18", 200, "tinyimagenet")
    path = _write_original(orig, tmp_path / "0tiny_orig")
    model = _ours("resnet18", 200, "tinyimagenet")
    load_into(model, path, arch="resnet18", num_classes=200)
    with torch.no_grad():  # a stand-in for unlearning: the weights move, the pipeline stays
        model.fc.weight.mul_(1.5)
    saved = save_model(tmp_path / "run", model, arch="resnet18", num_classes=200, dataset="tinyimagenet")
    assert int(torch.load(saved, weights_only=True)["state_dict"]["normalize.passes"]) == 2
    capsys.readouterr()
    again = _ours("resnet18", 200, "tinyimagenet")
    load_into(again, saved, arch="resnet18", num_classes=200)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert again.normalize.n_passes == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "twice" in out and "kept" in out and "reproduced" not in out
    # A plain load_state_dict (resume, copies between models) carries the passes too.
    fresh = _ours("resnet18", 200, "tinyimagenet")
    fresh.load_state_dict(load_state(saved))
    assert fresh.normalize.n_passes == 2 and copy.deepcopy(fresh).normalize.n_passes == 2


def test_our_model_pt_from_before_loads_as_before(tmp_path, capsys) -> None:
    """A tinyimagenet model trained here (ImageNet stats, no ``normalize.passes``) keeps one pass."""
    torch.manual_seed(1)
    trained = _ours("resnet18", 200, "tinyimagenet")
    saved = save_model(tmp_path / "run", trained, arch="resnet18", num_classes=200, dataset="tinyimagenet")
    assert "normalize.passes" not in torch.load(saved, weights_only=True)["state_dict"]
    model = _ours("resnet18", 200, "tinyimagenet")
    load_into(model, saved, arch="resnet18", num_classes=200)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert model.normalize.n_passes == 1 and capsys.readouterr().out == ""


def test_a_bad_passes_entry_is_one_line(tmp_path) -> None:
    model = _ours("resnet20s", 200, "tinyimagenet")
    state = {**model.state_dict(), "normalize.passes": torch.tensor(0)}
    torch.save({"state_dict": state, "arch": "resnet20s", "num_classes": 200, "dataset": "tinyimagenet"},
               tmp_path / "model.pt")
    with pytest.raises(UserError) as exc:
        load_into(_ours("resnet20s", 200, "tinyimagenet"), tmp_path / "model.pt", arch="resnet20s", num_classes=200)
    assert "normalize.passes" in str(exc.value) and "\n" not in str(exc.value)


def test_a_two_pass_module_refuses_a_single_pass_state_strictly() -> None:
    two = _ours("resnet20s", 10, "cifar10")
    two.normalize.set_passes(2)
    with pytest.raises(RuntimeError, match="normalize.passes"):
        two.load_state_dict(_ours("resnet20s", 10, "cifar10").state_dict())
    two.normalize.set_passes(1)
    assert "normalize.passes" not in two.state_dict()
