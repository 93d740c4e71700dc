"""Fit check for small devices: does the model fit the target's flash and RAM?

The model's size is its files on disk (what goes into flash or storage). Its peak activation memory comes
from the graph: every intermediate tensor's size at batch 1 (shapes from ONNX shape inference, OpenVINO's
shape propagation, or the TFLite file's tensors), live from the operator that writes it to the last one that
reads it, in the graph's execution order; the peak is the largest sum of live tensors at any operator. That
is what a greedy arena planner (TFLite Micro's, ONNX Runtime's) needs at least; in-place operators can need
less and fragmentation more. Weights are not activations: with ``weights_in: flash`` (microcontrollers
executing in place) RAM holds the activations only, with ``weights_in: ram`` the weights too.

"Does not fit" is a result (``fits: false`` with the reasons), not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.bench.targets import TargetProfile
from edgetl.runtime.bundle import Manifest

log = logging.getLogger("edgetl")
#: One operator: the ids of the tensors it reads and of those it writes.
Step = tuple[list[Any], list[Any]]


@dataclass(frozen=True)
class GraphMemory:
    """What the graph needs at batch 1.

    Attributes:
        model_bytes: The model's files on disk.
        peak_activation_bytes: The peak of live intermediate tensors (None when the graph could not be read).
        operators: Operators in the graph (0 when unread).
        unknown_tensors: Tensors whose shape could not be inferred (counted as 0 bytes).
        method: How the peak was found, or why it is unknown.
    """

    model_bytes: int
    peak_activation_bytes: int | None
    operators: int
    unknown_tensors: int
    method: str


def fit_check(manifest: Manifest, profile: TargetProfile) -> dict[str, Any] | None:
    """The fit of ``manifest``'s model on ``profile``'s limits; None when the profile sets none.

    Returns:
        ``fits`` (True, False, or None when a needed figure is unknown), ``reasons`` (one line per limit
        exceeded or unchecked), the limits (``ram_kb``, ``flash_kb``, ``weights_in``) and the needs
        (``model_kb``, ``peak_activation_kb``, ``ram_needed_kb``), plus :class:`GraphMemory`'s fields.
    """
    if profile.ram_kb is None and profile.flash_kb is None:
        return None
    memory = graph_memory(manifest)
    model_kb = memory.model_bytes / 1024
    peak_kb = None if memory.peak_activation_bytes is None else memory.peak_activation_bytes / 1024
    ram_needed = None if peak_kb is None else peak_kb + (model_kb if profile.weights_in == "ram" else 0)
    reasons, verdicts = [], []
    if profile.flash_kb is not None:
        verdicts.append(model_kb <= profile.flash_kb)
        if not verdicts[-1]:
            reasons.append(f"model files {model_kb:,.0f} KB > flash {profile.flash_kb:,} KB")
    if profile.ram_kb is not None:
        verdicts.append(None if ram_needed is None else ram_needed <= profile.ram_kb)
        if ram_needed is None:
            reasons.append(f"RAM not checked: {memory.method}")
        elif not verdicts[-1]:
            what = "peak activations" + (" + weights" if profile.weights_in == "ram" else "")
            reasons.append(f"{what} {ram_needed:,.0f} KB > RAM {profile.ram_kb:,} KB")
    fits = False if False in verdicts else None if None in verdicts else True
    return {"fits": fits, "reasons": reasons, "ram_kb": profile.ram_kb, "flash_kb": profile.flash_kb,
            "weights_in": profile.weights_in, "batch": 1, "model_kb": round(model_kb, 1),
            "peak_activation_kb": None if peak_kb is None else round(peak_kb, 1),
            "ram_needed_kb": None if ram_needed is None else round(ram_needed, 1), **asdict(memory)}


def graph_memory(manifest: Manifest) -> GraphMemory:
    """Model size and peak activation memory at batch 1 of a bundle's model (see the module docstring)."""
    model_bytes = sum(p.stat().st_size for p in model_files(manifest.model_path))
    reader = _READERS.get(manifest.format)
    if reader is None:
        return GraphMemory(model_bytes, None, 0, 0, f"no graph reader for {manifest.format} models")
    dims = {"batch": 1, "sequence": manifest.spec.max_length or 1}
    try:
        steps, sizes = reader(manifest.model_path, dims)
    except Exception as exc:  # each library raises its own classes; the fit check reports, never crashes
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.info("could not read the graph of %s: %s", manifest.model_path, detail)
        return GraphMemory(model_bytes, None, 0, 0, f"graph not readable: {detail}")
    peak = peak_live_bytes(steps, sizes)
    unknown = sum(1 for size in sizes.values() if size is None)
    method = f"liveness of {len(sizes)} intermediate tensors over {len(steps)} operators, batch 1"
    return GraphMemory(model_bytes, peak, len(steps), unknown, method)


def model_files(model_path: Path) -> list[Path]:
    """The model file and its sidecars (OpenVINO's ``.bin``, ONNX external data ``model.onnx.data``)."""
    siblings = [p for p in model_path.parent.iterdir() if p.is_file() and p != model_path
                and (p.stem == model_path.stem or p.name.startswith(model_path.name))
                and p.suffix in (".bin", ".data", ".weights")]
    return [model_path, *sorted(siblings)]


def peak_live_bytes(steps: list[Step], sizes: dict[Any, int | None]) -> int:
    """The largest sum of live activation bytes at any step.

    Args:
        steps: Operators in execution order, each ``(input ids, output ids)``.
        sizes: Bytes of every activation (graph inputs and operator outputs; None: unknown, counted 0).
            Ids missing from ``sizes`` (weights, constants) are not counted.

    A tensor is live from the step writing it (graph inputs: from the start) to the last step reading it;
    graph outputs are never freed.
    """
    last_use = {t: i for i, (inputs, _) in enumerate(steps) for t in inputs}
    produced = {t for _, outputs in steps for t in outputs}
    live = {t: sizes[t] or 0 for t in sizes if t not in produced}  # graph inputs
    peak = sum(live.values())
    for i, (inputs, outputs) in enumerate(steps):
        live.update({t: sizes[t] or 0 for t in outputs if t in sizes})
        peak = max(peak, sum(live.values()))
        for tensor in inputs:
            if last_use[tensor] == i:
                live.pop(tensor, None)
    return int(peak)


def _nbytes(shape: Iterable[int | None], itemsize: int) -> int | None:
    dims = list(shape)
    return None if any(d is None or d < 0 for d in dims) else int(np.prod(dims, dtype=np.int64)) * itemsize


def _onnx_graph(path: Path, dims: dict[str, int]) -> tuple[list[Step], dict[Any, int | None]]:
    import onnx
    from onnx import helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}

    def size(name: str) -> int | None:
        info = infos.get(name)
        if info is None or not info.type.HasField("tensor_type"):
            return None
        tensor = info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else _symbolic(d.dim_param, dims)
                 for d in tensor.shape.dim]
        return _nbytes(shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize)

    steps = [([i for i in n.input if i and i not in constants], [o for o in n.output if o])
             for n in graph.node if n.op_type != "Constant"]
    names = {i.name for i in graph.input if i.name not in constants} | {o for _, outs in steps for o in outs}
    return steps, {name: size(name) for name in names}


def _symbolic(name: str, dims: dict[str, int]) -> int:
    """A named dynamic axis at batch 1: a sequence-like axis at the model's max length, anything else 1."""
    lowered = name.lower()
    return dims["sequence"] if any(k in lowered for k in ("seq", "length", "token")) else dims["batch"]


def _openvino_graph(path: Path, dims: dict[str, int]) -> tuple[list[Step], dict[Any, int | None]]:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    steps, sizes = [], {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in ("Constant", "Result"):
            continue
        outputs = [(op.get_friendly_name(), i) for i in range(op.get_output_size())]
        for key, out in zip(outputs, op.outputs(), strict=True):
            shape = [d.get_length() if d.is_static else None for d in out.get_partial_shape()]
            shape = [dims["batch"] if d is None and j == 0 else dims["sequence"] if d is None else d
                     for j, d in enumerate(shape)]
            sizes[key] = _nbytes(shape, out.get_element_type().size)
        inputs = [(src.get_node().get_friendly_name(), src.get_index())
                  for src in (i.get_source_output() for i in op.inputs())]
        if kind != "Parameter":
            steps.append((inputs, outputs))
    return steps, sizes


def _tflite_graph(path: Path, dims: dict[str, int]) -> tuple[list[Step], dict[Any, int | None]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only way to the operator list without TensorFlow
    steps = [([i for i in op["inputs"] if i >= 0], [o for o in op["outputs"] if o >= 0]) for op in ops]
    produced = {o for _, outs in steps for o in outs}
    names = produced | {d["index"] for d in interpreter.get_input_details()}
    sizes = {}
    for index in names:
        detail = tensors.get(index)
        sizes[index] = None if detail is None else _nbytes(detail["shape"], np.dtype(detail["dtype"]).itemsize)
    return steps, sizes


_READERS: dict[str, Callable[[Path, dict[str, int]], tuple[list[Step], dict[Any, int | None]]]] = {
    "onnx": _onnx_graph, "openvino": _openvino_graph, "tflite": _tflite_graph,
}
