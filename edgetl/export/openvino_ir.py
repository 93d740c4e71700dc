"""Write OpenVINO IR compactly: shared duplicate constants, and an XML without what the reader derives.

``openvino.save_model`` writes every Constant node as its own XML layer, indents every element, and lists
the dims of every port, although ``read_model`` infers each op's output shape again from its inputs (port
dims are optional to the IR reader; names and precisions are not). On a small INT8 model the XML is a large
share of the IR (MobileNetV3-Small INT8: 365 KB of 1.37 MB, with 501 Const layers for 53 weights, most of
them the four scalar limits of each FakeQuantize, whose input and output ranges are the same numbers).

:func:`save_compact` writes the same graph with:

- constants of equal type, shape and bytes merged into one node (:func:`share_constants`);
- no indentation, and no ``<dim>`` in the ports of layers other than ``Parameter`` and ``Result`` (the
  model's inputs and outputs keep their shapes, for readers that show them).

The weights file is unchanged (OpenVINO already stores equal constant data once). Every IR edgetl writes
is read back and compared with PyTorch at export, so a reader that needed the dropped dims would fail there.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

#: Layers whose port dims are kept: the model's inputs and outputs.
KEEP_DIMS = ("Parameter", "Result")


def share_constants(model: Any) -> int:
    """Point every use of a Constant at the first Constant of equal element type, shape and bytes; returns how
    many were merged (they drop out of the graph)."""
    seen: dict[tuple[str, tuple[int, ...], bytes], Any] = {}
    merged = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        data = op.get_data()
        key = (str(op.get_element_type()), tuple(data.shape), data.tobytes())
        first = seen.setdefault(key, op)
        if first is not op:
            op.output(0).replace(first.output(0))
            merged += 1
    return merged


def save_compact(ov: Any, model: Any, path: Path) -> None:
    """``ov.save_model(model, path, compress_to_fp16=False)`` with shared constants and a compact XML
    (see the module's docstring). ``model`` is changed in place (its duplicate constants merged)."""
    path = Path(path)
    share_constants(model)
    ov.save_model(model, str(path), compress_to_fp16=False)
    tree = ET.parse(path)
    for layer in tree.getroot().iter("layer"):
        if layer.get("type") in KEEP_DIMS:
            continue
        for port in layer.iter("port"):
            for dim in port.findall("dim"):
                port.remove(dim)
    for element in tree.getroot().iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        element.tail = None
    # ElementTree escapes ">" inside attribute values, so " />" only ever closes an empty element
    text = ET.tostring(tree.getroot(), encoding="unicode").replace(" />", "/>")
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text('<?xml version="1.0"?>\n' + text, encoding="utf-8")
    os.replace(staged, path)
