"""Quantization-aware training for OpenVINO: the QAT rung's QDQ ONNX graph, read into an INT8 IR.

:func:`edgetl.quantize.qat.qat_onnx` fine-tunes the model with fake quantization and writes a QDQ ONNX file.
OpenVINO's ONNX frontend reads each QuantizeLinear/DequantizeLinear pair of an activation as a FakeQuantize
and each int8 weight with its DequantizeLinear as int8 + Convert + Multiply, which is the form OpenVINO's CPU
plugin runs as INT8. Two things matter for that IR (measured on EfficientNet-Lite0 after 200 QAT steps, first
2,000 Fashion-MNIST test images, against the QDQ graph run as written by ONNX Runtime with its graph
optimizations off; ``benchmarks/qat_qdq_openvino.py``):

- The weights stay int8 through constant folding (:func:`fold_keeping_int8`). The frontend's graph
  computes each DequantizeLinear's broadcast shapes with ShapeOf/Broadcast/Reshape ops: unfolded, the IR's
  XML was 760 KB and the whole IR 0.316x of FP32. OpenVINO's ConstantFolding folds those, but also folds each
  int8 weight and its Convert into a float32 weight (13.4 MB). So the int8 weights are swapped for
  Parameters of the same shape while it runs, then put back.
- OpenVINO's MOC transformations (what ``ov.convert_model`` applies) are left out: after them the CPU plugin
  ran this graph with 96.8% top-1 agreement with the QDQ reference (89.75% accuracy, reference 90.65%); the
  IR written here agrees on 98.5% (90.65%; ONNX Runtime's own kernels: 99.55%, 90.60%). It is 3.90 MB, 0.28x
  of the FP32 IR.

The IR is saved as every edgetl INT8 IR is (:func:`edgetl.quantize.openvino_nncf._save`: compact names, float16
vectors where they fit).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetl.errors import ExportError


def ir_from_qdq(write_qdq: Callable[[Path], dict[str, Any]], dst: str | Path) -> dict[str, Any]:
    """Run ``write_qdq`` (the ONNX QAT rung, :func:`edgetl.quantize.qat.qat_onnx` with its arguments bound) into
    a temporary QDQ file and write that graph as an INT8 IR at ``dst`` (:func:`qdq_to_ir`).

    Returns:
        ``write_qdq``'s facts, with the IR's (``format``, ``fake_quantize``, ``float16_vectors``) and the
        seconds of both steps.

    Raises:
        ExportError: The model cannot be traced, converted or read by OpenVINO (the ladder records it).
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetl-qat-") as tmp:
        onnx_path = Path(tmp) / "qat.onnx"
        facts = write_qdq(onnx_path)
        facts.update(qdq_to_ir(onnx_path, Path(dst)))
    facts["seconds"] = round(time.perf_counter() - started, 1)
    return facts


def qdq_to_ir(src: Path, dst: Path) -> dict[str, Any]:
    """Read the QDQ ONNX file ``src`` with OpenVINO and save it as an INT8 IR at ``dst`` (see the module notes).

    Returns:
        Facts for the bundle: ``format``, ``fake_quantize`` (FakeQuantize ops in the IR) and
        ``float16_vectors`` (vectors stored as float16).

    Raises:
        ExportError: OpenVINO cannot read the file, or the IR holds no int8 weight.
    """
    from edgetl.quantize.openvino_nncf import _require_openvino, _save
    from edgetl.runtime.openvino_engine import error_line

    ov = _require_openvino()
    from openvino._offline_transformations import compress_quantize_weights_transformation

    try:
        model = ov.Core().read_model(str(src))
        compress_quantize_weights_transformation(model)
        fold_keeping_int8(ov, model)
    except Exception as exc:  # OpenVINO raises RuntimeError and its own classes
        raise ExportError(f"QAT: OpenVINO cannot read the QDQ graph ({error_line(exc)})",
                          "use the post-training rungs, or export fp32") from None
    ops = model.get_ops()
    if not any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops):
        raise ExportError("QAT: OpenVINO read the QDQ graph without int8 weights", "use the post-training rungs")
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    return {"format": "OpenVINO IR from the QDQ graph", "fake_quantize": fake_quantize,
            "float16_vectors": _save(ov, model, dst)}


def fold_keeping_int8(ov: Any, model: Any) -> int:
    """Fold ``model``'s constant subgraphs in place, except the int8/uint8 weights (rank >= 2) and their Convert.

    Each such weight is replaced by a Parameter of its type and shape while OpenVINO's ConstantFolding runs,
    then put back, so what the folding sees as variable stays as stored. Returns how many were kept.
    """
    from openvino import opset13

    from edgetl.quantize.openvino_nncf import _fold

    kept = []
    for op in model.get_ops():
        if (op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
                and op.get_output_partial_shape(0).rank.get_length() >= 2):
            stand_in = opset13.parameter(op.get_output_partial_shape(0), op.get_element_type())
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(stand_in.output(0))
            kept.append((stand_in, op))
    model.add_parameters([stand_in for stand_in, _ in kept])
    _fold(model)
    for stand_in, weight in kept:
        for target in list(stand_in.output(0).get_target_inputs()):
            target.replace_source_output(weight.output(0))
        model.remove_parameter(stand_in)
    model.validate_nodes_and_infer_types()
    return len(kept)
