"""Static INT8 for OpenVINO IRs with NNCF: post-training quantization, optionally under accuracy control.

The FP32 IR written by :mod:`edgetl.export.openvino` is read, quantized by NNCF (FakeQuantize ops on the
inputs of convolutions, linear layers and some element-wise ops; weights stored as int8 and scaled back by a
Multiply) and saved compactly: the weights' scales, the FakeQuantize limits and the biases as float16 where
that makes the file smaller (:func:`edgetl.export.openvino_ir.half_vectors`), everything else as it is. The
IR's constant subgraphs are folded first, so that depthwise weights are plain constants NNCF's int8 storage
covers (see :func:`_fold`); weights of ops the accuracy control reverts to float are stored as int8 too when
the budget still holds (:func:`store_float_weights_int8`), and internal names are shortened
(:func:`compact_names`).

Calibration and validation batches (see :mod:`edgetl.quantize.base`) are split into single samples before
NNCF sees them, as NNCF's documentation recommends: its ``subset_size`` counts data items, not samples, and
with its default ranges (the mean over items of each item's min and max) a batch item's ranges would depend on
the batch size. Per-sample validation items also let the accuracy control rank layers sample by sample. Text
samples are cut to their real length (the tokenizer pads on the right), so padding positions do not widen
the activation ranges. The IR's axes stay dynamic; NNCF runs it at whatever shape it is fed.

NNCF is kept quiet and offline: its logger is set to WARNING, and ``NNCF_CI`` is set before NNCF is first
imported, the switch NNCF checks (once, at import) to replace its usage telemetry (Google Analytics events on
each ``nncf.quantize`` call) with a stub; if the application imported NNCF first, the telemetry's consent is
withdrawn instead. NNCF's progress bars (rich, on stdout) have no documented off switch and still show.
Importing NNCF takes seconds (it imports torch), so it happens only when a function needs it. What the
accuracy control reverted is read from NNCF's log messages (the only place NNCF 3.4 reports it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, DataError, EdgetlError, ExportError
from edgetl.export.openvino_ir import half_vectors, save_compact
from edgetl.quantize.base import CalibBatches, LabelledBatches, symmetric_int8
from edgetl.runtime.engines import Inputs
from edgetl.runtime.openvino_engine import error_line

log = logging.getLogger("edgetl")

#: NNCF presets: ``performance`` quantizes activations symmetrically, ``mixed`` asymmetrically (weights are
#: symmetric in both).
PRESETS = ("performance", "mixed")
#: How activation ranges are estimated from the calibration samples: ``mean`` (NNCF's default for per-tensor
#: activations: the mean over samples of each sample's min and max, robust to outliers but clipping samples
#: whose range is wider than usual) or ``global`` (the min and max over all samples: nothing clipped, coarser
#: steps).
ACTIVATION_RANGES = ("mean", "global")
#: The IR ops NNCF quantizes that hold weights: what :func:`quantizable_ops` lists.
QUANTIZABLE_TYPES = ("Convolution", "GroupConvolution", "MatMul")
_KEEP_FP32 = "keep the FP32 IR, and report the backbone (run with -v for NNCF's messages)"
_REEXPORT = "re-export the bundle with `edgetl export --format openvino --precision fp32`"
_REVERTED = re.compile(r"(\d+) out of (\d+) were reverted back to the floating-point precision:\s*(.*)", re.S)


def quantize_ptq(
    src: Path,
    dst: Path,
    calib: CalibBatches,
    *,
    text: bool,
    preset: str = "performance",
    fast_bias_correction: bool = True,
    ignored_names: Sequence[str] = (),
    subset_size: int | None = None,
    activation_ranges: str = "mean",
    compact: bool = True,
    float16_vectors: bool = True,
) -> dict[str, Any]:
    """Post-training INT8 of the FP32 IR ``src``, written to ``dst`` (``.xml`` and its ``.bin``).

    Args:
        src: The FP32 ``model.xml`` (its weights are the ``.bin`` beside it).
        dst: The INT8 ``.xml`` to write; the ``.bin`` of the same name goes beside it.
        calib: Preprocessed calibration batches (image arrays, or token arrays by input name).
        text: A transformer text model: NNCF's ``TRANSFORMER`` model type (keeps softmax, layer norm and
            the like in float, quantizes the attention products).
        preset: ``performance`` (symmetric activations) or ``mixed`` (asymmetric activations).
        fast_bias_correction: NNCF's fast bias correction; False runs the slower, finer one.
        ignored_names: Friendly names of ops to leave in float (see :func:`quantizable_ops`).
        subset_size: Calibrate on at most this many samples (the first ones); default all of them.
        activation_ranges: ``mean`` or ``global`` (see :data:`ACTIVATION_RANGES`).
        compact: Short internal op and tensor names in the written IR (see :func:`compact_names`); off when
            the INT8 IR's op names must match the FP32 IR's.
        float16_vectors: Store the weights' scales, the FakeQuantize limits and the biases as float16 where
            that makes the file smaller (:func:`edgetl.export.openvino_ir.half_vectors`); False keeps them
            float32 as NNCF left them.

    Returns:
        Facts for ``edgetl.json``: ``tool``, ``method`` (``static``), ``algorithm`` (``ptq``), ``preset``,
        ``model_type`` (``transformer`` or None), ``activation_ranges``, ``fast_bias_correction``,
        ``calibration_samples``, ``ignored`` (names kept in float on request), ``fake_quantize``
        (FakeQuantize ops written) and ``float16_vectors`` (scales, limits and biases stored as float16).

    Raises:
        ConfigError: An unknown preset or ``activation_ranges``, or ``subset_size`` below 1.
        DataError: No calibration samples.
        ExportError: ``src`` is missing or unreadable, an ignored name is not in the model, or NNCF or
            OpenVINO failed.
    """
    _check_choices(preset, activation_ranges)
    if subset_size is not None and subset_size < 1:
        raise ConfigError(f"subset_size must be >= 1, got {subset_size}", "omit it to calibrate on every sample")
    nncf, ov = _require_nncf(), _require_openvino()

    model = _fold(_read(ov, Path(src)))
    samples = _split(calib, _input_names(model))
    n = len(samples) if subset_size is None else min(subset_size, len(samples))
    facts = _facts(nncf, "ptq", preset, text, activation_ranges, fast_bias_correction, n, ignored_names)
    hint = "check the ignored op names against quantizable_ops()" if ignored_names else _KEEP_FP32
    with _nncf_errors("NNCF post-training quantization failed", hint):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=_preset(nncf, preset),
            subset_size=n,
            fast_bias_correction=fast_bias_correction,
            model_type=_model_type(nncf, text),
            ignored_scope=_ignored(nncf, ignored_names),
            advanced_parameters=_advanced(nncf, activation_ranges),
        )
    facts["float16_vectors"] = _save(ov, quantized, Path(dst), compact=compact, half=float16_vectors)
    facts["fake_quantize"] = count_fake_quantize(dst)
    _log_sizes(Path(src), Path(dst), "PTQ")
    return facts


def quantize_accuracy_control(
    src: Path,
    dst: Path,
    calib: CalibBatches,
    validation: LabelledBatches,
    *,
    text: bool,
    max_drop_points: float,
    preset: str = "performance",
    activation_ranges: str = "mean",
) -> dict[str, Any]:
    """INT8 of the FP32 IR ``src`` with NNCF's accuracy control: quantize, then put the layers that cost
    the most top-1 accuracy back in float until the drop on ``validation`` is within ``max_drop_points``.

    NNCF compiles every candidate (and the FP32 model) for the CPU with float32 inference precision before
    handing it to the validation function, so drops are measured against exact FP32, not bfloat16.

    Args:
        src: The FP32 ``model.xml``.
        dst: The INT8 ``.xml`` to write (``.bin`` beside it).
        calib: Preprocessed calibration batches; all samples are used.
        validation: Preprocessed batches with their integer labels, for top-1 accuracy.
        text: A transformer text model (NNCF's ``TRANSFORMER`` model type).
        max_drop_points: Largest accepted top-1 accuracy drop, in points (an absolute drop: 1.0 = 1%).
        preset: ``performance`` or ``mixed``, as for :func:`quantize_ptq`.
        activation_ranges: ``mean`` or ``global``, as for :func:`quantize_ptq`.

    Returns:
        The facts of :func:`quantize_ptq` with ``algorithm`` = ``accuracy_control`` and:
        ``max_drop_points``; ``reference_accuracy`` and ``ptq_accuracy`` (FP32 and plain PTQ on the
        validation samples, as NNCF measured them; None if it did not report them); ``reverted`` (friendly
        names of the ops NNCF put back in float, from its report; None when it did not report them, which it
        does when it had to give up on every group); ``quantized_ops`` (how many ops PTQ had quantized, when
        reverting was needed); ``met_drop`` (whether NNCF reached the budget) and ``validation_samples``.

    Raises:
        ConfigError: An unknown preset or ``activation_ranges``, or a negative ``max_drop_points``.
        DataError: No calibration or validation samples, or labels that do not match their batches.
        ExportError: ``src`` is missing or unreadable, or NNCF or OpenVINO failed.
    """
    _check_choices(preset, activation_ranges)
    if not max_drop_points >= 0:
        raise ConfigError(f"max_drop_points must be >= 0, got {max_drop_points}", "pass an accuracy budget in points")
    nncf, ov = _require_nncf(), _require_openvino()

    model = _fold(_read(ov, Path(src)))
    names = _input_names(model)
    samples = _split(calib, names)
    labelled = _split_labelled(validation, names)
    facts = _facts(nncf, "accuracy_control", preset, text, activation_ranges, True, len(samples), ())
    with _nncf_errors("NNCF quantization with accuracy control failed", _KEEP_FP32), _nncf_report() as messages:
        quantized = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(samples),
            nncf.Dataset(labelled, _inputs_of),
            _top1_accuracy,
            max_drop=max_drop_points / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=_preset(nncf, preset),
            subset_size=len(samples),
            model_type=_model_type(nncf, text),
            advanced_quantization_parameters=_advanced(nncf, activation_ranges),
        )
    facts.update(max_drop_points=max_drop_points, validation_samples=len(labelled), **_read_report(messages))
    facts.update(reverted_weights=None, reverted_weights_int8=0, reverted_weights_accuracy=None,
                 reverted_weights_note="")
    if facts["reverted"] != []:
        quantized = _compress_reverted(ov, quantized, labelled, facts, max_drop_points)
    facts["float16_vectors"] = _save(ov, quantized, Path(dst))
    facts["fake_quantize"] = count_fake_quantize(dst)
    _log_sizes(Path(src), Path(dst), "accuracy-controlled")
    return facts


def store_float_weights_int8(model: Any) -> int:
    """Store every float32 weight constant feeding a convolution or MatMul as int8, in place; return how many.

    NNCF's accuracy control reverts an op by removing its FakeQuantize ops, weights' included, so a reverted
    op keeps float32 weights (on EfficientNet-Lite0 they made the INT8 IR 0.37x of FP32, not 0.3x). Here
    each such weight becomes an int8 constant, a ``Convert`` and a ``Multiply`` by one scale per output channel
    (symmetric, -127..127): OpenVINO's weight-compression pattern, which its CPU plugin decompresses at load.
    The op itself still runs in float on float activations. Weights NNCF quantized (int8 constants, or a
    FakeQuantize in front) are left alone: only an f32 ``Constant`` on the weight port (directly, or through
    the ``Reshape`` grouped convolutions read it through) is changed.
    """
    import openvino as ov
    import openvino.opset13 as ops

    count = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in QUANTIZABLE_TYPES:
            continue
        weight = _float_weight(op.input_value(1))
        if weight is None:
            continue
        axes = _reduced_axes(kind, weight.ndim, op.get_attributes())
        if axes is None:
            continue
        q, scale = symmetric_int8(weight, axes)
        decompressed = ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(scale))
        op.input(1).replace_source_output(decompressed.output(0))
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def _float_weight(value: Any) -> np.ndarray | None:
    """The float32 weight on a port: a ``Constant``, or a ``Constant`` reshaped (grouped convolutions); else None."""
    import openvino as ov

    node = value.get_node()
    if node.get_type_name() == "Reshape" and value.get_partial_shape().is_static:
        shape = tuple(value.get_shape())  # the target shape may come from a (constant) Concat: use the result's
        node = node.input_value(0).get_node()
    else:
        shape = None
    if node.get_type_name() != "Constant" or node.get_element_type() != ov.Type.f32:
        return None
    data = np.asarray(node.get_data(), np.float32)
    return data.reshape(shape) if shape is not None else data


def _reduced_axes(kind: str, ndim: int, attributes: dict[str, Any]) -> tuple[int, ...] | None:
    """The weight axes one scale spans: all but the output-channel axes (GroupConvolution: group and channel)."""
    if kind == "Convolution" and ndim >= 3:
        return tuple(range(1, ndim))
    if kind == "GroupConvolution" and ndim >= 4:
        return tuple(range(2, ndim))
    if kind == "MatMul" and ndim == 2:
        return (1,) if attributes.get("transpose_b") else (0,)
    return None


def _compress_reverted(
    ov: Any, quantized: Any, labelled: list[tuple[dict[str, np.ndarray], int]], facts: dict[str, Any],
    max_drop_points: float,
) -> Any:
    """The accuracy-controlled model with its reverted ops' weights stored as int8, if that keeps the budget.

    The copy is measured on the same validation samples NNCF used, against the FP32 accuracy NNCF reported;
    when it is over budget (or NNCF reported no reference) the model is kept as NNCF left it.
    """
    reference = facts.get("reference_accuracy")
    candidate = quantized.clone()
    count = store_float_weights_int8(candidate)
    if not count or reference is None:
        facts.update(reverted_weights="float", reverted_weights_note="no float weights" if not count
                     else "NNCF reported no reference accuracy")
        return quantized
    compiled = ov.Core().compile_model(candidate, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    accuracy, _ = _top1_accuracy(compiled, labelled)
    drop = 100 * (reference - accuracy)
    facts["reverted_weights_accuracy"] = accuracy
    if drop <= max_drop_points + 1e-9:
        facts.update(reverted_weights="int8", reverted_weights_int8=count)
        log.info("OpenVINO: %d reverted weights stored as int8 (validation drop %+.2f points)", count, drop)
        return candidate
    facts.update(reverted_weights="float", reverted_weights_note=f"int8 weights: drop {drop:+.2f} points")
    log.info("OpenVINO: reverted weights kept float (as int8 the drop was %+.2f points)", drop)
    return quantized


def quantizable_ops(src: Path) -> list[str]:
    """Friendly names of the IR's convolutions (plain and grouped) and MatMuls, in execution order.

    These are the names :func:`quantize_ptq` takes in ``ignored_names`` (NNCF's node names are the ops'
    friendly names). Attention's activation-by-activation MatMuls are listed too.

    Raises:
        ExportError: ``src`` is missing or OpenVINO cannot read it.
    """
    model = _read(_require_openvino(), Path(src))
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZABLE_TYPES]


def count_fake_quantize(path: Path) -> int:
    """How many FakeQuantize ops the saved IR ``path`` (its ``.xml``) holds: zero means no INT8 happened.

    Raises:
        ExportError: The file is missing or is not an IR's XML.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ExportError(f"cannot read the IR {path}: {exc}", _REEXPORT) from None
    return sum(1 for layer in root.iter("layer") if layer.get("type") == "FakeQuantize")


def _require_nncf() -> Any:
    """Import NNCF with its telemetry off and its logger at WARNING.

    ``NNCF_CI`` must be set before NNCF's first import (it is read once, at import). Should another caller
    have imported NNCF first, the shared telemetry object (also OpenVINO's) has its consent withdrawn.
    """
    if "nncf" not in sys.modules:
        os.environ["NNCF_CI"] = "1"
    try:
        import nncf
    except ImportError as exc:
        raise ConfigError(f"OpenVINO INT8 needs the nncf package ({exc})", "pip install nncf") from None
    from nncf.telemetry import wrapper

    if isinstance(wrapper.telemetry, wrapper.NNCFTelemetry) and hasattr(wrapper.telemetry, "_impl"):
        wrapper.telemetry._impl.consent = False  # openvino_telemetry sends nothing without consent
    nncf.set_log_level(logging.WARNING)
    # NNCF imports its torch backend to tell model types apart, and torch's extension builder then warns that
    # there is no CUDA compiler: nothing here builds an extension
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return nncf


def _check_choices(preset: str, activation_ranges: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"unknown NNCF preset {preset!r}", f"choose one of: {', '.join(PRESETS)}")
    if activation_ranges not in ACTIVATION_RANGES:
        raise ConfigError(
            f"unknown activation_ranges {activation_ranges!r}", f"choose one of: {', '.join(ACTIVATION_RANGES)}"
        )


def _preset(nncf: Any, preset: str) -> Any:
    return nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED


def _model_type(nncf: Any, text: bool) -> Any:
    return nncf.ModelType.TRANSFORMER if text else None


def _ignored(nncf: Any, names: Sequence[str]) -> Any:
    return nncf.IgnoredScope(names=list(names)) if names else None


def _advanced(nncf: Any, activation_ranges: str) -> Any:
    """NNCF's advanced parameters: None (its defaults) for ``mean`` ranges, global min/max otherwise."""
    if activation_ranges == "mean":
        return None
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return nncf.AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def _facts(
    nncf: Any,
    algorithm: str,
    preset: str,
    text: bool,
    activation_ranges: str,
    fast_bias_correction: bool,
    n: int,
    ignored: Sequence[str],
) -> dict[str, Any]:
    return {
        "tool": f"nncf {nncf.__version__}",
        "method": "static",
        "algorithm": algorithm,
        "preset": preset,
        "model_type": "transformer" if text else None,
        "activation_ranges": activation_ranges,
        "fast_bias_correction": fast_bias_correction,
        "calibration_samples": n,
        "ignored": list(ignored),
    }


def _read(ov: Any, src: Path) -> Any:
    """The FP32 IR at ``src`` as an ``ov.Model`` (not compiled)."""
    weights = src.with_suffix(".bin")
    for path in (src, weights):
        if not path.is_file():
            raise ExportError(f"FP32 IR file not found: {path}", _REEXPORT)
    try:
        return ov.Core().read_model(str(src), str(weights))
    except Exception as exc:  # OpenVINO raises RuntimeError (and its own subclasses)
        raise ExportError(f"OpenVINO cannot read {src}: {error_line(exc)}", _REEXPORT) from None


def _fold(model: Any) -> Any:
    """The IR with its constant subgraphs folded (OpenVINO's ConstantFolding pass), in place.

    The ONNX route reshapes each depthwise convolution's weights with a ``Reshape`` whose target shape is
    computed by ``ShapeOf``/``Concat`` ops. NNCF then puts the weights' FakeQuantize after that Reshape, and
    saving cannot store them as int8: on MobileNetV3-Small the 11 depthwise weights and their per-channel
    FakeQuantize limits stayed float32 (464 KB of a 1.95 MB INT8 IR, with 187 ``ShapeOf`` ops in its XML).
    Folded, the weights are plain constants, quantized and stored like every other convolution's.
    """
    from openvino import passes

    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)
    return model


def compact_names(model: Any) -> None:
    """Short friendly names for the model's internal ops (``n0``, ``n1``...) and no names on internal tensors.

    The XML of a small INT8 IR is a visible share of its size; the ONNX-derived op and tensor names are about
    a tenth of it (the test model's: 411 KB -> 365 KB; the rest is structure: layers, ports and their dims).
    Inputs and outputs keep their names.
    """
    for index, op in enumerate(model.get_ordered_ops()):
        kind = op.get_type_name()
        if kind in ("Parameter", "Result"):
            continue
        op.set_friendly_name(f"n{index}")
        for output in op.outputs():
            if not any(i.get_node().get_type_name() == "Result" for i in output.get_target_inputs()):
                output.get_tensor().set_names(set())


def _save(ov: Any, model: Any, dst: Path, *, compact: bool = True, half: bool = True) -> int:
    """Write ``dst`` and its ``.bin`` compactly (:func:`edgetl.export.openvino_ir.save_compact`), int8 weights
    kept as they are; ``half``: the scales, limits and biases of the quantized ops as float16 where that makes
    the file smaller (:func:`edgetl.export.openvino_ir.half_vectors`); ``compact``: internal op and tensor
    names shortened (:func:`compact_names`). Returns how many vectors were stored as float16."""
    try:
        halved = half_vectors(ov, model) if half else 0
        if compact:
            compact_names(model)
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_compact(ov, model, dst)
        return halved
    except Exception as exc:
        raise ExportError(
            f"OpenVINO cannot write {dst.name}: {error_line(exc)}",
            "check that the bundle folder is writable and the disk is not full",
        ) from None


def _input_names(model: Any) -> list[str]:
    return [port.get_any_name() for port in model.inputs]


def _split(batches: Iterable[Inputs], names: list[str]) -> list[dict[str, np.ndarray]]:
    """Every sample of ``batches`` on its own, as arrays by input name, text cut to its real length.

    Raises:
        DataError: There is no sample, or an input the model needs is missing.
    """
    samples = [sample for batch in batches for sample in _samples(batch, names)]
    if not samples:
        raise DataError("no calibration samples", "calibrate on a split that holds at least one sample")
    return samples


def _split_labelled(batches: LabelledBatches, names: list[str]) -> list[tuple[dict[str, np.ndarray], int]]:
    """Every validation sample on its own with its label (see :func:`_split`)."""
    out = []
    for inputs, labels in batches:
        samples = list(_samples(inputs, names))
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(samples):
            raise DataError(
                f"a validation batch of {len(samples)} samples has {len(labels)} labels",
                "pair each batch with one label per sample",
            )
        out.extend((sample, int(label)) for sample, label in zip(samples, labels, strict=True))
    if not out:
        raise DataError("no validation samples", "validate on a split that holds at least one sample")
    return out


def _samples(batch: Inputs, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
    named = batch if isinstance(batch, dict) else {names[0]: batch}
    missing = [name for name in names if name not in named]
    if missing:
        raise DataError(f"batches lack the model inputs {missing}", "tokenize texts with the bundle's tokenizer")
    arrays = {name: np.asarray(named[name]) for name in names}
    for i in range(len(arrays[names[0]])):
        yield _trim({name: np.ascontiguousarray(array[i : i + 1]) for name, array in arrays.items()})


def _trim(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A text sample cut to its tokens when its attention mask is ones then zeros (right padding)."""
    mask = sample.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return sample
    length = int(mask[0].sum())
    if length == 0 or length == mask.shape[1] or not mask[0, :length].all():
        return sample
    return {name: array[:, :length] if array.ndim == 2 else array for name, array in sample.items()}


def _inputs_of(item: tuple[dict[str, np.ndarray], int]) -> dict[str, np.ndarray]:
    return item[0]


def _top1_accuracy(compiled: Any, items: Iterable[tuple[dict[str, np.ndarray], int]]) -> tuple[float, list[float]]:
    """NNCF's validation function: top-1 accuracy of a compiled model, and 1.0 / 0.0 per sample.

    One infer request per call: NNCF may rank layers from several threads at once.
    """
    request = compiled.create_infer_request()
    output = compiled.output(0)
    hits = [float(np.argmax(request.infer(inputs)[output], axis=-1)[0] == label) for inputs, label in items]
    return (float(np.mean(hits)) if hits else 0.0), hits


@contextmanager
def _nncf_errors(what: str, hint: str) -> Iterator[None]:
    """Turn whatever NNCF or OpenVINO raises into a one-line :class:`ExportError`."""
    try:
        yield
    except EdgetlError:
        raise
    except Exception as exc:  # NNCF raises its own classes (ValidationError...), OpenVINO RuntimeError
        raise ExportError(f"{what}: {error_line(exc)}", hint) from None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _nncf_report() -> Iterator[list[str]]:
    """NNCF's INFO messages, collected without printing them (its own handlers stay at WARNING).

    The accuracy control says which ops it reverted only in its log.
    """
    logger = logging.getLogger("nncf")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    try:
        yield collect.messages
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)


def _read_report(messages: list[str]) -> dict[str, Any]:
    """What NNCF 3.x's accuracy control logged: metrics, reverted ops, whether the budget was met."""
    facts: dict[str, Any] = {
        "reference_accuracy": None,
        "ptq_accuracy": None,
        "reverted": [],
        "quantized_ops": None,
        "met_drop": True,
    }
    for message in messages:
        for key, prefix in (
            ("reference_accuracy", "Metric of initial model: "),
            ("ptq_accuracy", "Metric of quantized model: "),
        ):
            if message.startswith(prefix):
                facts[key] = float(message[len(prefix) :])
        if message.startswith("The algorithm could not achieve the required accuracy drop"):
            facts["met_drop"] = False
        if message.startswith("All layers have been checked"):
            facts["reverted"] = None  # NNCF does not list them then
        match = _REVERTED.match(message)
        if match:
            facts["quantized_ops"] = int(match.group(2))
            facts["reverted"] = [line.strip() for line in match.group(3).splitlines() if line.strip()]
    return facts


def _log_sizes(src: Path, dst: Path, what: str) -> None:
    size = src.with_suffix(".bin").stat().st_size, dst.with_suffix(".bin").stat().st_size
    log.info("OpenVINO %s INT8: weights %.2f MB -> %.2f MB", what, size[0] / 1e6, size[1] / 1e6)


def _require_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(f"OpenVINO INT8 needs the openvino package ({exc})", "pip install openvino") from None
    return openvino
