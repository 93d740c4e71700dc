"""Short names for a quantized ONNX graph: the same model, a smaller file.

A QDQ graph has about three nodes for every node of its FP32 source, and ONNX Runtime's quantizer names
each new tensor after the old one (``/backbone/blocks.1/blocks.1.0/conv_dw/Conv_output_0_QuantizeLinear_Output``).
For a 0.9M-parameter MobileNetV3-Small those names are 195 KB: 15% of the INT8 file, and the difference
between 0.34x and 0.30x of the FP32 size. Renaming every internal tensor and node (graph inputs and outputs
keep their names, which are the bundle's contract) changes nothing the runtime computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def compact_names(path: str | Path) -> dict[str, int]:
    """Rename the internal tensors and nodes of the ONNX file at ``path`` in place (``t0``, ``t1``... ``n0``...).

    Graph inputs and outputs keep their names; ``value_info`` (shape hints the runtime re-derives) and doc
    strings are dropped. Subgraphs (``If``/``Loop`` bodies) are left as they are: the file is then not renamed.

    Returns:
        ``{"bytes_before": ..., "bytes_after": ...}``.
    """
    import onnx

    path = Path(path)
    before = path.stat().st_size
    model = onnx.load(str(path))
    if _has_subgraphs(model.graph):
        return {"bytes_before": before, "bytes_after": before}
    _rename(model.graph)
    model.doc_string = ""
    tmp = path.with_name(f".{path.name}.compact")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return {"bytes_before": before, "bytes_after": path.stat().st_size}


def _has_subgraphs(graph: Any) -> bool:
    import onnx

    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node
               for a in n.attribute)


def _rename(graph: Any) -> None:
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.name, node.doc_string = f"n{index}", ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    del graph.value_info[:]
