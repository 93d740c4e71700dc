"""FP16 export held to a parity target: float16 weights, with the fewest leading weight ops kept in float32.

Rounding a weight to float16 moves it by up to 2^-11 of its size, and the logits move in proportion to
their scale and to the depth the error travels through: a trained EfficientNet-Lite0 on Fashion-MNIST (logits
near 5.5) moves by 3.1e-2 with every weight in float16. The error is born mostly in the earliest layers,
whose rounding travels through everything after them, so keeping the first K weight ops in float32 removes
most of it for a part of the file (that model: K = 22 of 50, 7.1e-3 on its 10,000 test images, 0.54x the
FP32 file).

:class:`Fp16Plan` writes the FP32 artifact once to a scratch folder, then asks the format to cast it with
the first K weight ops kept: K = 0 first, then the smallest K (found by doubling, then bisection) whose
largest logit difference against PyTorch, on up to :data:`SELECTION_SAMPLES` held-in inputs (the validation
split, then training samples), is within :data:`MARGIN` of the export's limit. The test split stays untouched
for the export's own verification. Each format says what a weight op is
(:meth:`Fp16Caster.fp16_weight_ops`) and how to cast (:meth:`Fp16Caster.cast_fp16`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgetl.errors import DataError
from edgetl.export.bundle import bundle_tokenizer
from edgetl.quantize.base import LabelledBatches
from edgetl.quantize.frontend import artifact_size
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    from edgetl.export import Exporter
    from edgetl.runfolder import Run

log = logging.getLogger("edgetl")

#: The selection aims at this share of the limit, so the test split (which it never sees) has headroom.
MARGIN = 0.5
#: Held-in samples (validation, then training) the selection is measured on.
SELECTION_SAMPLES = 256


class Fp16Caster(Protocol):
    """What a format offers for mixed FP16 (all three exporters implement it)."""

    def fp16_weight_ops(self, fp32_path: Path) -> int:
        """How many weight ops (or weight tensors) the FP32 artifact has, in execution order."""
        ...

    def cast_fp16(self, fp32_path: Path, dst: Path, *, keep: int = 0) -> dict[str, Any]:
        """Write ``dst``: ``fp32_path`` with float16 weights except the first ``keep`` weight ops'."""
        ...


@dataclass(frozen=True)
class Fp16Plan:
    """An FP16 export's parity target and where it is measured.

    Attributes:
        run: The run folder (its validation, then training samples are the selection set).
        spec: The bundle's spec.
        max_abs_diff: The export's limit on the largest logit difference (``inf``: not checked).
        max_rel_diff: The limit relative to the logits' scale (``None``: not checked).
        samples: Held-in samples to measure on.
    """

    run: Run
    spec: ModelSpec
    max_abs_diff: float
    max_rel_diff: float | None = None
    samples: int = SELECTION_SAMPLES

    def execute(self, exporter: Exporter, model: Any, stage: Path, model_path: Path, *, opset: int
                ) -> dict[str, Any]:
        """Write the FP16 artifact at ``model_path``; returns the exporter's facts with the ``fp16`` selection.

        Without a finite target (no absolute or relative limit) every weight op is cast, as before.
        """
        caster: Fp16Caster = exporter  # type: ignore[assignment]
        with tempfile.TemporaryDirectory(prefix="edgetl-fp16-") as tmp:
            fp32_path = Path(tmp) / "fp32" / exporter.model_file
            fp32_path.parent.mkdir()
            facts = dict(exporter.convert(model, self.spec, fp32_path, opset=opset) or {})
            n_ops = caster.fp16_weight_ops(fp32_path)
            try:
                batches = self._batches(stage)
            except DataError as exc:  # nothing to measure on: cast every weight, as a plain fp16 export does
                log.warning("fp16: every weight is cast (%s)", exc.message)
                batches = []
            reference = _reference(model, self.spec, batches) if batches else None
            target = self.target(reference) if reference is not None else math.inf
            if not math.isfinite(target):
                cast = caster.cast_fp16(fp32_path, model_path, keep=0)
                return {**facts, **cast, "fp16": {"kept_fp32": 0, "weight_ops": n_ops, "target": None}}
            started = time.perf_counter()
            trials: dict[int, float] = {}

            def trial(keep: int) -> bool:
                path = Path(tmp) / f"keep{keep}" / exporter.model_file
                path.parent.mkdir()
                caster.cast_fp16(fp32_path, path, keep=keep)
                trials[keep] = _max_diff(exporter.predictor(path), batches, reference)
                log.info("fp16 with the first %d of %d weight ops in float32: max |logit diff| %.2e on %d "
                         "held-in samples (target %.1e)", keep, n_ops, trials[keep], len(reference), target)
                return trials[keep] <= target

            keep = smallest_passing(trial, n_ops)  # n_ops (every weight float32) is never tried: it is FP32
            cast = caster.cast_fp16(fp32_path, model_path, keep=keep)
            selection = {
                "kept_fp32": keep, "weight_ops": n_ops, "target": target, "margin": MARGIN,
                "split": "validation, then train", "samples": len(reference),
                "max_abs_diff": trials.get(keep), "tried": {str(k): v for k, v in sorted(trials.items())},
                "bytes": artifact_size(model_path), "fp32_bytes": artifact_size(fp32_path),
                "seconds": round(time.perf_counter() - started, 1),
            }
        if keep:
            log.info("fp16: kept the first %d of %d weight ops in float32 to stay within %.1e (%.2fx the FP32 "
                     "size)", keep, n_ops, target, selection["bytes"] / selection["fp32_bytes"])
        return {**facts, **cast, "fp16": selection}

    def target(self, reference: np.ndarray) -> float:
        """The selection's limit on max |logit diff|: :data:`MARGIN` of the tighter of the two limits."""
        limit = self.max_abs_diff
        if self.max_rel_diff is not None:
            limit = min(limit, self.max_rel_diff * float(np.abs(reference).max()))
        return MARGIN * limit

    def _batches(self, stage: Path) -> LabelledBatches:
        """Up to :attr:`samples` inputs: the validation split first, then training samples when it is smaller
        (parity is about numbers, not accuracy, so any input the model was not tested on will do)."""
        from edgetl.verify import labelled_batches

        tokenizer = bundle_tokenizer(stage, self.spec)
        data = self.run.data()
        batches: list[Any] = []
        left = self.samples
        for split in (data.val, data.train):
            if left > 0 and len(split) > 0:
                batches += labelled_batches(split, self.spec, limit=left, tokenizer=tokenizer)
                left -= min(left, len(split))
        if not batches:
            raise DataError("the run has no validation or training samples to choose the fp16 weights on")
        return batches


def smallest_passing(passes: Callable[[int], bool], n: int) -> int:
    """The smallest ``k`` in ``0..n`` with ``passes(k)``, taking ``passes(n)`` as true and the rest as monotone:
    0, then doubling (1, 2, 4...), then bisection between the last failure and the first success."""
    if passes(0):
        return 0
    low, high = 0, 1
    while high < n and not passes(high):
        low, high = high, min(2 * high, n)
    while high - low > 1:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid
    return high


def _reference(model: Any, spec: ModelSpec, batches: LabelledBatches) -> np.ndarray:
    from edgetl.verify import torch_reference

    predict = torch_reference(model, spec)
    return np.concatenate([np.asarray(predict(inputs)) for inputs, _ in batches])


def _max_diff(predict: Any, batches: LabelledBatches, reference: np.ndarray) -> float:
    logits = np.concatenate([np.asarray(predict(inputs)) for inputs, _ in batches])
    diff = np.abs(logits.astype(np.float64) - reference)
    return float("nan") if np.isnan(diff).any() else float(diff.max())
