"""Batch-norm statistics of short runs: a random-init MobileNetV3-Small evaluates what it learned.

torchvision builds MobileNetV3 with batch-norm momentum 0.01: after 60 steps its running statistics are
still half the initial mean 0 / variance 1 and eval-mode accuracy is chance (10%) while training accuracy
rises. edgetl trains every backbone at PyTorch's momentum 0.1 and, at the end of each epoch, re-estimates
the training norms' statistics for the final weights (precise BN), which the first epochs need even at 0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edgetl.config import FinetuneConfig
from edgetl.models import BACKBONES, build_classifier
from edgetl.models.backbones import TRAIN_BN_MOMENTUM
from edgetl.train.bn_stats import precise_bn, training_batch_norms


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_trains_with_the_default_bn_momentum(name: str) -> None:
    model, _ = build_classifier(name, 3, pretrained=False)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert momenta == {TRAIN_BN_MOMENTUM}


def _fmnist_batches(n: int, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from edgetl.data import load_image_data
    from edgetl.data.torch_data import TorchImageDataset, eval_transform
    from edgetl.models import default_spec

    data = load_image_data("fashion-mnist", limit_per_class=n)
    dataset = TorchImageDataset(data.train, eval_transform(default_spec("mobilenet_v3_small", data.classes,
                                                                        (size, size))))
    return list(torch.utils.data.DataLoader(dataset, batch_size=n))


def test_precise_bn_sets_batch_statistics_and_leaves_frozen_norms() -> None:
    from edgetl.train.freezing import apply_freezing, freeze_norm_stats

    torch.manual_seed(0)
    model, _ = build_classifier("mobilenet_v3_small", 10, pretrained=False)
    model.train()
    freeze_norm_stats(apply_freezing(model, 3))
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not m.training]
    before = [m.running_mean.clone() for m in frozen]
    norm = training_batch_norms(model)[0]
    inputs: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    batches = _fmnist_batches(8)  # 80 images in 10 batches of 8
    assert precise_bn(model, batches, samples=40) == 40  # whole batches, then stop
    hook.remove()
    expected = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    assert len(inputs) == 5 and norm.momentum == TRAIN_BN_MOMENTUM and model.training
    torch.testing.assert_close(norm.running_mean, expected, atol=1e-5, rtol=1e-4)
    assert frozen and all(torch.equal(m.running_mean, b) for m, b in zip(frozen, before, strict=True))


def _short_run(tmp_path: Path, epochs: int) -> dict:
    from edgetl.train.finetune import finetune

    cfg = FinetuneConfig()
    cfg.data.data, cfg.data.limit_per_class, cfg.data.image_size, cfg.data.augment = "fashion-mnist", 100, 32, False
    cfg.model.backbone, cfg.model.pretrained = "mobilenet_v3_small", False
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.patience = epochs, 32, 0.002, 9
    return finetune(cfg.validate(), tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 2])
def test_random_init_mobilenet_v3_small_evaluates_above_chance_after_a_short_run(tmp_path: Path,
                                                                                  epochs: int) -> None:
    # 32 / 64 steps: momentum 0.01 reads exactly chance (0.1) on both splits after either; 0.1 alone still
    # reads chance after 32 steps; with precise BN both read well above it
    metrics = _short_run(tmp_path, epochs)
    assert metrics["history"][-1]["train_accuracy"] > 0.25
    assert metrics["val_accuracy"] > 0.25 and metrics["test"]["accuracy"] > 0.25
