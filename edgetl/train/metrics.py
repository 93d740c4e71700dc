"""Classification metrics from integer labels and predictions (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, pred]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def classification_metrics(labels: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class accuracy (recall), plus the confusion matrix.

    Classes absent from ``labels`` are left out of the macro average.
    """
    cm = confusion_matrix(labels, preds, len(classes))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return {
        "n": len(labels),
        "accuracy": float(tp.sum() / max(1, len(labels))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": {c: float(r) for c, r, p in zip(classes, recall, present, strict=True) if p},
        "confusion_matrix": cm.tolist(),
    }
