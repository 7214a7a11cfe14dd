"""Tests for the models package (DESIGN.md §4, upstream-spec §8)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ARCHS, build_model, extract_state_dict
from models.normalize import NormalizeByChannelMeanStd
from utils.errors import UserError

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]
SMALL = ("mlp", "cnn_s")


def _build(arch: str, num_classes: int = 7, **kw) -> nn.Module:
    if arch in SMALL:
        kw.setdefault("in_channels", 1)
        kw.setdefault("image_size", 8)
    c = kw.get("in_channels", 3)
    mean = kw.pop("mean", CIFAR_MEAN if c == 3 else [0.3] * c)
    std = kw.pop("std", CIFAR_STD if c == 3 else [0.2] * c)
    return build_model(arch, num_classes, mean=mean, std=std, **kw)


def _input(arch: str, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8) if arch in SMALL else torch.rand(batch, 3, 32, 32)


def test_registry_keys() -> None:
    assert set(ARCHS) == {"resnet18", "resnet34", "resnet50", "resnet20s", "resnet44s",
                          "resnet56s", "vgg16_bn", "vit_s", "mlp", "cnn_s"}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_logits_and_embed_shapes(arch: str) -> None:
    torch.manual_seed(0)
    model = _build(arch).eval()
    x = _input(arch)
    with torch.no_grad():
        logits, feats = model(x), model.embed(x)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, model.embed_dim)
    assert isinstance(model.normalize, NormalizeByChannelMeanStd)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet50", 2048), ("resnet20s", 64),
                                      ("vgg16_bn", 256), ("vit_s", 384), ("mlp", 128),
                                      ("cnn_s", 128)])
def test_embed_dims(arch: str, dim: int) -> None:
    assert _build(arch).embed_dim == dim


def test_resnet18_on_digits_shape() -> None:
    model = _build("resnet18", 10, in_channels=1, image_size=8).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["mlp", "cnn_s"])
def test_small_models_other_sizes(arch: str) -> None:
    model = _build(arch, 5, in_channels=3, image_size=12).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 12, 12)).shape == (2, 5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet20s", "cnn_s", "mlp"])
def test_normalization_inside_model(arch: str) -> None:
    torch.manual_seed(0)
    model = _build(arch).eval()
    c = model.normalize.mean.numel()
    mean = torch.linspace(0.2, 0.6, c)
    std = torch.linspace(0.1, 0.3, c)
    model.normalize.mean.copy_(mean)
    model.normalize.std.copy_(std)
    x = _input(arch)
    manual = (x - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)
    with torch.no_grad():
        expected = model(x)
        model.normalize = NormalizeByChannelMeanStd([0.0] * c, [1.0] * c)  # identity
        assert torch.allclose(model(manual), expected, atol=1e-5)


def test_build_model_sets_stats() -> None:
    model = _build("resnet20s")
    assert torch.allclose(model.normalize.mean, torch.tensor(CIFAR_MEAN))
    assert torch.allclose(model.normalize.std, torch.tensor(CIFAR_STD))


# A representative subset of the original code's ResNet-18 state-dict keys, written out by hand.
ORIGINAL_RESNET18_KEYS = [
    "normalize.mean", "normalize.std",
    "conv1.weight",
    "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
    "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
    "layer1.0.conv2.weight", "layer1.0.bn2.running_var",
    "layer1.1.conv1.weight", "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight", "layer2.0.bn1.running_mean",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight", "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean", "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer3.0.downsample.0.weight", "layer3.0.downsample.1.weight", "layer3.1.bn1.bias",
    "layer4.0.conv1.weight", "layer4.0.conv2.weight",
    "layer4.0.downsample.0.weight", "layer4.0.downsample.1.running_var",
    "layer4.1.conv2.weight", "layer4.1.bn2.bias",
    "fc.weight", "fc.bias",
]
NOT_IN_RESNET18 = ["layer1.0.downsample.0.weight", "layer1.0.conv3.weight", "maxpool.weight"]


def test_resnet18_original_key_names_load_strict() -> None:
    model = _build("resnet18", 10)
    keys = set(model.state_dict())
    for k in ORIGINAL_RESNET18_KEYS:
        assert k in keys, k
    for k in NOT_IN_RESNET18:
        assert k not in keys, k
    # 20 conv weights + 20 BNs x 5 entries (incl. 3 downsample pairs) + fc (2) + normalize (2)
    assert len(keys) == 124
    # A checkpoint in the original layout (state_dict + DataParallel prefix) loads strictly.
    torch.manual_seed(1)
    src = _build("resnet18", 10).state_dict()
    src = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.items()}
    ckpt = {"state_dict": {"module." + k: v for k, v in src.items()}, "best_sa": 90.0}
    model.load_state_dict(extract_state_dict(ckpt), strict=True)
    assert torch.equal(model.fc.weight, src["fc.weight"])
    assert torch.equal(model.normalize.std, src["normalize.std"])


def test_resnet50_bottleneck_keys() -> None:
    keys = set(_build("resnet50").state_dict())
    for k in ["layer1.0.conv3.weight", "layer1.0.bn3.running_mean", "layer1.0.downsample.0.weight",
              "layer4.2.conv3.weight", "fc.weight"]:
        assert k in keys, k
    assert tuple(_build("resnet50").fc.weight.shape) == (7, 2048)


def test_resnet_s_loads_original_linear_head() -> None:
    src = _build("resnet20s").state_dict()
    src["linear.weight"] = src.pop("fc.weight")
    src["linear.bias"] = src.pop("fc.bias")
    model = _build("resnet20s")
    model.load_state_dict(src, strict=True)
    assert torch.equal(model.fc.weight, src["linear.weight"])


def test_extract_state_dict_variants() -> None:
    t = torch.ones(2)
    assert extract_state_dict({"a.weight": t}) == {"a.weight": t}
    assert extract_state_dict({"state_dict": {"a.weight": t}, "epoch": 3}) == {"a.weight": t}
    out = extract_state_dict({"state_dict": {"module.a.weight": t, "module.b": t}})
    assert set(out) == {"a.weight", "b"}
    assert set(extract_state_dict({"module.fc.bias": t})) == {"fc.bias"}
    with pytest.raises(UserError):
        extract_state_dict([t])
    with pytest.raises(UserError):
        extract_state_dict({"model": {"a": t}})


def test_unknown_arch() -> None:
    with pytest.raises(UserError) as exc:
        _build("resnet99")
    msg = str(exc.value)
    assert "resnet99" in msg and "--arch" in msg and "resnet18" in msg


def test_case_insensitive_names() -> None:
    assert type(_build("ResNet18")) is type(_build("resnet18"))
    assert _build("VGG16_BN").embed_dim == 256


def test_imagenet_arch_stem() -> None:
    cifar = _build("resnet18")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    inet = _build("resnet18", imagenet_arch=True)
    assert inet.conv1.kernel_size == (7, 7) and inet.conv1.stride == (2, 2)
    assert inet.conv1.padding == (3, 3)
    assert isinstance(inet.maxpool, nn.MaxPool2d)
    assert set(inet.state_dict()) == set(cifar.state_dict())  # same keys either way
    with torch.no_grad():
        assert inet.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize("arch", ["vgg16_bn", "resnet20s", "vit_s", "cnn_s"])
def test_imagenet_arch_rejected_for_non_resnet(arch: str) -> None:
    with pytest.raises(UserError, match="imagenet_arch"):
        _build(arch, imagenet_arch=True)


def test_vgg_rejects_tiny_inputs() -> None:
    with pytest.raises(UserError) as exc:
        _build("vgg16_bn", in_channels=1, image_size=8)
    assert "vgg16_bn" in str(exc.value) and "8" in str(exc.value)


def test_vit_other_channels_and_size() -> None:
    model = _build("vit_s", 4, in_channels=1, image_size=8).eval()
    assert model.vit.patch_size == 2 and model.vit.conv_proj.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 4)
