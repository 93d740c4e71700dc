"""Static INT8 for ONNX models with ONNX Runtime: QDQ graphs, weights and activations calibrated ahead of time.

``quantize_static`` writes QuantizeLinear/DequantizeLinear pairs around every quantized op (the QDQ format
ONNX Runtime's CPU kernels fuse); activation ranges come from running the calibration batches through the
FP32 graph with one of three methods:

- ``minmax``: the observed range (fast; one outlier widens it for every value);
- ``percentile``: the 99.999th percentile of absolute values (clips rare outliers);
- ``entropy``: the range that minimises the KL divergence of the quantized histogram (TensorRT's method).

Weights are int8, per output channel by default; activations uint8 (ONNX Runtime's advice for x86), weights
7-bit (``reduce_range``) so that x86 CPUs without VNNI cannot saturate their u8 x s8 multiply-add.

:func:`sensitivity` ranks the graph's tensors by how much quantizing each one alone distorts it (signal to
quantization noise ratio, from ONNX Runtime's ``qdq_loss_debug``), so the accuracy ladder can keep the worst
ones in float. :func:`quantize_onnx_fp16` is the FP16 variant (float16 weights, float32 compute and I/O).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ExportError
from edgetl.quantize.base import CalibBatches, is_fp16_weight
from edgetl.quantize.onnx_compact import compact_names
from edgetl.quantize.onnx_weights import store_weights_int8

log = logging.getLogger("edgetl")

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: Ops whose inputs, weights and outputs are quantized (the rest run in float between them).
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "HardSigmoid", "HardSwish",
                 "GlobalAveragePool", "AveragePool", "MaxPool", "Concat", "Reshape", "Flatten", "Transpose",
                 "Squeeze", "Unsqueeze", "Sigmoid", "Softmax", "Gather", "Where")
PERCENTILE = 99.999


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed batches (restartable)."""

    def __init__(self, batches: CalibBatches, input_names: Sequence[str]) -> None:
        self.batches, self.input_names = list(batches), list(input_names)
        self._it: Iterator[Any] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        if isinstance(batch, dict):
            return {k: np.ascontiguousarray(v, np.int64) for k, v in batch.items() if k in self.input_names}
        return {self.input_names[0]: np.ascontiguousarray(batch, np.float32)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _input_names(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def pad_text_batches(batches: CalibBatches) -> list[Any]:
    """Text batches padded (with mask 0) to one common length, so calibration sees one shape per tensor."""
    if not batches or not isinstance(batches[0], dict):
        return list(batches)
    length = max(b["input_ids"].shape[1] for b in batches)
    out = []
    for b in batches:
        pad = length - b["input_ids"].shape[1]
        out.append({k: np.pad(np.asarray(v, np.int64), ((0, 0), (0, pad))) for k, v in b.items()})
    return out


def even_batches(batches: CalibBatches, size: int = 32) -> list[Any]:
    """The same samples in batches of one size (histogram calibration stacks every batch into one array).

    Uses the largest batch size up to ``size`` that divides the sample count; when that is below 8 (a prime
    count, say), the last few samples are left out instead of running one sample at a time.
    """
    batches = pad_text_batches(batches)
    if not batches:
        return []
    if isinstance(batches[0], dict):
        joined: Any = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        total = len(joined["input_ids"])
    else:
        joined = np.concatenate(batches)
        total = len(joined)
    step = max(d for d in range(1, min(size, total) + 1) if total % d == 0)
    if step < 8 <= total:
        step, total = min(size, total), total - total % min(size, total)
    if isinstance(joined, dict):
        return [{k: v[i:i + step] for k, v in joined.items()} for i in range(0, total, step)]
    return [joined[i:i + step] for i in range(0, total, step)]


def quantize_onnx_static(
    src: str | Path,
    dst: str | Path,
    calib: CalibBatches,
    *,
    calibration: str = "minmax",
    per_channel: bool = True,
    exclude: Sequence[str] = (),
    reduce_range: bool = True,
    cache_dir: str | Path | None = None,
    compact: bool = True,
    excluded_weights: str = "int8",
    float_weights: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a static-INT8 QDQ copy of the FP32 ONNX model ``src`` to ``dst``.

    Args:
        src: FP32 ``.onnx`` file (weights inline).
        dst: Output file.
        calib: Preprocessed calibration batches (see :mod:`edgetl.quantize.base`).
        calibration: ``minmax``, ``percentile`` or ``entropy`` (see the module notes).
        per_channel: One weight scale per output channel instead of per tensor.
        exclude: Node names left in float (from :func:`sensitivity`).
        reduce_range: 7-bit weights (safe on x86 CPUs without VNNI).
        cache_dir: Folder for calibration caches: ranges measured once per method and ``src`` are reused
            when only ``exclude`` changes.
        compact: Give the graph's internal tensors and nodes short names (a smaller file, the same model; see
            :mod:`edgetl.quantize.onnx_compact`). Off when the names must match ``src``'s (sensitivity).
        excluded_weights: ``int8``: the weights of the ``exclude`` nodes are stored as int8 and dequantized
            in front of the float op (their activations stay float; see :mod:`edgetl.quantize.onnx_weights`);
            ``float``: they stay float32, as ONNX Runtime leaves them.
        float_weights: Weight initializers kept float32 even so (the sensitive weights of the ranking).

    Returns:
        Facts for the bundle: tool, method, calibration, granularity, types, excluded nodes, sample count.

    Raises:
        ExportError: Unknown calibration method, no calibration data, or ONNX Runtime failed.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method {calibration!r}", f"choose one of {CALIBRATION_METHODS}")
    if excluded_weights not in ("int8", "float"):
        raise ExportError(f"unknown excluded_weights {excluded_weights!r}", "choose 'int8' or 'float'")
    if not calib:
        raise ExportError("static INT8 needs calibration data and got none",
                          "make a calibration set with `edgetl calibrate` and pass it with --calib")
    batches = even_batches(calib)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration]
    extra = {"CalibPercentile": PERCENTILE} if calibration == "percentile" else {}
    if calibration != "minmax":
        extra["CalibTensorRangeSymmetric"] = False
    cache = Path(cache_dir) / f"ranges-{calibration}.json" if cache_dir is not None else None
    with tempfile.TemporaryDirectory(prefix="edgetl-qdq-") as tmp:
        prepared = _prepare(Path(src), Path(tmp) / "prepared.onnx")
        shape_nodes = shape_subgraph_nodes(prepared)
        try:
            with _quiet():
                quantize_static(str(prepared), str(dst), _Reader(batches, _input_names(prepared)),
                                quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=list(QUANTIZED_OPS),
                                nodes_to_exclude=[*shape_nodes, *exclude] or None,
                                calibrate_method=method, extra_options=extra,
                                calibration_cache_path=str(cache) if cache is not None else None)
        except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many kinds
            raise ExportError(f"static INT8 quantization failed: {_first_line(exc)}",
                              "try another --calibration method, or export fp32") from None
    stored = {"tensors": 0, "bytes_saved": 0}
    if exclude and excluded_weights == "int8":
        stored = _store_excluded_weights(Path(dst), exclude, float_weights)
    if compact:
        compact_names(dst)
    return {
        "tool": f"onnxruntime {_ort_version()}", "method": "static", "format": "QDQ",
        "calibration": calibration, "weights": "int8 per channel" if per_channel else "int8 per tensor",
        "activations": "uint8", "reduce_range": reduce_range, "excluded": list(exclude),
        "excluded_weights": excluded_weights if exclude else None, "excluded_weights_int8": stored["tensors"],
        "float_weights": list(float_weights) if exclude else [],
        "shape_nodes_float": len(shape_nodes),
        "calibration_samples": int(sum(_batch_len(b) for b in batches)),
    }


def _store_excluded_weights(path: Path, exclude: Sequence[str], keep: Sequence[str]) -> dict[str, int]:
    """Int8 storage for the float weights of the excluded nodes of the QDQ file at ``path`` (rewritten in place)."""
    import onnx

    model = onnx.load(str(path))
    stored = store_weights_int8(model, exclude, keep)
    if stored["tensors"]:
        onnx.save(model, str(path))
    return stored


def shape_subgraph_nodes(path: str | Path) -> list[str]:
    """Nodes that compute shapes, not activations: ``Shape``/``Size`` and every node fed only by them and constants.

    Exporters trace size arithmetic as graph ops (TF-style "same" padding computes its pads from the input's
    height and width, for instance). Quantizing those ops rounds a pad of 1.0 to 0.996, which a later
    ``Cast`` to int64 truncates to 0: every later feature map is shifted and the model collapses (seen on
    EfficientNet-Lite0: 91% -> 37%). They must stay float, whatever else is quantized.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    shape_tensors: set[str] = set()
    names = []
    for node in graph.node:  # ONNX graphs are stored in topological order
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant":
            constants.update(node.output)
        elif node.op_type in ("Shape", "Size") or (
            any(i in shape_tensors for i in inputs) and all(i in shape_tensors or i in constants for i in inputs)
        ):
            shape_tensors.update(node.output)
            names.append(node.name)
    return names


def _prepare(src: Path, out: Path) -> Path:
    """ONNX Runtime's pre-processing (graph optimisation, shape inference), as its quantization guide advises."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception as exc:  # a graph it cannot optimise is still quantizable as exported
        log.debug("quant_pre_process skipped: %s", _first_line(exc))
        return src
    return out


@dataclass(frozen=True)
class Sensitive:
    """One tensor of the graph and what quantizing it alone costs.

    Attributes:
        tensor: The tensor's name (an activation or a weight).
        sqnr_db: Signal to quantization noise ratio in dB (lower: more damage).
        nodes: The quantized nodes to keep in float to keep this tensor float (its producer and consumers).
        op_types: The op type of each of ``nodes``.
        weight: Whether ``tensor`` is a weight (an initializer), not an activation.
    """

    tensor: str
    sqnr_db: float
    nodes: tuple[str, ...]
    op_types: tuple[str, ...] = ()
    weight: bool = False


def sensitivity(
    src: str | Path, calib: CalibBatches, *, calibration: str = "minmax", per_channel: bool = True,
    max_batches: int = 4,
) -> list[Sensitive]:
    """Rank the FP32 model's quantized tensors from most to least damaged by INT8 (ONNX Runtime's qdq_loss_debug).

    Quantizes ``src`` once, runs a few calibration batches through both graphs and measures, per activation
    and weight tensor, the noise quantizing that tensor alone adds.

    Args:
        src: FP32 ``.onnx`` file.
        calib: Calibration batches (the first ``max_batches`` are used to measure).
        calibration: The calibration method of the quantized graph to analyse.
        per_channel: Weight granularity of that graph.
        max_batches: Batches run through both graphs.

    Returns:
        The ranking, lowest SQNR first.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    batches = even_batches(calib)[:max_batches]
    with tempfile.TemporaryDirectory(prefix="edgetl-sensitivity-") as tmp:
        tmp_path = Path(tmp)
        prepared = _prepare(Path(src), tmp_path / "prepared.onnx")
        qdq = tmp_path / "qdq.onnx"
        quantize_onnx_static(prepared, qdq, batches, calibration=calibration, per_channel=per_channel,
                             compact=False)
        names = _input_names(prepared)
        try:
            with _quiet():
                modify_model_output_intermediate_tensors(str(qdq), str(tmp_path / "qdq_aug.onnx"))
                qdq_acts = collect_activations(str(tmp_path / "qdq_aug.onnx"), _Reader(batches, names))
                act_errors = _activation_damage(create_activation_matching(qdq_acts), _channel_dims(prepared),
                                                [_batch_len(b) for b in batches])
                weights = {name: match for name, match in create_weight_matching(str(prepared), str(qdq)).items()
                       if np.asarray(match["float"]).ndim > 1 and np.any(match["float"])}  # biases: int32, exact
            weight_errors = compute_weight_error(weights)
        except Exception as exc:  # debugging helpers of onnxruntime: plain exceptions
            raise ExportError(f"sensitivity analysis failed: {_first_line(exc)}",
                              "quantize without excluding layers, or export fp32") from None
        graph = onnx.load(str(prepared), load_external_data=False).graph
        shape_nodes = set(shape_subgraph_nodes(prepared))
    quantized = [n for n in graph.node if n.op_type in QUANTIZED_OPS and n.name not in shape_nodes]
    ranking = []
    for tensor, sqnr in act_errors.items():
        nodes = _nodes_keeping_float(quantized, tensor)
        if nodes:
            ranking.append(Sensitive(tensor, sqnr, nodes, _op_types(quantized, nodes)))
    for tensor, sqnr in weight_errors.items():
        nodes = tuple(n.name for n in quantized if tensor in n.input)
        if nodes:
            ranking.append(Sensitive(tensor, float(sqnr), nodes, _op_types(quantized, nodes), weight=True))
    ranking.sort(key=lambda s: s.sqnr_db)
    return ranking


def channel_sqnr(before: Sequence[np.ndarray], after: Sequence[np.ndarray], quantile: float = 10.0) -> float:
    """SQNR in dB of an activation per channel (arrays shaped ``(rows, channels)``), at a low quantile.

    A whole-tensor SQNR hides a tensor whose few large channels set the quantization step and crush the
    others (their noise is small next to the large channels' energy); the per-channel figure shows it.
    Channels that are all zero are left out.
    """
    x = np.concatenate([np.asarray(a, np.float64) for a in before])
    y = np.concatenate([np.asarray(a, np.float64) for a in after])
    signal = np.linalg.norm(x, axis=0)
    live = signal > 0
    if not live.any():
        return float("inf")
    noise = np.maximum(np.linalg.norm(x - y, axis=0), np.finfo(np.float64).eps)
    return float(np.percentile(20 * np.log10(signal[live] / noise[live]), quantile))


def _channel_dims(path: Path) -> dict[str, tuple[int, int]]:
    """Tensor name -> (rank, channel count) from ONNX shape inference (channels: axis 1 of 4-D, else last)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    out = {}
    for info in model.graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if len(dims) < 2:
            continue
        channel = dims[1] if len(dims) == 4 else dims[-1]
        if channel.HasField("dim_value") and channel.dim_value > 0:
            out[info.name] = (len(dims), int(channel.dim_value))
    return out


def _activation_damage(
    matching: dict[str, dict[str, Sequence[np.ndarray]]], channels: dict[str, tuple[int, int]], sizes: list[int]
) -> dict[str, float]:
    """Per-channel SQNR of every activation the QDQ graph quantizes (ONNX Runtime saves them flattened)."""
    out = {}
    for name, match in matching.items():
        pre, post = match.get("pre_qdq"), match.get("post_qdq")
        if not pre or not post or len(pre) != len(post):
            continue
        shape = channels.get(name)
        rows = [(_as_rows(a, b, shape), _as_rows(c, b, shape)) for a, c, b in zip(pre, post, sizes, strict=False)]
        out[name] = channel_sqnr([r[0] for r in rows], [r[1] for r in rows])
    return out


def _as_rows(flat: np.ndarray, batch: int, shape: tuple[int, int] | None) -> np.ndarray:
    """A flattened activation as ``(rows, channels)``; one column (the whole tensor) when its shape is unknown."""
    flat = np.asarray(flat).reshape(-1)
    if shape is None or flat.size % (batch * shape[1]):
        return flat.reshape(-1, 1)
    rank, channels = shape
    if rank == 4:  # (N, C, H, W) -> (N*H*W, C)
        return flat.reshape(batch, channels, -1).transpose(0, 2, 1).reshape(-1, channels)
    return flat.reshape(-1, channels)


def nodes_to_keep_float(ranking: Sequence[Sensitive], count: int, op_types: Sequence[str] | None = None) -> list[str]:
    """The nodes of the ``count`` most damaged tensors (of ``op_types`` only, if given), without repeats."""
    out: list[str] = []
    for item in ranking[:count]:
        out.extend(n for n, t in zip(item.nodes, item.op_types, strict=True)
                   if n not in out and (op_types is None or t in op_types))
    return out


def weights_to_keep_float(ranking: Sequence[Sensitive], count: int) -> list[str]:
    """The weight tensors among the ``count`` most damaged (the rest of those nodes' weights can be int8)."""
    return [item.tensor for item in ranking[:count] if item.weight]


#: Activations ONNX Runtime fuses into the op before them: that op's output is quantized in their place.
FUSED_ACTIVATIONS = ("Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid")


def _nodes_keeping_float(nodes: Sequence[Any], tensor: str) -> tuple[str, ...]:
    """The quantized nodes to exclude so ``tensor`` stays float: its producer and consumers, and, when the
    producer is an activation fused into the op before it, that op too (its output carries the same range)."""
    out = [n.name for n in nodes if tensor in n.input or tensor in n.output]
    producer = next((n for n in nodes if tensor in n.output), None)
    while producer is not None and producer.op_type in FUSED_ACTIVATIONS and producer.input:
        producer = next((n for n in nodes if producer.input[0] in n.output), None)
        if producer is not None and producer.name not in out:
            out.append(producer.name)
    return tuple(out)


def _op_types(nodes: Sequence[Any], names: Sequence[str]) -> tuple[str, ...]:
    by_name = {n.name: n.op_type for n in nodes}
    return tuple(by_name[name] for name in names)


def quantize_onnx_fp16(src: str | Path, dst: str | Path, *, keep: int = 0) -> dict[str, Any]:
    """Write an FP16 copy of the FP32 ONNX model ``src``: float16 weights, float32 compute, inputs and outputs.

    Each weight (:func:`fp16_weights`) after the first ``keep`` is stored as float16 and widened by a ``Cast``
    node in front of the graph, the form OpenVINO and TFLite fp16 files take too. ONNX Runtime folds the Casts
    when it loads the file, so it runs at FP32 speed from a file half the size. (Float16 compute, what
    ``onnxruntime.transformers.float16`` writes, is slower than FP32 on CPUs without float16 arithmetic and
    moves a trained EfficientNet-Lite0's logits by 2.8e-2 even with every weight kept float32.)

    Raises:
        ExportError: The conversion failed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        model = onnx.load(str(src))
        graph = model.graph
        names = fp16_weights(model)
        initializers = {t.name: t for t in graph.initializer}
        casts = []
        for name in names[keep:]:
            tensor = initializers[name]
            half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}__fp16")
            tensor.CopyFrom(half)
            casts.append(helper.make_node("Cast", [half.name], [name], name=f"{name}__widen", to=TensorProto.FLOAT))
        nodes = [*casts, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(dst))
    except Exception as exc:  # onnx: plain exceptions
        raise ExportError(f"FP16 conversion failed: {_first_line(exc)}", "export fp32 instead") from None
    return {"tool": f"onnx {onnx.__version__}", "method": "fp16", "weights": "float16", "compute": "float32",
            "io": "float32", "weights_fp16": len(casts), "weights_fp32": len(names) - len(casts)}


def fp16_weights(model: Any) -> list[str]:
    """Names of the float32 initializers that are weights (:func:`is_fp16_weight`), in the order the graph first
    reads them."""
    from onnx import TensorProto, numpy_helper

    graph_inputs = {i.name for i in model.graph.input}
    candidates = {}
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name in graph_inputs:
            continue
        values = numpy_helper.to_array(tensor)
        if is_fp16_weight(values):
            candidates[tensor.name] = None
    ordered: dict[str, None] = {}
    for node in model.graph.node:
        ordered.update((name, None) for name in node.input if name in candidates)
    return list(ordered)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ONNX Runtime's quantization tools: calibrators print progress to stdout (edgetl draws its own) and
    qdq_loss_debug logs an ERROR on the root logger for every bias it does not compare (harmless)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        logging.disable(logging.ERROR)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _batch_len(batch: Any) -> int:
    return len(batch["input_ids"]) if isinstance(batch, dict) else len(batch)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
