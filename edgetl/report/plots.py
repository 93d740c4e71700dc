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


#: Colour per artifact format in the Pareto plot; marker per precision.
_FORMAT_COLOURS = {"onnx": "C0", "openvino": "C1", "tflite": "C2", "pytorch": "C3"}
_PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}
_MAX_AREA = 900.0  # points^2 of the largest model's marker


def plot_pareto(groups: dict[str, Sequence[dict]], path: Path, title: str = "accuracy vs latency vs size") -> None:
    """Write :func:`pareto_figure` of ``groups`` to the PNG ``path``."""
    _save(pareto_figure(groups, title), path)


def pareto_figure(groups: dict[str, Sequence[dict]], title: str = "accuracy vs latency vs size") -> plt.Figure:
    """Accuracy against latency, one panel per group (target); colour = format, marker = precision, area = size.

    Args:
        groups: Group name -> points, each ``{"label", "latency_ms", "accuracy", "size_mb"}`` (accuracy as a
            fraction; ``size_mb`` may be None, drawn at the smallest area) and optionally ``format``,
            ``precision`` and ``best`` (True: ringed, the artifact chosen under the report's constraint).
            Each group's Pareto front (no other point of the group is both faster and at least as accurate)
            is joined by a dashed line. Labels are placed beside their marker, moved up or down (with a
            leader line) where they would overlap another label.
        title: The figure title.

    Returns:
        The figure (close it with ``plt.close``).
    """
    from matplotlib.ticker import ScalarFormatter

    points_all = [p for pts in groups.values() for p in pts]
    sizes = [p["size_mb"] for p in points_all if p.get("size_mb")]
    scale = _MAX_AREA / max(sizes) if sizes else 1.0
    colours = _colours(points_all)
    fig, axes = plt.subplots(1, len(groups), figsize=(9.5 * len(groups) ** 0.75, 6.2), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, (name, points) in zip(axes[0], groups.items(), strict=True):
        area = [max(30.0, scale * (p.get("size_mb") or 0)) for p in points]
        for p, a in zip(points, area, strict=True):
            colour = colours[p.get("format")]
            ax.scatter(p["latency_ms"], 100 * p["accuracy"], s=a, color=colour, alpha=0.5, edgecolors=colour,
                       marker=_PRECISION_MARKERS.get(p.get("precision"), "P"), zorder=3)
            if p.get("best"):
                ax.scatter(p["latency_ms"], 100 * p["accuracy"], s=a * 2.2 + 120, facecolors="none",
                           edgecolors="black", linewidths=1.2, zorder=4)
        front = pareto_front(points)
        ax.plot([p["latency_ms"] for p in front], [100 * p["accuracy"] for p in front], color="0.45", lw=1,
                ls="--", zorder=2)
        latencies = [p["latency_ms"] for p in points]
        if max(latencies) > 10 * min(latencies):
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(ScalarFormatter())
            ax.tick_params(axis="x", which="both", labelsize=8)
        ax.margins(x=0.12, y=0.18)
        ax.set_xlabel("latency p50 (ms), lower is better")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.legend(handles=_legend_handles(points_all, colours), loc="outside lower center", ncol=8, fontsize=8,
               frameon=False)
    largest = f", largest {max(sizes):.1f} MB" if sizes else ""
    fig.suptitle(f"{title}\n(marker area: bundle size{largest}; dashed: Pareto front; ringed: best under the "
                 "constraint)", fontsize=10)
    fig.canvas.draw()  # final limits and layout, so the labels can be measured where they will be drawn
    for ax, points in zip(axes[0], groups.values(), strict=True):
        _place_labels(fig, ax, points, [max(30.0, scale * (p.get("size_mb") or 0)) for p in points])
    return fig


def _colours(points: Sequence[dict]) -> dict[str | None, str]:
    """A colour per format: the fixed ones first, then the next free colours."""
    colours: dict[str | None, str] = {}
    spare = iter(f"C{i}" for i in range(4, 10))
    for fmt in dict.fromkeys(p.get("format") for p in points):
        colours[fmt] = _FORMAT_COLOURS.get(fmt) or next(spare, "0.4")
    return colours


def _legend_handles(points: Sequence[dict], colours: dict[str | None, str]) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", markersize=8, color=c, alpha=0.6, label=str(fmt))
               for fmt, c in colours.items() if fmt is not None]
    for precision in dict.fromkeys(p.get("precision") for p in points):
        if precision is not None:
            handles.append(Line2D([], [], ls="", marker=_PRECISION_MARKERS.get(precision, "P"), markersize=8,
                                  color="0.35", fillstyle="none", label=precision))
    return handles


def _place_labels(fig: plt.Figure, ax: plt.Axes, points: Sequence[dict], area: Sequence[float]) -> None:
    """Each label right (else left) of its marker, at the first vertical offset where its text overlaps no
    other label or marker and stays inside the axes; moved labels get a leader line to their marker."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radii = [(a / np.pi) ** 0.5 for a in area]  # marker radius in points
    centres = [ax.transData.transform((p["latency_ms"], 100 * p["accuracy"])) for p in points]
    pixels = fig.dpi / 72
    markers = [Bbox.from_extents(x - r * pixels, y - r * pixels, x + r * pixels, y + r * pixels)
               for (x, y), r in zip(centres, radii, strict=True)]
    placed: list = []
    steps = [0] + [sign * 11 * k for k in range(1, 8) for sign in (1, -1)]
    order = sorted(range(len(points)), key=lambda i: (points[i]["latency_ms"], -points[i]["accuracy"]))
    for i in order:
        p, gap = points[i], radii[i] + 3
        xy = (p["latency_ms"], 100 * p["accuracy"])
        others = placed + [m for j, m in enumerate(markers) if j != i]
        for dy in steps:
            for side in (1, -1):
                note = ax.annotate(p["label"], xy, xytext=(side * gap, dy), textcoords="offset points", fontsize=7,
                                   ha="left" if side > 0 else "right", va="center", zorder=5,
                                   arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if dy else None)
                note.get_window_extent(renderer)  # lays the annotation out
                box = Text.get_window_extent(note, renderer)  # the text alone, not its leader line
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                if inside and not any(box.overlaps(other) for other in others):
                    placed.append(box)
                    break
                note.remove()
            else:
                continue
            break
        else:  # nowhere free: beside the marker anyway
            ax.annotate(p["label"], xy, xytext=(gap, 0), textcoords="offset points", fontsize=7, va="center")


def pareto_front(points: Sequence[dict]) -> list[dict]:
    """Points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    front: list[dict] = []
    for p in sorted(points, key=lambda q: (q["latency_ms"], -q["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front
