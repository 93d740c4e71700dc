"""PNG plots: confusion matrix, training curves, latency bars. Written atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from edgetl.fsutil import write_bytes


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix with counts in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = max(4.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title or "confusion matrix")
    _save(fig, path)


def plot_history(history: Sequence[dict], path: Path) -> None:
    """Train loss and train/val accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train accuracy")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="val accuracy")
    ax_acc.plot(epochs, [h["val_macro_f1"] for h in history], marker=".", linestyle="--", label="val macro-F1")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("score")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle("training curves")
    _save(fig, path)


def plot_bars(names: Sequence[str], values: Sequence[float], path: Path, xlabel: str, title: str) -> None:
    """Horizontal bar chart (e.g. latency per engine/config)."""
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.4 * len(names) + 1)))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    _save(fig, path)
