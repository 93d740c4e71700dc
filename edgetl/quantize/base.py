"""What every quantization backend takes and gives back, so the front end can walk one ladder for all formats.

Backends never see datasets, specs or files of calibration sets: they get model inputs that are already
preprocessed (or tokenized) exactly as the bundle's runtime will feed them, batch by batch:

- images: float32 arrays ``(N, 3, H, W)`` (or ``(N, H, W, 3)`` for an NHWC bundle spec);
- text: ``{"input_ids": int64 (N, L), "attention_mask": int64 (N, L)}``, ``L`` varying between batches.

Validation batches pair such inputs with their integer labels, for backends that measure accuracy themselves
(NNCF's accuracy control).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgetl.runtime.engines import Inputs

#: Preprocessed calibration inputs, one entry per batch.
CalibBatches = Sequence[Inputs]
#: Preprocessed inputs with their labels, one entry per batch.
LabelledBatches = Sequence[tuple[Inputs, np.ndarray]]


def symmetric_int8(weight: np.ndarray, reduce_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (-127..127) of ``weight`` with one float32 scale per slice: the scale spans
    ``reduce_axes`` (kept as size-1 dims, so it broadcasts against ``weight``); an all-zero slice gets scale 1.

    The weight-only int8 storage of every backend (ONNX float-kept nodes and embedding rows, OpenVINO's
    reverted ops) uses this: the op still runs in float, so the full range applies (no 7-bit limit).
    """
    peak = np.max(np.abs(weight), axis=reduce_axes, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale


@dataclass(frozen=True)
class Attempt:
    """One rung of the accuracy ladder: what was tried and how it scored on the validation split.

    Attributes:
        step: Short name of the rung (``per-channel``, ``entropy calibration``, ``8 layers kept in float``...).
        settings: What the backend did (method, calibration, excluded layers...), JSON-ready.
        accuracy: The candidate's validation accuracy (0..1), or None when it failed to build.
        reference_accuracy: The FP32 artifact's accuracy on the same samples.
        ok: Whether it met the budget (and the agreement floor).
        note: Why it failed, when it did.
        agreement: Top-1 agreement with the FP32 artifact (0..1), or None when it failed to build.
    """

    step: str
    settings: dict[str, Any]
    accuracy: float | None
    reference_accuracy: float
    ok: bool
    note: str = ""
    agreement: float | None = None

    @property
    def drop(self) -> float | None:
        """Accuracy loss against FP32, in points (None when the candidate failed to build)."""
        return None if self.accuracy is None else 100 * (self.reference_accuracy - self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, drop included."""
        return {**asdict(self), "drop": self.drop}


@dataclass
class QuantizeResult:
    """What the front end did: the rungs tried, the one kept, or why INT8 was declined.

    Attributes:
        fmt: The artifact format.
        method: ``dynamic`` or ``static``.
        budget: Largest accepted accuracy drop, in points, against the FP32 artifact on the validation split.
        attempts: Every rung tried, in order.
        chosen: Index into ``attempts`` of the kept rung; None when INT8 was declined.
        declined: Why INT8 was declined (the bundle then holds the FP32 artifact); empty otherwise.
        validation_samples: How many validation samples the budget was measured on.
    """

    fmt: str
    method: str
    budget: float
    attempts: list[Attempt] = field(default_factory=list)
    chosen: int | None = None
    declined: str = ""
    validation_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for ``edgetl.json``'s ``quantization`` entry."""
        return {
            "format": self.fmt,
            "method": self.method,
            "budget_points": self.budget,
            "validation_samples": self.validation_samples,
            "attempts": [a.to_dict() for a in self.attempts],
            "chosen": None if self.chosen is None else self.attempts[self.chosen].step,
            "declined": self.declined or None,
        }


#: Tensors smaller than this (scalars, shapes, axes) stay float32.
MIN_WEIGHT_ELEMENTS = 16
FP16_MAX = 65504.0


def is_fp16_weight(values: np.ndarray) -> bool:
    """Whether an fp16 export stores this float32 constant as float16: a matrix or kernel (at least two axes
    longer than 1) of at least :data:`MIN_WEIGHT_ELEMENTS` values, all within float16's range.

    Vectors (biases, norm scales, in any rank: OpenVINO's ``[1, C, 1, 1]`` too) stay float32: they are a
    sliver of the file, and a bias's rounding error adds straight to its layer's output (EfficientNet-Lite0 on
    Fashion-MNIST, every weight float16: 3.5e-2 max logit diff with the biases cast, less without).
    """
    return (sum(d > 1 for d in values.shape) >= 2 and values.size >= MIN_WEIGHT_ELEMENTS
            and float(np.abs(values).max(initial=0.0)) <= FP16_MAX)
