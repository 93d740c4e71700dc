"""OpenVINO exporter: torch model -> ONNX (temporary) -> OpenVINO IR (``model.xml`` + ``model.bin``).

The ONNX step is :mod:`edgetl.export.onnx` (checked opset, named inputs, dynamic batch and sequence axes),
so both formats share one graph; OpenVINO's ONNX frontend reads that file and ``openvino.save_model``
writes the IR, keeping the input names and dynamic axes. ``fp32`` keeps float32 weights (``save_model``
compresses to FP16 unless told not to); ``fp16`` stores FP16 weights, half the size, which the CPU widens
back to float32 to compute (see :mod:`edgetl.runtime.openvino_engine`). The temporary ONNX file lives in
the system's temporary folder, never in the bundle.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, ExportError
from edgetl.export import onnx as onnx_export
from edgetl.export.bundle import OUTPUT_NAME, input_names
from edgetl.export.openvino_ir import save_compact
from edgetl.runtime.openvino_engine import OpenVINOEngine, error_line
from edgetl.spec import ModelSpec
from edgetl.verify import Predictor

log = logging.getLogger("edgetl")

ROUTE = "torch -> onnx -> openvino"


class OpenVINOExporter:
    """Writes and runs ``model.xml`` / ``model.bin`` (the ``openvino`` format of :data:`edgetl.export.EXPORTERS`)."""

    format = "openvino"
    model_file = "model.xml"
    precisions = ("fp32", "fp16", "int8")

    def check_options(self, *, opset: int, precision: str = "fp32", spec: ModelSpec | None = None) -> None:
        """Refuse an opset the ONNX step cannot write, and an unknown precision (int8: see edgetl.quantize)."""
        onnx_export.EXPORTER.check_options(opset=opset)
        if precision not in self.precisions:
            raise ConfigError(f"unknown precision {precision!r}", f"choose one of: {', '.join(self.precisions)}")

    def bundle_spec(self, spec: ModelSpec) -> ModelSpec:
        """OpenVINO keeps the run's input layout."""
        return spec

    def convert(self, model: Any, spec: ModelSpec, path: Path, *, opset: int = 18) -> dict[str, Any]:
        """Export ``model`` to an FP32 ONNX file in a temporary folder, convert it, and save the FP32 IR at
        ``path`` (:meth:`cast_fp16` and the INT8 plan start from it).

        Returns:
            The route, the OpenVINO version and the weights' precision, for ``edgetl.json``.

        Raises:
            ConfigError: An option this exporter cannot honour.
            ExportError: The ONNX export, the conversion or the save failed, or the IR lost an input name
                or a dynamic axis.
        """
        self.check_options(opset=opset, spec=spec)
        ov = _require_openvino()
        path = Path(path)
        with tempfile.TemporaryDirectory(prefix="edgetl-openvino-") as tmp:
            onnx_path = Path(tmp) / "intermediate.onnx"  # logged as such by the ONNX step
            onnx_export.EXPORTER.convert(model, spec, onnx_path, opset=opset)
            ov_model = _convert(ov, onnx_path)
            _check_io(ov_model, spec)
            _save(ov, ov_model, path)  # before the ONNX file goes
        size = path.stat().st_size + path.with_suffix(".bin").stat().st_size
        log.info("wrote %s + %s (%.2f MB, fp32 weights)", path.name, path.with_suffix(".bin").name, size / 1e6)
        return {"route": ROUTE, "openvino_version": OpenVINOEngine.version(), "weights": "fp32",
                "weights_file": path.with_suffix(".bin").name}

    def predictor(self, path: Path, threads: int | None = None) -> Predictor:
        """A callable running the written IR in OpenVINO on the CPU (float32 inference)."""
        return OpenVINOEngine(path, threads=threads).run

    def fp16_weight_ops(self, fp32_path: Path) -> int:
        """The FP32 IR's float32 weight constants (see :func:`weight_constants`)."""
        ov = _require_openvino()
        return len(weight_constants(ov, ov.Core().read_model(str(fp32_path))))

    def cast_fp16(self, fp32_path: Path, dst: Path, *, keep: int = 0) -> dict[str, Any]:
        """Write the IR at ``fp32_path`` to ``dst`` with float16 weights except the first ``keep`` constants'."""
        ov = _require_openvino()
        ov_model = ov.Core().read_model(str(fp32_path))
        n = cast_weights(ov, ov_model, keep=keep)
        _save(ov, ov_model, Path(dst))
        return {"weights": "fp16" if not keep else f"fp16 except the first {keep} of {n} weight tensors (fp32)",
                "compute": "float32"}


def _require_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(f"OpenVINO export needs the openvino package ({exc})", "pip install openvino") from None
    return openvino


def _convert(ov: Any, onnx_path: Path) -> Any:
    """Read the ONNX file with OpenVINO's ONNX frontend.

    ``Core.read_model`` rather than ``convert_model``: the same frontend and graph, but ``convert_model``
    also starts OpenVINO's usage telemetry, which forks a process to send events to Google Analytics (an
    export tool should not phone home, and forking beside JAX's threads risks a deadlock).
    """
    try:
        return ov.Core().read_model(str(onnx_path))
    except Exception as exc:  # openvino raises its own classes (OpConversionFailure, RuntimeError...)
        raise ExportError(f"OpenVINO cannot convert the ONNX model: {error_line(exc)}",
                          "the model may use an op OpenVINO does not support; run with -v and report the backbone"
                          ) from None


def weight_constants(ov: Any, ov_model: Any) -> list[Any]:
    """The model's float32 Constant nodes that are weights (``quantize.base.is_fp16_weight``: kernels, matrices,
    embedding tables; not biases or scalars), in execution order."""
    from edgetl.quantize.base import is_fp16_weight

    return [op for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32
            and is_fp16_weight(op.get_data())]


def cast_weights(ov: Any, ov_model: Any, *, keep: int = 0) -> int:
    """Store the weight constants after the first ``keep`` as float16, each followed by a Convert to float32 (the
    form ``save_model(compress_to_fp16=True)`` writes): compute stays float32. Returns the number of constants."""
    from openvino import opset13

    constants = weight_constants(ov, ov_model)
    for const in constants[keep:]:
        half = opset13.constant(const.get_data().astype(np.float16))
        widened = opset13.convert(half, ov.Type.f32)
        widened.set_friendly_name(const.get_friendly_name())
        const.output(0).replace(widened.output(0))
    return len(constants)


def _save(ov: Any, ov_model: Any, path: Path) -> None:
    """Write the IR compactly (:func:`edgetl.export.openvino_ir.save_compact`), weights as they are (fp16 weights
    are cast by :func:`cast_weights`; ``save_model``'s own compression would cast them all)."""
    try:
        save_compact(ov, ov_model, path)
    except Exception as exc:
        raise ExportError(f"OpenVINO cannot write {path.name}: {error_line(exc)}",
                          "check that the bundle folder is writable and the disk is not full") from None


def _check_io(ov_model: Any, spec: ModelSpec) -> None:
    """Confirm the IR's input and output names and that the batch (and sequence) axes stayed dynamic.

    Raises:
        ExportError: Naming what is wrong.
    """
    problems = []
    n_dynamic = 2 if spec.is_text else 1
    io = [("input", ov_model.inputs, input_names(spec), n_dynamic), ("output", ov_model.outputs, [OUTPUT_NAME], 1)]
    for kind, ports, names, dynamic in io:
        got = [port.get_any_name() for port in ports]
        if got != names:
            problems.append(f"{kind}s {got}, expected {names}")
            continue
        for port in ports:
            if any(dim.is_static for dim in list(port.get_partial_shape())[:dynamic]):
                problems.append(f"{kind} {port.get_any_name()!r} has a fixed axis where a dynamic one is expected")
    if problems:
        raise ExportError("the OpenVINO IR is not as expected: " + "; ".join(problems), "report the backbone")


EXPORTER = OpenVINOExporter()
