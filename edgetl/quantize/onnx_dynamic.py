"""Dynamic INT8 for ONNX models with ONNX Runtime: int8 weights, activations quantized per call.

The documented recipe: ``quant_pre_process`` (ONNX Runtime graph optimisation and shape inference; the
symbolic shape pass is skipped, as ONNX Runtime advises for transformer graphs, whose shapes it cannot
always follow) then ``quantize_dynamic``. MatMul/Gemm weights (the bulk of a transformer's compute) become
int8; attention's activation-by-activation products and the embedding tables stay float.

Defaults were chosen on MiniLM-L6 fine-tuned on Rotten Tomatoes (1,281 test texts, FP32 82.44%):

=========================  ========  =================  ==============
weights                    accuracy  agreement w/ FP32  max |logit diff|
=========================  ========  =================  ==============
int8 per tensor            81.11%    94.77%             0.94
uint8 per tensor           82.59%    96.57%             0.56
int8 per channel           82.44%    97.66%             0.46
int8 per channel, 7-bit    82.67%    97.74%             0.44
=========================  ========  =================  ==============

Per-channel scales matter most. ``reduce_range`` (7-bit weights) avoids the saturation of the u8 x s8
multiply-add that x86 CPUs without VNNI use (ONNX Runtime's documented caveat) and costs nothing here.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetl.errors import ExportError
from edgetl.quantize.onnx_compact import compact_names

log = logging.getLogger("edgetl")
#: The ops whose weights are quantized: the linear layers, which hold nearly all of a transformer's weights.
OP_TYPES = ("MatMul", "Gemm")


def quantize_onnx_dynamic(
    src: str | Path, dst: str | Path, *, per_channel: bool = True, reduce_range: bool = True,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a dynamic-INT8 copy of the FP32 ONNX model ``src`` to ``dst``.

    Args:
        src: FP32 ``.onnx`` file (weights inline).
        dst: Output file (one file, weights inline).
        per_channel: One scale per output channel instead of per tensor.
        reduce_range: 7-bit weights (safe on every x86 CPU; see the module notes).
        exclude: Node names left in float (see :func:`edgetl.quantize.onnx_static.sensitivity`).

    Returns:
        Facts for the bundle: tool, method, weight granularity, excluded nodes.

    Raises:
        ExportError: ONNX Runtime could not quantize the graph.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgetl-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=list(OP_TYPES),
                             nodes_to_exclude=list(exclude) or None)
        except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many kinds
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExportError(f"dynamic INT8 quantization failed: {detail}",
                              "export fp32 instead, and report the backbone") from None
    compact_names(dst)
    log.info("dynamic INT8: %.2f MB -> %.2f MB", Path(src).stat().st_size / 1e6, Path(dst).stat().st_size / 1e6)
    import onnxruntime

    return {"tool": f"onnxruntime {onnxruntime.__version__}", "method": "dynamic",
            "weights": "int8 per channel" if per_channel else "int8 per tensor",
            "activations": "float (quantized per call)", "reduce_range": reduce_range, "excluded": list(exclude)}
