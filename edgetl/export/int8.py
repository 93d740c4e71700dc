"""INT8 export of one format: FP32 artifact -> accuracy ladder -> the kept candidate (or FP32) -> speed check.

:class:`Int8Plan` checks everything it can before any conversion (method, calibration set, validation
split), so a refused INT8 export costs nothing; :meth:`Int8Plan.execute` then writes the FP32 artifact to a
scratch folder, hands it to :func:`edgetl.quantize.frontend.quantize_artifact`, copies the kept candidate
into the bundle, and times it against the FP32 twin on this machine.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetl.errors import ConfigError, DataError
from edgetl.export.bundle import bundle_tokenizer
from edgetl.quantize.base import CalibBatches, LabelledBatches
from edgetl.quantize.frontend import (
    DEFAULT_BUDGET,
    QAT_FORMATS,
    artifact_size,
    copy_artifact,
    quantize_artifact,
    resolve_method,
    time_pair,
)
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    from edgetl.export import Exporter
    from edgetl.runfolder import Run

log = logging.getLogger("edgetl")
BATCH = 64


@dataclass
class Int8Plan:
    """What an INT8 export will do, checked up front.

    Attributes:
        run: The run folder.
        fmt: Artifact format.
        spec: The bundle's spec (its layout is the one the artifact takes).
        method: ``dynamic`` or ``static``.
        calib_path: The calibration set folder, or None.
        budget: Largest accepted validation-accuracy drop against FP32, in points.
        min_agreement: Smallest top-1 agreement with FP32 a rung needs (the verification's own floor).
        budget_samples: Validation samples the budget is measured on (None: the whole split).
        qat_steps: Optimiser steps of the quantization-aware-training rung (None: its default).
    """

    run: Run
    fmt: str
    spec: ModelSpec
    method: str
    calib_path: Path | None
    budget: float
    budget_samples: int | None
    min_agreement: float = 0.0
    qat_steps: int | None = None

    @classmethod
    def make(
        cls, run: Run, fmt: str, spec: ModelSpec, *, calib: str | Path | None, method: str, budget: float | None,
        budget_samples: int | None, min_agreement: float = 0.0, qat_steps: int | None = None,
    ) -> Int8Plan:
        """Check the options against the run; raises ConfigError/DataError with a hint on bad input."""
        calib_path = Path(calib) if calib is not None else None
        if calib_path is not None:
            _calibration_set(calib_path, run.spec)  # fails now on a missing or mismatched set
        method = resolve_method(method, fmt, text=spec.is_text, has_calib=calib_path is not None)
        if budget_samples is not None and budget_samples < 1:
            raise DataError(f"budget_samples must be >= 1, got {budget_samples}")
        if qat_steps is not None and qat_steps < 1:
            raise ConfigError(f"qat_steps must be >= 1, got {qat_steps}")
        return cls(run, fmt, spec, method, calib_path,
                   DEFAULT_BUDGET if budget is None else float(budget), budget_samples, min_agreement, qat_steps)

    def execute(
        self, exporter: Exporter, model: Any, stage: Path, model_path: Path, *, opset: int, progress: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Write the kept artifact (INT8, or FP32 when INT8 was declined) to ``model_path``.

        Returns:
            The exporter's artifact facts and the ``quantization`` entry for ``edgetl.json``.
        """
        tokenizer = bundle_tokenizer(stage, self.spec)
        calib = self._calib_batches(tokenizer)
        validation = self._validation(tokenizer)
        with tempfile.TemporaryDirectory(prefix="edgetl-int8-") as tmp:
            fp32_path = Path(tmp) / "fp32" / exporter.model_file
            fp32_path.parent.mkdir()
            facts = exporter.convert(model, self.spec, fp32_path, opset=opset)
            result, kept, kept_facts = quantize_artifact(
                self.fmt, fp32_path, method=self.method, text=self.spec.is_text, calib=calib,
                validation=validation, budget=self.budget, predictor=exporter.predictor, workdir=Path(tmp) / "ladder",
                min_agreement=self.min_agreement,
                progress=(lambda line: log.info("%s", line)) if progress else None, qat=self._qat(model))
            entry = result.to_dict()
            entry["calibration"] = str(self.calib_path) if self.calib_path is not None else None
            fp32_size = artifact_size(fp32_path)
            if kept is None:
                copy_artifact(fp32_path, model_path)
                entry.update(speed=None, fp32_bytes=fp32_size, int8_bytes=None)
                return facts, entry
            copy_artifact(kept, model_path)
            speed = time_pair(exporter.predictor(fp32_path, threads=1), exporter.predictor(kept, threads=1),
                              _one_sample(validation[0][0]))
            entry.update(speed=speed, fp32_bytes=fp32_size, int8_bytes=artifact_size(kept), backend=kept_facts)
        _report_speed(speed, entry)
        return facts, entry

    def _qat(self, model: Any) -> Callable[[Path], dict[str, Any]] | None:
        """The quantization-aware-training rung (ONNX and OpenVINO image models): fine-tunes on the run's train
        split, writes a QDQ ONNX file (:func:`~edgetl.quantize.qat.qat_onnx`) or an INT8 IR read from one
        (:func:`~edgetl.quantize.qat_openvino.ir_from_qdq`)."""
        if self.fmt not in QAT_FORMATS or self.spec.is_text:
            return None

        def build(path: Path) -> dict[str, Any]:
            import torch
            from torch.utils.data import DataLoader

            from edgetl.data.torch_data import TorchImageDataset, eval_transform
            from edgetl.quantize.qat import QatSettings, qat_onnx

            settings = QatSettings() if self.qat_steps is None else QatSettings(steps=self.qat_steps)
            dataset = TorchImageDataset(self.run.data().train, eval_transform(self.run.spec))
            generator = torch.Generator().manual_seed(self.run.config.train.seed)

            def batches() -> DataLoader:
                return DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator)

            started = time.perf_counter()

            def report(step: int, steps: int, loss: float) -> None:
                left = (time.perf_counter() - started) / step * (steps - step)
                log.info("QAT step %d/%d: loss %.4f (about %.0f min left)", step, steps, loss, left / 60)

            def qdq(dst: Path) -> dict[str, Any]:
                return qat_onnx(model, (3, *self.spec.input_size), batches, dst, settings=settings, progress=report)

            if self.fmt == "openvino":
                from edgetl.quantize.qat_openvino import ir_from_qdq

                return ir_from_qdq(qdq, path)
            return qdq(path)

        return build

    def _calib_batches(self, tokenizer: Any) -> CalibBatches | None:
        if self.calib_path is None:
            return None
        return _calibration_set(self.calib_path, self.run.spec).batches(self.spec, tokenizer=tokenizer)

    def _validation(self, tokenizer: Any) -> LabelledBatches:
        """The first ``budget_samples`` of the run's validation split, preprocessed for the artifact."""
        from edgetl.verify import labelled_batches

        split = self.run.data().val
        if len(split) == 0:
            raise DataError("the run has no validation samples to measure the INT8 budget on",
                            "re-train with val_fraction > 0, or export fp32")
        return list(labelled_batches(split, self.spec, limit=self.budget_samples, batch_size=BATCH,
                                     tokenizer=tokenizer))


def _calibration_set(path: Path, spec: ModelSpec) -> Any:
    from edgetl.quantize.calibration import load_calibration

    calib = load_calibration(path)
    calib.check_spec(spec)
    return calib


def _one_sample(inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return {k: v[:1] for k, v in inputs.items()}
    return inputs[:1]


def _report_speed(speed: dict[str, Any], entry: dict[str, Any]) -> None:
    ratio = entry["int8_bytes"] / entry["fp32_bytes"]
    if speed["faster"]:
        log.info("INT8 pays here: %.2f ms vs %.2f ms FP32 (%.2fx) at batch 1, %.2fx the size",
                 speed["int8_ms"], speed["fp32_ms"], speed["speedup"], ratio)
    else:
        log.warning("INT8 is NOT faster than FP32 on this machine: %.2f ms vs %.2f ms at batch 1 (%.2fx); it is "
                    "%.2fx the size. Keep it for size, or export fp32 for speed.",
                    speed["int8_ms"], speed["fp32_ms"], speed["speedup"], ratio)
