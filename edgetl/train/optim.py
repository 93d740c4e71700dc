"""Optimiser and schedule: AdamW with layer-wise LR decay, linear warm-up then cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgetl.config import TrainConfig


def layerwise_param_groups(model: nn.Module, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """Parameter groups whose LR shrinks by ``decay`` per block from the head down to the stem.

    Head: ``lr``; last unit: ``lr * decay``; ... ; first unit (stem, embeddings):
    ``lr * decay ** len(units)``. Biases and norm weights get no weight decay. Frozen parameters are
    included, so that progressive unfreezing needs no new optimiser.
    """
    backbone_units = model.backbone.units
    depth = len(backbone_units)
    units = [(model.head, lr)]
    units += [(unit, lr * decay ** (depth - i)) for i, unit in enumerate(backbone_units)]
    groups = []
    for module, unit_lr in units:
        decayed = [p for p in module.parameters() if p.ndim > 1]
        plain = [p for p in module.parameters() if p.ndim <= 1]
        for params, wd in ((decayed, weight_decay), (plain, 0.0)):
            if params:
                groups.append({"params": params, "lr": unit_lr, "weight_decay": wd})
    return groups


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, floor: float = 0.01) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to ``floor``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    groups: list[dict], cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``groups`` and a per-step warm-up + cosine schedule spanning ``cfg.epochs``."""
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    total = steps_per_epoch * cfg.epochs
    warmup = round(steps_per_epoch * cfg.warmup_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    return optimizer, scheduler
