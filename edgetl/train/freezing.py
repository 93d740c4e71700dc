"""Freezing policies: which backbone blocks train (feature extraction, last N, progressive)."""

from __future__ import annotations

from torch import nn


def trainable_blocks(mode: str, unfreeze: int | None, depth: int, epoch: int, every: int) -> int:
    """How many of the last backbone blocks train in ``epoch`` (0-based).

    Args:
        mode: ``feature-extract`` (none), ``fine-tune`` (the last ``unfreeze``, all when None),
            ``progressive`` (one more every ``every`` epochs, up to ``unfreeze`` or all).
        unfreeze: Upper bound on trained blocks; None means every block (stem included).
        depth: Number of blocks in the backbone.
        epoch: Current epoch.
        every: Progressive schedule period in epochs.
    """
    limit = depth + 1 if unfreeze is None else min(unfreeze, depth + 1)
    if mode == "feature-extract":
        return 0
    if mode == "progressive":
        return min(limit, 1 + epoch // max(1, every))
    return limit


def apply_freezing(model: nn.Module, n_trainable: int) -> list[nn.Module]:
    """Freeze the backbone except its last ``n_trainable`` units (blocks, then the stem).

    Returns the frozen modules; call :func:`freeze_norm_stats` after ``model.train()`` so their
    batch-norm statistics stay fixed too.
    """
    units = model.backbone.units
    cut = max(0, len(units) - n_trainable)
    for i, unit in enumerate(units):
        for p in unit.parameters():
            p.requires_grad_(i >= cut)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return units[:cut]


def freeze_norm_stats(frozen: list[nn.Module]) -> None:
    """Put frozen units in eval mode (fixed batch-norm statistics, no dropout)."""
    for unit in frozen:
        unit.eval()


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that will receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
