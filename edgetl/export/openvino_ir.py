"""Write OpenVINO IR compactly: shared duplicate constants, and an XML without what the reader derives.

``openvino.save_model`` writes every Constant node as its own XML layer, indents every element, and lists
the dims of every port, although ``read_model`` infers each op's output shape again from its inputs (port
dims are optional to the IR reader; names and precisions are not). On a small INT8 model the XML is a large
share of the IR (MobileNetV3-Small INT8: 365 KB of 1.37 MB, with 501 Const layers for 53 weights, most of
them the four scalar limits of each FakeQuantize, whose input and output ranges are the same numbers).

:func:`save_compact` writes the same graph with:

- constants of equal type, shape and bytes merged into one node (:func:`share_constants`);
- no indentation, and no ``<dim>`` in the ports of layers other than ``Parameter`` and ``Result`` (the
  model's inputs and outputs keep their shapes, for readers that show them);
- no op attribute the reader would set to the same value anyway (:func:`drop_default_attributes`: an
  ``Add``'s ``auto_broadcast="numpy"``, a ``Convolution``'s ``auto_pad="explicit"`` or ``strides="1, 1"``):
  about 10 KB of the MobileNetV3-Small INT8 XML's 200 KB, each one checked by reading the IR back.

The weights file is unchanged (OpenVINO already stores equal constant data once). Every IR edgetl writes
is read back and compared with PyTorch at export, so a reader that needed the dropped dims would fail there.

:func:`half_vectors` is for INT8 IRs alone: it stores the per-channel float32 vectors of quantized ops (weight
scales, FakeQuantize limits, biases) as float16, which changes the numbers slightly, so the INT8 ladder
measures the file it writes.
"""

from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

#: Layers whose port dims are kept: the model's inputs and outputs.
KEEP_DIMS = ("Parameter", "Result")
#: Layers whose attributes are all kept: a Constant's locate its data, a Parameter's give the input's type.
KEEP_ATTRIBUTES = ("Const", "Parameter")
#: Fewest elements of a float32 vector :func:`half_vectors` stores as float16: below it the Convert layer (and
#: its edge) the XML needs, about 220 bytes, outweighs the 2 bytes an element saves.
HALF_MIN_ELEMENTS = 128
#: Largest error the float16 cast may put on an element: this share of it, plus this share squared of the
#: vector's largest magnitude (so that a scale of a nearly dead channel is judged on the vector's scale).
HALF_TOLERANCE = 1e-3
#: Whether dropping each (op type, opset, attribute, value) read back as the same graph, per process.
_DEFAULT: dict[tuple[str, ...], bool] = {}


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
    drop_default_attributes(ov, tree.getroot(), path.with_suffix(".bin"))
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(_xml(tree.getroot()), encoding="utf-8")
    os.replace(staged, path)


def half_vectors(ov: Any, model: Any, min_elements: int = HALF_MIN_ELEMENTS) -> int:
    """Store an INT8 model's per-channel float32 vectors as float16, each widened by a Convert; in place.

    The vectors are those of quantized computation: the scales that turn int8 weights back into floats, the
    limits of FakeQuantize ops and the biases added to convolution and MatMul outputs. In a small INT8 IR
    they are a visible share of the file (MobileNetV3-Small: 89 KB of float32 in a 1.2 MB IR whose int8
    weights are 0.92 MB). NNCF's weight compression stores its scales as float16 the same way. Vectors shorter
    than ``min_elements``, and those float16 cannot hold within :data:`HALF_TOLERANCE`, stay float32. The
    model computes in float32 as before; its outputs move by about as much as another calibration would move
    them, which is why the INT8 ladder measures the accuracy of the written file.

    Returns:
        How many constants were cast.
    """
    from openvino import opset13

    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        targets = op.output(0).get_target_inputs()
        if op.get_output_size() != 1 or not targets or not all(_quantization_vector(ov, port) for port in targets):
            continue
        data = np.asarray(op.get_data(), np.float32)
        if data.size < min_elements:
            continue
        with np.errstate(over="ignore"):  # beyond float16's range: inf, refused just below
            half = data.astype(np.float16)
        error = np.abs(half.astype(np.float32) - data)
        if not np.all(error <= HALF_TOLERANCE * (np.abs(data) + HALF_TOLERANCE * float(np.abs(data).max()))):
            continue
        widened = opset13.convert(opset13.constant(half), ov.Type.f32)
        op.output(0).replace(widened.output(0))
        count += 1
    return count


def _quantization_vector(ov: Any, port: Any) -> bool:
    """Whether an op's input port takes a FakeQuantize limit, an int8 weight's scale or a bias."""
    node, index = port.get_node(), port.get_index()
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return index > 0
    if kind not in ("Multiply", "Add") or node.get_input_size() != 2:
        return False
    other = node.input_value(1 - index).get_node()
    if kind == "Multiply":  # Constant(int8) -> Convert -> Multiply(scale)
        source = other.input_value(0) if other.get_type_name() == "Convert" else None
        return (source is not None and source.get_node().get_type_name() == "Constant"
                and source.get_element_type() in (ov.Type.i8, ov.Type.u8))
    return other.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")


def drop_default_attributes(ov: Any, root: ET.Element, weights: Path) -> int:
    """Remove, in place, the ``<data>`` attributes whose absence reads back as the same graph; returns how many
    distinct (op type, opset, attribute, value) were dropped.

    The IR reader leaves an attribute missing from ``<data>`` at the value the op's constructor gives it, so an
    attribute equal to that default says nothing. Which ones are defaults is not hard-coded: every candidate
    (each attribute value of an op type, outside :data:`KEEP_ATTRIBUTES`) is dropped, the IR read back with its
    weights, and every op's type, attributes and output types compared with the IR as it was. Each candidate
    is first tried alone (the verdict is remembered for the process: it is the reader's, not the model's),
    then the ones that changed nothing are dropped together and checked once more.
    """
    core = ov.Core()
    tensor = ov.Tensor(np.fromfile(weights, np.uint8)) if weights.stat().st_size else None
    candidates = {key for _, _, key in _attributes(root)}

    def graph(dropped: set[tuple[str, ...]]) -> list[tuple] | None:
        trial = copy.deepcopy(root)
        _drop(trial, dropped)
        try:
            return _signature(core.read_model(_xml(trial).encode(), tensor))
        except Exception:  # OpenVINO raises RuntimeError subclasses: the reader needs one of them
            return None

    reference = graph(set())
    if reference is None:
        return 0
    for candidate in candidates - _DEFAULT.keys():
        _DEFAULT[candidate] = graph({candidate}) == reference
    dropped = {c for c in candidates if _DEFAULT[c]}
    if dropped and graph(dropped) != reference:  # each alone is a default, together they are not: keep them all
        return 0
    _drop(root, dropped)
    return len(dropped)


def _attributes(root: ET.Element) -> list[tuple[ET.Element, ET.Element, tuple[str, ...]]]:
    """``(layer, data, (type, opset, attribute, value))`` for every ``<data>`` attribute outside
    :data:`KEEP_ATTRIBUTES`."""
    return [(layer, data, (layer.get("type"), layer.get("version"), name, value))
            for layer in root.iter("layer") if layer.get("type") not in KEEP_ATTRIBUTES
            for data in layer.findall("data") for name, value in data.attrib.items()]


def _drop(root: ET.Element, dropped: set[tuple[str, ...]]) -> None:
    """Remove the ``dropped`` attributes, and each ``<data>`` left empty."""
    for layer, data, key in _attributes(root):
        if key in dropped:
            del data.attrib[key[2]]
            if not data.attrib:
                layer.remove(data)


def _signature(model: Any) -> list[tuple]:
    """Each op's type, opset, attributes and output element types and shapes, in execution order."""
    return [(op.get_type_name(), op.get_type_info().version_id, op.get_attributes(),
             [(str(out.get_element_type()), str(out.get_partial_shape())) for out in op.outputs()])
            for op in model.get_ordered_ops()]


def _xml(root: ET.Element) -> str:
    # ElementTree escapes ">" inside attribute values, so " />" only ever closes an empty element
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode").replace(" />", "/>")
