"""The image classifier edgetl fine-tunes: a split ``Backbone`` plus a small ``ClassifierHead``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from edgetl.errors import ConfigError
from edgetl.models.backbones import BACKBONES, BackboneDef, BackboneParts
from edgetl.models.weights import WeightsInfo, check_backbone_state, resolve_weights
from edgetl.spec import ModelSpec

_ACTIVATIONS = {"hardswish": nn.Hardswish, "relu": nn.ReLU}


class Backbone(nn.Module):
    """A reference model's feature extractor: stem, ordered blocks, global average pool.

    Args:
        stem: The first layers.
        blocks: Ordered input to output; the unit of "unfreeze the last N blocks". The last block
            ends with the final 1x1 (head) conv.
        num_features: Channels of the pooled output.
        name: The registered backbone name.
    """

    def __init__(
        self, stem: nn.Module, blocks: Sequence[nn.Module], num_features: int, name: str = ""
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.num_features = int(num_features)
        self.name = name

    @classmethod
    def from_parts(cls, parts: BackboneParts, name: str = "") -> Backbone:
        """Wrap the parts a ``BackboneDef.split`` cut from a reference model (modules are shared)."""
        return cls(parts.stem, parts.blocks, parts.num_features, name)

    @property
    def units(self) -> list[nn.Module]:
        """The stem followed by every block: the units that freezing and prefix caching cut between."""
        return [self.stem, *self.blocks]

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run ``units[start:stop]`` only (a frozen prefix, or the trainable rest)."""
        for unit in self.units[start:stop]:
            x = unit(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's feature map, ``(N, num_features, H', W')``."""
        return self.forward_units(x)

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Global average pool and flatten: ``(N, C, H, W)`` -> ``(N, C)``."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, ``(N, num_features)``."""
        return self.pool(self.forward_features(x))


class ClassifierHead(nn.Module):
    """Dropout, an optional hidden layer, then the output layer.

    Args:
        in_features: Width of the pooled backbone features.
        num_classes: Number of outputs.
        dropout: Dropout probability before each Linear layer.
        hidden: Width of an optional hidden layer (MobileNetV3's own head uses 1024 or 1280).
        act: Activation after the hidden layer: ``hardswish`` or ``relu``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        dropout: float = 0.2,
        hidden: int | None = None,
        act: str = "hardswish",
    ) -> None:
        super().__init__()
        _check_head_args(num_classes, dropout, hidden, act)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_features, hidden), _ACTIVATIONS[act](), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or in_features, num_classes))
        self.layers = nn.Sequential(*layers)
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)

    @property
    def fc(self) -> nn.Linear:
        """The output layer."""
        return self.layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, ``(N, num_classes)``."""
        return self.layers(x)


def _check_head_args(num_classes: int, dropout: float, hidden: int | None, act: str) -> None:
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}", "check the dataset's labels")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}", "use e.g. 0.2")
    if hidden is not None and hidden < 1:
        raise ConfigError(
            f"hidden must be a positive width or None, got {hidden}", "use e.g. 1024, or omit it"
        )
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unknown head activation {act!r}", f"choose one of: {', '.join(_ACTIVATIONS)}")


class ImageClassifier(nn.Module):
    """``backbone`` then ``head``: images ``(N, 3, H, W)`` to logits ``(N, num_classes)``.

    Args:
        backbone: The feature extractor.
        head: The classifier head.
    """

    def __init__(self, backbone: Backbone, head: ClassifierHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.head(self.backbone(x))


def build_backbone(defn: BackboneDef, state: dict[str, torch.Tensor] | None = None) -> Backbone:
    """Build the reference model, load a backbone ``state`` (reference keys), and split it.

    Raises:
        WeightsError: ``state`` misses backbone tensors or has the wrong shapes.
    """
    model = defn.build()
    if state is not None:
        model.load_state_dict(check_backbone_state(defn, state, "backbone state"), strict=False)
    return Backbone.from_parts(defn.split(model), defn.name)


def build_classifier(
    name: str,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    dropout: float = 0.2,
    hidden: int | None = None,
    allow_download: bool | None = None,
) -> tuple[ImageClassifier, WeightsInfo]:
    """Build a classifier on a registered backbone with the best weights available.

    Args:
        name: Registered backbone name (see ``edgetl backbones``).
        num_classes: Number of output classes.
        weights: Explicit backbone weights file; wins over ``pretrained``.
        pretrained: False gives a random-init backbone.
        dropout: Head dropout probability.
        hidden: Width of an optional hidden head layer.
        allow_download: Force downloads on or off; None reads ``EDGETL_OFFLINE``/``HF_HUB_OFFLINE``.

    Returns:
        The model (train mode; the head is freshly initialised) and where its backbone weights came from.

    Raises:
        UnknownNameError: ``name`` is not registered.
        WeightsError: An explicit weights file is missing or does not fit.
        ConfigError: A head argument is invalid.
    """
    defn = BACKBONES.get(name)
    _check_head_args(num_classes, dropout, hidden, "hardswish")
    state, info = resolve_weights(defn, weights, pretrained, allow_download)
    backbone = build_backbone(defn, state)
    head = ClassifierHead(backbone.num_features, num_classes, dropout=dropout, hidden=hidden)
    return ImageClassifier(backbone, head), info


def default_spec(name: str, labels: Sequence[str], input_size: tuple[int, int] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` matching a backbone's ImageNet preprocessing.

    Args:
        name: Registered backbone name.
        labels: Class names in output order.
        input_size: ``(height, width)``; defaults to the size the weights were trained at.
    """
    defn = BACKBONES.get(name)
    return ModelSpec(
        labels=tuple(labels),
        input_size=tuple(input_size or defn.input_size),
        mean=defn.mean,
        std=defn.std,
        interpolation=defn.interpolation,
        crop_pct=defn.crop_pct,
        backbone=name,
    )
