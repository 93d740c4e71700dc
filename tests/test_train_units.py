"""Unit tests of the training pieces: metrics, schedule, layer-wise groups, freezing policies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgetl.config import TrainConfig
from edgetl.train.freezing import apply_freezing, count_trainable, freeze_norm_stats, trainable_blocks
from edgetl.train.metrics import classification_metrics, confusion_matrix
from edgetl.train.optim import build_optimizer, layerwise_param_groups, warmup_cosine


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)) for _ in range(3)])
        self.num_features = 4

    @property
    def units(self):
        return [self.stem, *self.blocks]

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x.mean((2, 3))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyBackbone()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(labels, preds, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    # F1: a: p=1/2 r=1/2 -> .5; b: p=2/3 r=1 -> .8; c: p=1 r=.5 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion_matrix(labels, preds, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_metrics_skip_absent_classes():
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), ["a", "b"])
    assert set(m["per_class_accuracy"]) == {"a"}


def test_warmup_then_cosine():
    values = [warmup_cosine(s, 10, 100) for s in range(100)]
    assert values[0] == pytest.approx(0.1)
    assert values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert values[-1] < 0.05
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_layerwise_lr_decreases_towards_stem():
    model = Tiny()
    groups = layerwise_param_groups(model, lr=1.0, decay=0.5, weight_decay=0.1)
    lrs = sorted({g["lr"] for g in groups}, reverse=True)
    assert lrs == [1.0, 0.5, 0.25, 0.125, 0.0625]
    covered = {id(p) for g in groups for p in g["params"]}
    assert covered == {id(p) for p in model.parameters()}
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim <= 1 for p in g["params"]))


def test_schedule_drives_optimizer():
    model = Tiny()
    cfg = TrainConfig(epochs=2, lr=0.1, warmup_epochs=0.5)
    opt, sched = build_optimizer(layerwise_param_groups(model, 0.1, 1.0, 0.0), cfg, steps_per_epoch=4)
    seen = []
    for _ in range(8):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert max(seen) == pytest.approx(0.1)
    assert seen[-1] < 0.01


@pytest.mark.parametrize(
    ("mode", "unfreeze", "epoch", "expected"),
    [("feature-extract", None, 5, 0), ("fine-tune", None, 0, 4), ("fine-tune", 2, 0, 2), ("fine-tune", 99, 0, 4),
     ("progressive", None, 0, 1), ("progressive", None, 2, 3), ("progressive", 2, 9, 2)],
)
def test_trainable_blocks(mode, unfreeze, epoch, expected):
    assert trainable_blocks(mode, unfreeze, depth=3, epoch=epoch, every=1) == expected


def test_freezing_stops_gradients_and_norm_stats():
    torch.manual_seed(0)
    model = Tiny()
    frozen = apply_freezing(model, 1)
    assert len(frozen) == 3  # stem + first two blocks
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("head", "backbone.blocks.2"))}
    assert count_trainable(model) == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    model.train()
    freeze_norm_stats(frozen)
    stem_bn = model.backbone.stem[1]
    before = stem_bn.running_mean.clone()
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    assert torch.equal(stem_bn.running_mean, before)
    assert model.backbone.blocks[0][0].weight.grad is None
    assert model.backbone.blocks[2][0].weight.grad is not None
