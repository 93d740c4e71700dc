"""Fused self-attention for BERT-style ONNX graphs: each layer's attention subgraph becomes one ``Attention``.

ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``, ``model_type="bert"``) fuses
layer norms and GELU in edgetl's text export but finds no attention there, so the dynamic quantizer leaves
three separate int8 Q/K/V products (each re-quantizing the same input) and a float chain of Reshape,
Transpose, MatMul, Mul, Add, Softmax, MatMul, Transpose, Reshape per layer. :func:`fuse_attention` matches
that chain as the legacy TorchScript exporter writes it for a transformers encoder with eager attention and
an additive mask ``(1 - mask) * c`` built from the ``attention_mask`` input, and replaces it with ONNX
Runtime's ``com.microsoft.Attention``: the three weights packed into one ``(hidden, 3 * hidden)`` matrix,
the 0/1 mask passed as an int32 ``(batch, sequence)`` mask index. ``quantize_dynamic`` then turns each one
into ``QAttention`` (one int8 product for Q, K and V, the rest in one kernel).

The result runs on ONNX Runtime only, so it belongs in ONNX Runtime's INT8 artifact, never in the plain
FP32 ONNX file other converters (OpenVINO, TFLite) read. A layer whose subgraph differs in any detail is
left as it is: fusion is an optimisation, never a requirement.

Measured on MiniLM-L6 (AVX-512 VNNI, one thread, sequence 128) the fused INT8 graph is no faster than the
unfused one and its logits are bit-identical: ONNX Runtime's own session optimizer already merges the
unfused graph's int8 products (``MatMulIntegerToFloat``) and scaled score product (``FusedMatMul``). So
:func:`edgetl.quantize.onnx_dynamic.quantize_onnx_dynamic` leaves it off unless asked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
#: Largest additive mask constant still read as "drop" (eager attention uses the dtype's minimum; -10000 in
#: older exports). ONNX Runtime's Attention applies its own filter value where the mask index is 0.
MASK_DROP_MAX = -1e4


@dataclass
class _Layer:
    """One matched attention subgraph."""

    hidden: str
    weights: tuple[str, str, str]
    biases: tuple[str, str, str]
    matmuls: tuple[str, str, str]
    num_heads: int
    output: str
    nodes: list[Any]


class _Graph:
    """Producer/consumer maps and constant lookup over an ONNX graph."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self._array = numpy_helper.to_array

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output (through ``Identity`` nodes), else None."""
        while name not in self.initializers and (node := self.producer.get(name)) is not None \
                and node.op_type == "Identity":
            name = node.input[0]
        if name in self.initializers:
            return self._array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return self._array(node.attribute[0].t)
        return None

    def parent(self, node: Any, index: int, op_type: str) -> Any | None:
        """The producer of ``node.input[index]`` if it is an ``op_type`` node used by ``node`` alone."""
        if index >= len(node.input):
            return None
        parent = self.producer.get(node.input[index])
        if parent is None or parent.op_type != op_type or len(self.consumers[parent.output[0]]) != 1:
            return None
        return parent

    def only_child(self, node: Any, op_type: str) -> Any | None:
        """The single consumer of ``node``'s first output if it is an ``op_type`` node."""
        users = self.consumers[node.output[0]]
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _perm(node: Any) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _projection(g: _Graph, transpose: Any, perm: list[int]) -> tuple[Any, Any, Any, Any, str, str] | None:
    """``Transpose(perm)(Reshape(Add(bias, MatMul(x, W))))``: the four nodes, then W and the bias names."""
    if transpose is None or _perm(transpose) != perm:
        return None
    reshape = g.parent(transpose, 0, "Reshape")
    add = reshape and g.parent(reshape, 0, "Add")
    if add is None:
        return None
    for i in (0, 1):
        matmul = g.parent(add, i, "MatMul")
        bias = add.input[1 - i]
        if matmul is not None and g.const(bias) is not None and g.const(matmul.input[1]) is not None:
            return transpose, reshape, add, matmul, matmul.input[1], bias
    return None


def _heads(g: _Graph, reshape: Any, hidden_size: int) -> int | None:
    """Heads from a ``(batch, seq, heads, head_size)`` Reshape (a constant or a Concat of parts; -1 allowed)."""
    shape = g.const(reshape.input[1])
    if shape is None:
        concat = g.producer.get(reshape.input[1])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            return None
        parts = [g.const(name) for name in concat.input[2:]]
        if any(p is None or p.size != 1 for p in parts):
            return None
        shape = np.array([0, 0, *(int(p.reshape(-1)[0]) for p in parts)])
    if len(shape) != 4:
        return None
    heads, size = int(shape[2]), int(shape[3])
    if heads == -1 and size > 0 and hidden_size % size == 0:
        heads = hidden_size // size
    return heads if heads > 0 and (size == -1 or heads * size == hidden_size) else None


def _is_mask_bias(g: _Graph, name: str, mask_input: str) -> bool:
    """Whether ``name`` is ``(1 - float(mask[:, None, None, :])) * c`` with ``c <= MASK_DROP_MAX``."""
    mul = g.producer.get(name)
    if mul is None or mul.op_type != "Mul":
        return False
    for i in (0, 1):
        c, sub = g.const(mul.input[1 - i]), g.producer.get(mul.input[i])
        if c is None or c.size != 1 or float(c.reshape(-1)[0]) > MASK_DROP_MAX or sub is None or sub.op_type != "Sub":
            continue
        one, cast = g.const(sub.input[0]), g.producer.get(sub.input[1])
        if one is None or one.size != 1 or float(one.reshape(-1)[0]) != 1.0 or cast is None or cast.op_type != "Cast":
            continue
        source = cast.input[0]
        axes: list[int] = []
        while source != mask_input:
            node = g.producer.get(source)
            if node is None or node.op_type != "Unsqueeze":
                return False
            found = g.const(node.input[1]) if len(node.input) > 1 else None
            axes += [int(a) for a in (found if found is not None else [])]
            source = node.input[0]
        return sorted(axes) in ([1, 1], [1, 2])  # x[:, None][:, None] or x[:, None, None]
    return False


def _match(g: _Graph, softmax: Any, mask_input: str) -> _Layer | None:
    """The attention subgraph around ``softmax``, or None where any part differs from the expected one."""
    add = g.parent(softmax, 0, "Add")
    if add is None:
        return None
    for i in (0, 1):
        scaled, bias = g.producer.get(add.input[i]), add.input[1 - i]
        if scaled is not None and scaled.op_type in ("Mul", "Div") and _is_mask_bias(g, bias, mask_input):
            break
    else:
        return None
    scale = g.const(scaled.input[1])
    qk = g.parent(scaled, 0, "MatMul")
    if qk is None or scale is None or scale.size != 1 or len(g.consumers[scaled.output[0]]) != 1:
        return None
    query = _projection(g, g.parent(qk, 0, "Transpose"), [0, 2, 1, 3])
    key = _projection(g, g.parent(qk, 1, "Transpose"), [0, 2, 3, 1])
    context = g.only_child(softmax, "MatMul")
    if query is None or key is None or context is None or context.input[0] != softmax.output[0]:
        return None
    value = _projection(g, g.parent(context, 1, "Transpose"), [0, 2, 1, 3])
    merge = g.only_child(context, "Transpose")
    out = merge and g.only_child(merge, "Reshape")
    if value is None or out is None or _perm(merge) != [0, 2, 1, 3]:
        return None
    hidden = query[3].input[0]
    if key[3].input[0] != hidden or value[3].input[0] != hidden:
        return None
    shapes = {g.const(p[4]).shape for p in (query, key, value)}
    if len(shapes) != 1 or len(dims := next(iter(shapes))) != 2 or dims[0] != dims[1]:
        return None
    heads = _heads(g, query[1], dims[1])
    if heads is None or any(_heads(g, p[1], dims[1]) != heads for p in (key, value)):
        return None
    factor = float(scale.reshape(-1)[0])
    factor = 1.0 / factor if scaled.op_type == "Div" else factor
    if dims[1] % heads or not math.isclose(factor, 1.0 / math.sqrt(dims[1] // heads), rel_tol=1e-4):
        return None
    nodes = [*query[:4], *key[:4], *value[:4], qk, scaled, add, softmax, context, merge, out]
    return _Layer(hidden, (query[4], key[4], value[4]), (query[5], key[5], value[5]),
                  (query[3].name, key[3].name, value[3].name), heads, out.output[0], nodes)


def fuse_attention(model: Any, *, mask_input: str = "attention_mask") -> list[dict[str, str]]:
    """Replace each matched attention subgraph of ``model`` with ``com.microsoft.Attention``, in place.

    Args:
        model: An ``onnx.ModelProto`` of a BERT-style encoder (see the module notes for the pattern).
        mask_input: The graph input holding the 0/1 attention mask.

    Returns:
        One ``{"attention": new node name, "query"/"key"/"value": the fused MatMuls' names}`` per fused layer
        (empty when nothing matched; the graph is then unchanged).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if mask_input not in {i.name for i in graph.input}:
        return []
    g = _Graph(graph)
    layers = [layer for node in graph.node if node.op_type == "Softmax" and (layer := _match(g, node, mask_input))]
    if not layers:
        return []
    mask_index = f"{mask_input}_int32"
    graph.node.insert(0, helper.make_node("Cast", [mask_input], [mask_index], f"{mask_input}/Cast_int32",
                                          to=TensorProto.INT32))
    fused = []
    for layer in layers:
        name = layer.matmuls[0].rsplit("/", 2)[0] + "/Attention"  # .../attention/self/query/MatMul -> .../self
        weight = np.concatenate([g.const(w) for w in layer.weights], axis=1).astype(np.float32)
        bias = np.concatenate([g.const(b).reshape(-1) for b in layer.biases]).astype(np.float32)
        graph.initializer.extend([numpy_helper.from_array(weight, f"{name}.qkv_weight"),
                                  numpy_helper.from_array(bias, f"{name}.qkv_bias")])
        attention = helper.make_node(
            "Attention", [layer.hidden, f"{name}.qkv_weight", f"{name}.qkv_bias", mask_index], [layer.output],
            name, domain=MS_DOMAIN, num_heads=layer.num_heads)
        position = list(graph.node).index(layer.nodes[-1])
        graph.node.insert(position, attention)
        for node in layer.nodes:
            graph.node.remove(node)
        fused.append({"attention": name, "query": layer.matmuls[0], "key": layer.matmuls[1],
                      "value": layer.matmuls[2]})
    _prune(graph)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nothing reads (the orphaned shape arithmetic), then unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    produced = {out for node in graph.node for out in node.output}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
