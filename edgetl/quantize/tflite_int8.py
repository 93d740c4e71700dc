"""INT8 for TFLite models with ai-edge-quantizer: dynamic range (int8 weights) or full integer (int8 activations too).

Both take the FP32 ``.tflite`` written by :mod:`edgetl.export.tflite` and keep its interface: the same
signatures, float32 ``input`` (images) or int32 ``input_ids``/``attention_mask`` (text) in, float32 ``logits``
out, so :class:`edgetl.runtime.tflite_engine.TFLiteEngine` feeds them exactly like the FP32 file.

- :func:`quantize_dynamic` (recipe ``dynamic_wi8_afp32``): the weights of fully connected, convolution,
  batch-matmul and embedding ops become int8 with one scale per output channel; activations stay float32
  and the kernels quantize them on the fly. No calibration.
- :func:`quantize_static`: int8 weights (per channel) and int8 activations whose ranges are calibrated on
  representative inputs; a QUANTIZE op after each input and a DEQUANTIZE op before each output keep float
  I/O. ``activations="int16"`` is ai-edge-quantizer's a16w8 scheme: far closer to FP32, but LiteRT's XNNPACK
  delegate does not run int16 activations, so those ops fall back to reference kernels (MiniLM: 9x slower
  than FP32 on an x86 core; meant for accelerators that run 16x8).

Calibration runs every sample alone (batch 1, the files' fixed batch) through every signature; a text
model's samples are padded with ``attention_mask`` 0 (or cut) to each signature's length, as the engine
pads. Ranges are the minimum and maximum over all samples, the legacy TFLite calibrator's rule:
ai-edge-quantizer's default moving average suits batched calibration, and at batch 1 it keeps roughly the
first samples' ranges (on the MobileNetV3 test model, 79% top-1 agreement with FP32 against 98% with
min/max). Statistics come from the interpreter's profiler (``CALIBRATION_PROFILER_BASED``), about ten
times faster than copying every tensor out after each call.

Attention masks need care: BERT-style models add ``(1 - mask) * float32.min`` to the attention scores, and
no int8 scale can hold both that "minus infinity" and the scores (ai-edge-quantizer's own calibrator drops
such values, which quantizes the mask to zero, so padded tokens get attended and agreement with FP32 fell
from 89% to 82% on MiniLM). Every op that reads or writes a tensor whose calibrated range reaches
+-3e38 (:data:`MASK_LIMIT`) is kept in float: the mask arithmetic, the score additions and the softmaxes.

Embedding tables are not covered by the static scheme in ai-edge-quantizer 0.10; they get dynamic-range
int8 (the lookup returns float rows, quantized on use), so the file shrinks like the dynamic one.

Measured on the test models against their FP32 files (one x86 core; ``tests/test_quantize_tflite.py``):

=======================  =====================  =======================  ===============================
MobileNetV3-Small 64 px  size (FP32 3.85 MB)    top-1 agreement (48)     latency (FP32 0.65 ms)
=======================  =====================  =======================  ===============================
dynamic                  1.22 MB                100%                     1.09 ms
static int8              1.34 MB                100%                     1.19 ms
static int16             1.39 MB                100%                     -
=======================  =====================  =======================  ===============================

=======================  =====================  =======================  ===============================
MiniLM-L6, 3 signatures  size (FP32 90.6 MB)    agreement (176 texts)    latency, 48 tokens (FP32 55 ms)
=======================  =====================  =======================  ===============================
dynamic                  25.4 MB                97.7%                    60 ms
static int8              26.1 MB                82-89%                   61 ms
static int16             26.5 MB                98.9%                    488 ms
=======================  =====================  =======================  ===============================

Full-int8 BERT (int8 LayerNorm, GELU, attention products) moves logits by about 0.2, so texts near the
decision boundary flip (82-89% agreement depending on the calibration set; accuracy 1 to 2.3 points down).
Keeping LayerNorm, GELU, batch-matmuls or the pooling in float did not help; percentile ranges (of per-sample
extremes) cut the mean logit error by about a tenth with agreement within noise, so plain min/max stays. On
x86 neither INT8 file is faster than FP32 (XNNPACK's float kernels are strong there): the gain is size, and
speed on int8-friendly mobile CPUs and NPUs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, DataError, ExportError
from edgetl.quantize.base import CalibBatches
from edgetl.quantize.tflite_compact import compact_tflite
from edgetl.runtime.text import TEXT_INPUTS

log = logging.getLogger("edgetl")

#: Activation bits of each ``activations`` choice of :func:`quantize_static`.
ACTIVATION_BITS = {"int8": 8, "int16": 16}
#: Calibrated values at or beyond this magnitude are a mask's "minus infinity" (ai-edge-quantizer's own
#: calibrator ignores values outside the same bound).
MASK_LIMIT = 3e38
_HINT = "export fp32 (or --precision fp16) instead, and report the backbone"
#: ai-edge-quantizer warns once per buffer that signatures share ("... overriding other previously quantized
#: data"): the data it rewrites is the same, because buffers whose parameters differ are duplicated first.
_SHARED_BUFFER_WARNING = "Quantized data for tensor"


def quantize_dynamic(src: str | Path, dst: str | Path, *, compact: bool = True) -> dict[str, Any]:
    """Write a dynamic-range INT8 copy of the FP32 TFLite model ``src`` to ``dst``.

    Weights of fully connected, convolution, batch-matmul and embedding ops become int8, per output channel;
    activations, inputs and outputs stay float32. No calibration.

    Args:
        src: FP32 ``.tflite`` (as :mod:`edgetl.export.tflite` writes it).
        dst: Output file.
        compact: Short internal tensor names and shared quantization vectors
            (:func:`edgetl.quantize.tflite_compact.compact_tflite`; the same outputs).

    Returns:
        Facts for the bundle: ``tool``, ``method`` (``dynamic``), ``weights`` (``int8``), ``activations``
        (``float32``), ``granularity``, ``int8_share`` (see :func:`int8_tensor_share`) and
        ``compacted_bytes``.

    Raises:
        ExportError: ``src`` is missing or not a TFLite model, or ai-edge-quantizer failed or wrote a file
            without int8 weights.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    content = _read_model(src)
    io_types = _io_types(content, src)
    try:
        from ai_edge_quantizer import quantizer, recipe

        qt = quantizer.Quantizer(bytearray(content))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        with _quiet():
            result = qt.quantize(enable_progress_bar=False, enable_progress_report=False)
        dst.write_bytes(bytes(result.quantized_model))
    except Exception as exc:  # ai-edge-quantizer raises plain exceptions of many kinds
        raise ExportError(f"dynamic INT8 quantization of {src.name} failed: {_first_line(exc)}", _HINT) from None
    compacted = _compacted_bytes(dst) if compact else 0
    share = _check_written(dst, io_types)
    _log_sizes("dynamic INT8", src, dst, started)
    return {
        "tool": _tool(),
        "method": "dynamic",
        "weights": "int8",
        "activations": "float32",
        "granularity": "per-channel",
        "int8_share": round(share, 4),
        "compacted_bytes": compacted,
    }


def quantize_static(
    src: str | Path,
    dst: str | Path,
    calib: CalibBatches,
    *,
    activations: str = "int8",
    exclude_ops: Sequence[str] = (),
    compact: bool = True,
) -> dict[str, Any]:
    """Write a full-integer copy of the FP32 TFLite model ``src`` to ``dst``, calibrated on ``calib``.

    Weights are int8 per output channel, activations int8 (asymmetric, per tensor) or int16 (symmetric);
    inputs and outputs stay as in ``src`` (float32 images and logits, int32 tokens). Each sample is run alone
    through every signature; text samples are padded or cut to each signature's sequence length.

    Args:
        src: FP32 ``.tflite`` (as :mod:`edgetl.export.tflite` writes it).
        dst: Output file.
        calib: Preprocessed calibration batches (see :mod:`edgetl.quantize.base`): NHWC float32 images, or
            token arrays by name. Every sample is used for every signature.
        activations: ``int8``, or ``int16`` (a16w8: closer to FP32, but slow on CPU; see the module notes).
        exclude_ops: Regular expressions of ops to leave in float, searched (``re.search``) in the names of each
            op's outputs and weights, which litert-torch builds from the torch module path (e.g.
            ``ClassifierHead_head`` keeps the classifier head float, ``BertLayer_5`` the last encoder layer,
            ``Conv2d`` every convolution). The op writing a signature's output is also named after it
            (``logits_output``).

    Returns:
        Facts for the bundle: ``tool``, ``method`` (``static``), ``weights`` (``int8``), ``activations``,
        ``calibration`` (how ranges were taken), ``calibration_samples``, ``signatures`` (those calibrated),
        ``excluded`` (``exclude_ops``), ``float_ops`` (ops kept float on purpose, counted in every
        signature: attention masking and ``exclude_ops``) and ``int8_share`` (see :func:`int8_tensor_share`).

    Raises:
        ConfigError: ``activations`` is not ``int8``/``int16``, or an ``exclude_ops`` entry is not a valid
            regular expression.
        DataError: A calibration sample does not fit the model (wrong input names or image shape).
        ExportError: No calibration data; ``src`` is missing or not a TFLite model; ai-edge-quantizer failed
            or wrote a file without int8 tensors or with other input/output types.
    """
    if activations not in ACTIVATION_BITS:
        raise ConfigError(
            f"unknown activation type {activations!r} for TFLite static INT8",
            f"choose one of {sorted(ACTIVATION_BITS)}",
        )
    patterns = _compile(exclude_ops)
    samples = _samples(calib)
    if not samples:
        raise ExportError(
            "static INT8 needs calibration data and got none",
            "make a calibration set with `edgetl calibrate` and pass it with --calib",
        )
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    content = _read_model(src)
    io_types = _io_types(content, src)
    signatures = _signature_inputs(content)
    data = {key: [_feed(sample, inputs, key) for sample in samples] for key, inputs in signatures.items()}
    log.info("calibrating %s: %d samples x %d signatures", src.name, len(samples), len(data))
    try:
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.utils import tfl_flatbuffer_utils

        model = tfl_flatbuffer_utils.read_model(content)
        qt = quantizer.Quantizer(bytearray(content))
        _static_recipe(qt, ACTIVATION_BITS[activations])
        with _quiet():
            ranges = _calibrate(content, qt, data)
            kept_float = _float_ops(model, ranges, patterns)
            for scope in kept_float:  # one exact rule per op; later rules win over the ".*" ones
                qt.update_quantization_recipe(
                    f"^{re.escape(scope)}$",
                    qtyping.TFLOperationName.ALL_SUPPORTED,
                    algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE,
                )
            result = qt.quantize(_usable_ranges(model, ranges), enable_progress_bar=False, enable_progress_report=False)
        dst.write_bytes(bytes(result.quantized_model))
    except Exception as exc:  # ai-edge-quantizer raises plain exceptions of many kinds
        raise ExportError(
            f"static INT8 quantization of {src.name} failed: {_first_line(exc)}", "try --method dynamic, or export fp32"
        ) from None
    compacted = _compacted_bytes(dst) if compact else 0
    share = _check_written(dst, io_types)
    _log_sizes(f"static INT8 ({activations} activations)", src, dst, started)
    return {
        "tool": _tool(),
        "method": "static",
        "weights": "int8",
        "activations": activations,
        "calibration": "min/max over all samples, batch 1, per signature",
        "calibration_samples": len(samples),
        "signatures": list(data),
        "excluded": list(exclude_ops),
        "float_ops": len(kept_float),
        "int8_share": round(share, 4),
        "compacted_bytes": compacted,
    }


def _compacted_bytes(path: Path) -> int:
    """Compact the written file in place (:func:`compact_tflite`); the bytes it saved."""
    sizes = compact_tflite(path)
    return sizes["bytes_before"] - sizes["bytes_after"]


def int8_tensor_share(path: str | Path) -> float:
    """Load ``path`` in ai-edge-litert's interpreter and return the share of its weights stored as int8.

    The share counts elements of the constant tensors (weights, biases, tables; each buffer once, as
    signatures share them): about 1.0 for a fully quantized model (int32 biases are few elements), 0 for an
    FP32 or FP16 one.

    Raises:
        ExportError: The interpreter cannot load or allocate the model, or it has no constant tensors.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    path = Path(path)
    try:
        Interpreter(model_path=str(path)).allocate_tensors()
        model = tfl_flatbuffer_utils.read_model(str(path))
    except Exception as exc:  # the interpreter raises ValueError or RuntimeError, worded by the C++ side
        raise ExportError(f"ai-edge-litert cannot load {path}: {_first_line(exc)}", _HINT) from None
    elements: dict[int, tuple[int, bool]] = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data):
                size = int(np.prod(tensor.shape)) if tensor.shape is not None else 1
                int8 = tfl_flatbuffer_utils.TENSOR_CODE_TO_TYPE[tensor.type] == "INT8"
                elements[tensor.buffer] = (size, int8)
    total = sum(size for size, _ in elements.values())
    if not total:
        raise ExportError(f"{path} has no constant tensors", "check that it is a trained model's .tflite")
    return sum(size for size, int8 in elements.values() if int8) / total


def _static_recipe(qt: Any, activation_bits: int) -> None:
    """Every supported op static (int8 weights per channel), float model I/O, embedding tables dynamic int8."""
    from ai_edge_quantizer import qtyping, quantizer

    ops = qtyping.TFLOperationName
    qt.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=activation_bits, weight_num_bits=8)
    for io_op in (ops.INPUT, ops.OUTPUT):  # QUANTIZE/DEQUANTIZE ops at the edges instead of int8 I/O
        qt.update_quantization_recipe(".*", io_op, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    qt.add_dynamic_config(".*", ops.EMBEDDING_LOOKUP, num_bits=8)  # static has no embedding scheme


def _calibrate(content: bytes, qt: Any, data: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Min/max of every tensor over all samples, per signature, from the interpreter's profiler."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(qt.get_quantization_recipe())
    calib = calibrator.Calibrator(
        content,
        num_threads=os.cpu_count() or 1,
        mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
        qsv_update_func=qsv_utils.min_max_update,
    )
    calib.calibrate(data, manager)
    return calib.get_model_qsvs()


def _float_ops(model: Any, ranges: dict[str, Any], patterns: Sequence[re.Pattern[str]]) -> list[str]:
    """Scopes of the ops to keep float: those reading or writing a tensor whose range reaches :data:`MASK_LIMIT`,
    and those whose output or weight names match one of ``patterns``.

    An op's scope (what ai-edge-quantizer's recipe rules match) is the names of its outputs; the op writing a
    signature's output is named after it (``serving_default_logits_output``), so weight names, which keep the
    torch module path, are searched too.
    """
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    masks = {name for name, qsv in ranges.items() if _is_mask(qsv)}
    scopes: dict[str, None] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            tensors = [subgraph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
            names = {fb.get_tensor_name(t) for t in tensors}
            weights = [fb.get_tensor_name(t) for t in tensors if fb.get_tensor_data(t, model.buffers) is not None]
            scope = fb.get_op_scope(op, subgraph.tensors)
            if names & masks or any(p.search(text) for p in patterns for text in (scope, *weights)):
                scopes[scope] = None
    return list(scopes)


def _is_mask(qsv: dict[str, Any]) -> bool:
    return bool(np.min(qsv["min"]) <= -MASK_LIMIT or np.max(qsv["max"]) >= MASK_LIMIT)


def _usable_ranges(model: Any, ranges: dict[str, Any]) -> dict[str, Any]:
    """The activation ranges ai-edge-quantizer expects: masks and constants dropped (weights' ranges are
    taken from their data, per channel), min/max shaped ``(1,) * rank`` as its own calibrator writes them."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    tensors = {fb.get_tensor_name(t): t for subgraph in model.subgraphs for t in subgraph.tensors}
    usable = {}
    for name, qsv in ranges.items():
        tensor = tensors.get(name)
        if tensor is None or _is_mask(qsv) or fb.get_tensor_data(tensor, model.buffers) is not None:
            continue
        shape = (1,) * len(tensor.shape if tensor.shape is not None else ())
        usable[name] = {"min": np.reshape(qsv["min"], shape), "max": np.reshape(qsv["max"], shape)}
    return usable


def _samples(calib: CalibBatches) -> list[np.ndarray | dict[str, np.ndarray]]:
    """The calibration batches split into single samples (one image, or one row of each token array)."""
    samples: list[np.ndarray | dict[str, np.ndarray]] = []
    for batch in calib:
        if isinstance(batch, dict):
            arrays = {name: np.asarray(array) for name, array in batch.items()}
            rows = len(next(iter(arrays.values()))) if arrays else 0
            samples += [{name: array[i] for name, array in arrays.items()} for i in range(rows)]
        else:
            samples += list(np.asarray(batch))
    return samples


def _feed(
    sample: np.ndarray | dict[str, np.ndarray], inputs: dict[str, tuple[tuple[int, ...], Any]], key: str
) -> dict[str, np.ndarray]:
    """One sample as a batch-1 feed of signature ``key``; text padded (0) or cut to the signature's length.

    Raises:
        DataError: The sample lacks an input of the signature, or an image does not fit its shape.
    """
    text = set(TEXT_INPUTS) <= set(inputs)
    if not isinstance(sample, dict):
        sample = {name: sample for name in inputs} if len(inputs) == 1 and not text else {}
    missing = [name for name in inputs if name not in sample]
    if missing:
        raise DataError(
            f"calibration samples lack input(s) {missing} of signature {key!r}",
            "make the calibration set from this model's spec (`edgetl calibrate`)",
        )
    feed = {}
    for name, (shape, dtype) in inputs.items():
        array = np.asarray(sample[name])
        if text and shape[-1] > 0:  # the engine's padding (ids 0, mask 0), or the first tokens
            array = array[: shape[-1]]
            array = np.pad(array, (0, shape[-1] - len(array)))
        if array.ndim != len(shape) - 1 or any(
            0 < want != got for want, got in zip(shape[1:], array.shape, strict=True)
        ):
            raise DataError(
                f"a calibration sample of shape {array.shape} does not fit input {name!r} "
                f"{list(shape)} of signature {key!r}",
                "make the calibration set from this bundle's spec (NHWC for TFLite images)",
            )
        feed[name] = np.ascontiguousarray(array[None], dtype=dtype)
    return feed


def _read_model(src: Path) -> bytes:
    if not src.is_file():
        raise ExportError(f"FP32 TFLite model not found: {src}", "export the bundle with --format tflite first")
    return src.read_bytes()


def _signature_inputs(content: bytes) -> dict[str, dict[str, tuple[tuple[int, ...], Any]]]:
    """Each signature's inputs: name -> (shape, -1 for dynamic axes; numpy dtype)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    out = {}
    for key in interpreter.get_signature_list():
        details = interpreter.get_signature_runner(key).get_input_details()
        out[key] = {
            name: (tuple(int(d) for d in detail["shape_signature"]), detail["dtype"])
            for name, detail in details.items()
        }
    return out


def _io_types(content: bytes, src: Path) -> dict[str, dict[str, str]]:
    """Each signature's input and output dtypes by name (what a quantized copy must keep).

    Raises:
        ExportError: The interpreter cannot read ``content``, or it has no signature.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content)
        types = {}
        for key in interpreter.get_signature_list():
            runner = interpreter.get_signature_runner(key)
            details = {**runner.get_input_details(), **runner.get_output_details()}
            types[key] = {name: np.dtype(detail["dtype"]).name for name, detail in details.items()}
    except Exception as exc:  # the interpreter raises ValueError or RuntimeError, worded by the C++ side
        raise ExportError(
            f"ai-edge-litert cannot read {src}: {_first_line(exc)}",
            "re-export the FP32 bundle with `edgetl export --format tflite`",
        ) from None
    if not types:
        raise ExportError(f"{src} has no signature", "re-export the FP32 bundle with `edgetl export --format tflite`")
    return types


def _check_written(dst: Path, io_types: dict[str, dict[str, str]]) -> float:
    """The int8 share of ``dst`` after checking that it loads, holds int8 weights and kept the I/O types.

    Raises:
        ExportError: It does not load, has no int8 weights, or its signatures' types changed.
    """
    share = int8_tensor_share(dst)
    if share == 0:
        raise ExportError(
            f"ai-edge-quantizer wrote {dst.name} without int8 weights",
            "check exclude_ops (it may match every op), or report the backbone",
        )
    written = _io_types(dst.read_bytes(), dst)
    if written != io_types:
        raise ExportError(f"quantizing changed the model's signatures: {io_types} -> {written}", _HINT)
    return share


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide ai-edge-quantizer's chatter: progress bars (stderr), what it logs to the root logger below WARNING
    (a line per rewired signature tensor), its shared-buffer warnings, and the interpreter's warning about the
    debug mode its own calibrator uses. edgetl's logger is untouched."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not str(record.msg).startswith(_SHARED_BUFFER_WARNING)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors", category=UserWarning)
            yield
    finally:
        root.removeFilter(keep)


def _compile(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    if isinstance(patterns, str):
        raise ConfigError(
            f"exclude_ops must be a list of regular expressions, got the string {patterns!r}", f"pass [{patterns!r}]"
        )
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(
                f"exclude_ops entry {pattern!r} is not a regular expression: {exc}",
                "escape special characters, e.g. with re.escape",
            ) from None
    return compiled


def _log_sizes(what: str, src: Path, dst: Path, started: float) -> None:
    log.info(
        "%s: %.2f MB -> %.2f MB in %.0f s",
        what,
        src.stat().st_size / 1e6,
        dst.stat().st_size / 1e6,
        time.perf_counter() - started,
    )


def _tool() -> str:
    return f"ai-edge-quantizer {importlib.metadata.version('ai-edge-quantizer')}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
