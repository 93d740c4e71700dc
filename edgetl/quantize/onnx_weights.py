"""Int8 storage for the weights of the nodes a QDQ graph keeps in float: float compute, a quarter of the bytes.

The accuracy ladder keeps the nodes around the most sensitive tensors out of ONNX Runtime's static quantizer,
and the quantizer then leaves those nodes untouched: float activations *and* float32 weights. On
EfficientNet-Lite0 the 22 nodes of the ladder's last rung hold enough weights to make the INT8 file 0.56x of
FP32 instead of about 0.3x. Most of those nodes were kept float for their activations, not their weights, so
:func:`store_weights_int8` gives their weights int8 storage and a ``DequantizeLinear`` in front of the float
op: symmetric, one scale per output channel, the full int8 range (-127..127; the 7-bit limit of the quantized
kernels does not apply, the op itself runs in float). The activations stay float, as the ladder asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgetl.quantize.base import symmetric_int8

#: Op type -> index of its weight input.
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def store_weights_int8(model: Any, nodes: Iterable[str], keep: Iterable[str] = ()) -> dict[str, int]:
    """Store the float32 weight initializers of ``nodes`` (by name) as int8 + ``DequantizeLinear``, in place.

    Args:
        model: An ``onnx.ModelProto`` (opset >= 13: per-axis ``DequantizeLinear``).
        nodes: Names of float nodes whose weights to store as int8 (those of other op types are skipped).
        keep: Weight initializer names to leave float32 (weights whose own quantization was found damaging).

    Returns:
        ``{"tensors": ..., "bytes_saved": ...}``: weights converted and float32 bytes saved (before scales).
    """
    from onnx import helper, numpy_helper

    wanted, kept = set(nodes), set(keep)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    axes: dict[str, int] = {}
    for node in graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if node.name not in wanted or index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        tensor = initializers.get(name)
        if tensor is None or name in kept or tensor.data_type != 1 or len(tensor.dims) < 2:
            continue
        axis = _channel_axis(node, len(tensor.dims))
        if axis is None or axes.get(name, axis) != axis:
            kept.add(name)  # one weight read along two different axes: leave it float
            axes.pop(name, None)
            continue
        axes[name] = axis
    new_nodes, saved = [], 0
    for name, axis in axes.items():
        weight = numpy_helper.to_array(initializers[name]).astype(np.float32)
        q, scale = symmetric_int8(weight, tuple(i for i in range(weight.ndim) if i != axis))
        scale = scale.reshape(-1)  # per-axis DequantizeLinear takes a 1-D scale
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_w8"),
                                  numpy_helper.from_array(scale, f"{name}_w8_scale"),
                                  numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), f"{name}_w8_zero")])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_w8", f"{name}_w8_scale", f"{name}_w8_zero"],
                                          [name], name=f"{name}_w8_dq", axis=axis))
        saved += 3 * weight.size
    for node in reversed(new_nodes):  # inputs are initializers: the front of the list is topologically safe
        graph.node.insert(0, node)
    return {"tensors": len(new_nodes), "bytes_saved": int(saved)}


def _channel_axis(node: Any, rank: int) -> int | None:
    """The weight axis of ``node``'s output channels (Conv: 0; Gemm: 0 or 1 by ``transB``; MatMul 2-D: 1)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1 if rank == 2 else None
