"""PNG plots: confusion matrix, training curves, latency bars, accuracy-latency Pareto. Written atomically."""

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


def plot_bar_panels(names: Sequence[str], panels: dict[str, Sequence[float | None]], path: Path, title: str) -> None:
    """One horizontal bar chart per metric, side by side, the same ``names`` on each (None: no bar)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), max(2.2, 0.5 * len(names) + 1.2)),
                             sharey=True, squeeze=False)
    colours = [f"C{i}" for i in range(len(names))]
    for ax, (label, values) in zip(axes[0], panels.items(), strict=True):
        shown = [0.0 if v is None else float(v) for v in values]
        ax.barh(range(len(names)), shown, color=colours)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        for i, v in enumerate(values):
            ax.text(shown[i], i, " n/a" if v is None else f" {v:.3g}", va="center", fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_pareto(groups: dict[str, Sequence[dict]], path: Path, title: str = "accuracy vs latency vs size") -> None:
    """Accuracy against latency, one colour per group (target), marker area proportional to size.

    Args:
        groups: Group name -> points, each ``{"label", "latency_ms", "accuracy", "size_mb"}`` (accuracy as a
            fraction; ``size_mb`` may be None, drawn at the smallest area). Each group's Pareto front (no other
            point of the group is both faster and at least as accurate) is joined by a line.
        path: The PNG to write.
        title: The figure title.
    """
    sizes = [p["size_mb"] for pts in groups.values() for p in pts if p.get("size_mb")]
    scale = 900 / max(sizes) if sizes else 1.0
    fig, ax = plt.subplots(figsize=(9, 6))
    latencies = [p["latency_ms"] for pts in groups.values() for p in pts]
    for i, (name, points) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        x = [p["latency_ms"] for p in points]
        y = [100 * p["accuracy"] for p in points]
        area = [max(30.0, scale * (p.get("size_mb") or 0)) for p in points]
        ax.scatter(x, y, s=area, color=colour, alpha=0.45, edgecolors=colour, label=name)
        front = pareto_front(points)
        ax.plot([p["latency_ms"] for p in front], [100 * p["accuracy"] for p in front], color=colour, lw=1)
        for p in points:
            ax.annotate(p["label"], (p["latency_ms"], 100 * p["accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    if latencies and max(latencies) > 10 * min(latencies):
        ax.set_xscale("log")
    ax.set_xlabel("latency p50 (ms), lower is better")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title} (marker area: model size{f', largest {max(sizes):.1f} MB' if sizes else ''})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="target", loc="best", fontsize=8, markerscale=0.5)
    _save(fig, path)


def pareto_front(points: Sequence[dict]) -> list[dict]:
    """Points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    front: list[dict] = []
    for p in sorted(points, key=lambda q: (q["latency_ms"], -q["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front
