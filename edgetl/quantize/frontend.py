"""One front end for INT8 in every format: walk an accuracy ladder until a budget holds, then check it pays.

:func:`quantize_artifact` takes the FP32 artifact a format's exporter wrote, tries the rungs of that
format's ladder in order (cheapest first), measures each candidate's accuracy on validation batches against
the FP32 artifact's, and keeps the first within ``budget`` points. The ladders:

========  =======  ==================================================================================
format    method   rungs
========  =======  ==================================================================================
onnx      static   QDQ per-channel MinMax -> Percentile -> Entropy calibration -> the 1, 2, 4, 8, 16
                   most sensitive tensors kept in float (ranked by ONNX Runtime's qdq_loss_debug; the
                   weights of the nodes kept float for their activations are stored as int8) ->
                   quantization-aware training (images; :mod:`edgetl.quantize.qat`)
onnx      qat      quantization-aware training alone
onnx      dynamic  per-channel int8 weights -> the most sensitive MatMuls kept in float (needs calibration
                   batches to rank them)
openvino  static   NNCF PTQ (performance preset) -> mixed preset (asymmetric activations) with global
                   min/max ranges -> NNCF accuracy control, which reverts the most sensitive ops to float
                   until the budget holds -> quantization-aware training (images; the QAT rung's QDQ
                   graph read into an INT8 IR, :mod:`edgetl.quantize.qat_openvino`)
openvino  qat      quantization-aware training alone
tflite    static   full INT8 (calibrated activations) -> dynamic-range INT8 (activations kept float)
tflite    dynamic  dynamic-range INT8
========  =======  ==================================================================================

When no rung meets the budget the caller keeps the FP32 artifact and the result says so. TFLite has no QAT
rung (litert-torch's QAT is broken in this toolchain).
:func:`time_pair` then times the kept INT8 artifact against its FP32 twin, interleaved, so the bundle can say
plainly when INT8 is not faster on this machine.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, EdgetlError
from edgetl.quantize.base import Attempt, CalibBatches, LabelledBatches, QuantizeResult
from edgetl.verify import Predictor

log = logging.getLogger("edgetl")

METHODS = ("auto", "dynamic", "static", "qat")
#: Formats with a quantization-aware training rung (images only).
QAT_FORMATS = ("onnx", "openvino")
#: Formats whose INT8 can be made without calibration data (weights only).
DYNAMIC_FORMATS = ("onnx", "tflite")
SENSITIVE_COUNTS = (1, 2, 4, 8, 16)
DEFAULT_BUDGET = 1.0
CALIB_HINT = ("make a calibration set with `edgetl calibrate --run RUN --out calib/NAME` (or --data DATA) "
              "and pass it with --calib calib/NAME")


@dataclass(frozen=True)
class Rung:
    """One candidate of a ladder: its name and how to build it into a folder."""

    step: str
    build: Callable[[Path], dict[str, Any]]


def resolve_method(method: str, fmt: str, *, text: bool, has_calib: bool) -> str:
    """The concrete method for ``auto`` (text: dynamic where the format has it; images: static), checked.

    Raises:
        ConfigError: Unknown method, dynamic for a format without it, or static without calibration data.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}", f"choose one of: {', '.join(METHODS)}")
    if method == "auto":
        method = "dynamic" if text and fmt in DYNAMIC_FORMATS else "static"
    if method == "dynamic" and fmt not in DYNAMIC_FORMATS:
        raise ConfigError(f"{fmt} has no dynamic INT8", "use --method static with a calibration set (--calib)")
    if method == "qat" and (text or fmt not in QAT_FORMATS):
        what = "text models" if text else fmt
        raise ConfigError(f"quantization-aware training is not available for {what}",
                          f"use --method {'dynamic' if text else 'static'}; QAT covers image models in "
                          f"{', '.join(QAT_FORMATS)}")
    if method == "static" and not has_calib:
        raise ConfigError(f"static INT8 ({fmt}) needs calibration data and none was given", CALIB_HINT)
    return method


def quantize_artifact(
    fmt: str,
    fp32_path: Path,
    *,
    method: str,
    text: bool,
    calib: CalibBatches | None,
    validation: LabelledBatches,
    budget: float,
    predictor: Callable[[Path], Predictor],
    workdir: Path,
    min_agreement: float = 0.0,
    progress: Callable[[str], None] | None = None,
    qat: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[QuantizeResult, Path | None, dict[str, Any] | None]:
    """Walk ``fmt``'s ladder from the FP32 artifact until a candidate is within ``budget`` points of it.

    Args:
        fmt: ``onnx``, ``openvino`` or ``tflite``.
        fp32_path: The FP32 artifact (``model.onnx``, ``model.xml`` with its ``.bin``, ``model.tflite``).
        method: ``dynamic`` or ``static`` (see :func:`resolve_method`).
        text: Whether the model is a text model (NNCF's transformer scheme, padded calibration).
        calib: Preprocessed calibration batches (required for static; ranks layers for dynamic ONNX).
        validation: Preprocessed validation batches with labels: the budget is measured on them.
        budget: Largest accepted accuracy drop against the FP32 artifact, in points.
        predictor: Builds a predictor for an artifact file of this format.
        workdir: Scratch folder; each rung writes ``workdir/rung<i>/<file name>``.
        min_agreement: Smallest top-1 agreement with the FP32 artifact a candidate needs as well (0..1), so
            that a candidate the final verification would refuse is not kept.
        progress: Called with a one-line status before each rung.
        qat: Builds the quantization-aware-training candidate into a path (the last ONNX and OpenVINO rung,
            or the only one for method ``qat``); None: no QAT rung.

    Returns:
        The result (every rung tried, the kept one or why none), the kept candidate's file (in ``workdir``)
        or None, and the kept candidate's facts or None.
    """
    labels = np.concatenate([np.asarray(y) for _, y in validation])
    fp32_top = predictions(predictor(fp32_path), validation)
    reference = float(np.mean(fp32_top == labels))
    n = len(labels)
    result = QuantizeResult(fmt=fmt, method=method, budget=budget, validation_samples=n)
    log.info("INT8 budget: <= %.2f points below FP32 (%.2f%% on %d validation samples)", budget, 100 * reference, n)
    best: tuple[float, int, Path, dict[str, Any]] | None = None
    for index, rung in enumerate(_ladder(fmt, method, fp32_path, text, calib, validation, budget, workdir, qat)):
        if progress is not None:
            progress(f"INT8 rung {index + 1}: {rung.step}")
        folder = workdir / f"rung{index}"
        folder.mkdir(parents=True, exist_ok=True)
        candidate = folder / fp32_path.name
        started = time.perf_counter()
        try:
            facts = rung.build(candidate)
            top = predictions(predictor(candidate), validation)
        except EdgetlError as exc:
            result.attempts.append(Attempt(rung.step, {}, None, reference, False, exc.one_line()))
            log.warning("INT8 %s failed: %s", rung.step, exc.one_line())
            continue
        acc, agreement = float(np.mean(top == labels)), float(np.mean(top == fp32_top))
        within = 100 * (reference - acc) <= budget + 1e-9
        ok = within and agreement >= min_agreement
        note = "" if ok else ("over budget" if not within else f"agreement {agreement:.2%} < {min_agreement:.2%}")
        attempt = Attempt(rung.step, facts, acc, reference, ok, note, agreement)
        result.attempts.append(attempt)
        log.info("INT8 %-38s accuracy %.2f%% (drop %+.2f points, agreement %.2f%%) %s [%.0f s]", rung.step,
                 100 * acc, attempt.drop, 100 * agreement, "ok" if ok else note, time.perf_counter() - started)
        if best is None or acc > best[0]:
            best = (acc, index, candidate, facts)
        if ok:
            result.chosen = len(result.attempts) - 1
            return result, candidate, facts
    tried = ", ".join(a.step for a in result.attempts)
    best_text = f"; best was {100 * (reference - best[0]):.2f} points below" if best is not None else ""
    result.declined = f"no INT8 candidate met the {budget:g}-point budget ({tried}){best_text}: kept FP32"
    log.warning("%s", result.declined)
    return result, None, None


def predictions(predict: Predictor, validation: LabelledBatches) -> np.ndarray:
    """Top-1 class of ``predict`` for every sample of the labelled batches, in order."""
    return np.concatenate([np.asarray(predict(inputs)).argmax(axis=1) for inputs, _ in validation])


def _ladder(
    fmt: str, method: str, fp32: Path, text: bool, calib: CalibBatches | None, validation: LabelledBatches,
    budget: float, workdir: Path, qat: Callable[[Path], dict[str, Any]] | None = None,
) -> Iterator[Rung]:
    if fmt == "onnx":
        yield from _onnx_rungs(method, fp32, calib, workdir)
    elif fmt == "openvino":
        if method != "qat":
            yield from _openvino_rungs(fp32, text, calib or [], validation, budget)
    elif fmt == "tflite":
        yield from _tflite_rungs(method, fp32, calib or [])
    else:
        raise ConfigError(f"no INT8 ladder for format {fmt!r}")
    if qat is not None and fmt in QAT_FORMATS and method in ("static", "qat"):
        yield Rung("quantization-aware training", qat)


def _onnx_rungs(method: str, fp32: Path, calib: CalibBatches | None, workdir: Path) -> Iterator[Rung]:
    from edgetl.quantize.onnx_dynamic import OP_TYPES as DYNAMIC_OPS
    from edgetl.quantize.onnx_dynamic import quantize_onnx_dynamic
    from edgetl.quantize.onnx_static import (
        CALIBRATION_METHODS,
        nodes_to_keep_float,
        quantize_onnx_static,
        sensitivity,
        weights_to_keep_float,
    )

    cache = workdir / "ranges"
    cache.mkdir(parents=True, exist_ok=True)
    if method == "qat":
        return
    if method == "dynamic":
        yield Rung("dynamic, per-channel", lambda p: quantize_onnx_dynamic(fp32, p))
        if not calib:
            return
        ranking = [r for r in sensitivity(fp32, calib) if set(r.op_types) & set(DYNAMIC_OPS)]
        for count in SENSITIVE_COUNTS:
            nodes = nodes_to_keep_float(ranking, count, DYNAMIC_OPS)
            yield Rung(f"dynamic, {len(nodes)} sensitive layers float",
                       lambda p, nodes=nodes: quantize_onnx_dynamic(fp32, p, exclude=nodes))
        return
    assert calib is not None
    for name in CALIBRATION_METHODS:
        yield Rung(f"static, per-channel, {name}",
                   lambda p, name=name: quantize_onnx_static(fp32, p, calib, calibration=name, cache_dir=cache))
    ranking = sensitivity(fp32, calib)
    seen: set[tuple[str, ...]] = set()
    for count in SENSITIVE_COUNTS:
        nodes = tuple(nodes_to_keep_float(ranking, count))
        if not nodes or nodes in seen:
            continue
        seen.add(nodes)
        weights = tuple(weights_to_keep_float(ranking, count))
        yield Rung(f"static, {len(nodes)} sensitive layers float",
                   lambda p, nodes=nodes, weights=weights: quantize_onnx_static(
                       fp32, p, calib, calibration="percentile", exclude=nodes, float_weights=weights,
                       cache_dir=cache))


def _openvino_rungs(
    fp32: Path, text: bool, calib: CalibBatches, validation: LabelledBatches, budget: float
) -> Iterator[Rung]:
    from edgetl.quantize import openvino_nncf as nncf_backend

    yield Rung("NNCF PTQ, performance preset",
               lambda p: nncf_backend.quantize_ptq(fp32, p, calib, text=text, preset="performance"))
    yield Rung("NNCF PTQ, mixed preset, global ranges",
               lambda p: nncf_backend.quantize_ptq(fp32, p, calib, text=text, preset="mixed",
                                                   activation_ranges="global"))
    yield Rung("NNCF accuracy control",
               lambda p: nncf_backend.quantize_accuracy_control(fp32, p, calib, validation, text=text,
                                                                 max_drop_points=budget, preset="mixed",
                                                                 activation_ranges="global"))


def _tflite_rungs(method: str, fp32: Path, calib: CalibBatches) -> Iterator[Rung]:
    from edgetl.quantize import tflite_int8

    if method == "static":
        yield Rung("full INT8, calibrated", lambda p: tflite_int8.quantize_static(fp32, p, calib))
    yield Rung("dynamic-range INT8", lambda p: tflite_int8.quantize_dynamic(fp32, p))


def copy_artifact(candidate: Path, target: Path) -> None:
    """Copy a candidate's model file (and an OpenVINO ``.bin`` beside it) to ``target``'s name and folder."""
    shutil.copyfile(candidate, target)
    weights = candidate.with_suffix(".bin")
    if weights.is_file():
        shutil.copyfile(weights, target.with_suffix(".bin"))


def artifact_size(path: Path) -> int:
    """Bytes of a model file plus its OpenVINO ``.bin``, if any."""
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if weights.is_file() else 0)


def time_pair(
    fp32: Predictor, int8: Predictor, inputs: Any, *, rounds: int = 30, warmup: int = 3
) -> dict[str, float | bool]:
    """Median latency of the FP32 and INT8 artifacts on the same inputs, interleaved so noise hits both alike.

    Returns:
        ``fp32_ms``, ``int8_ms``, ``speedup`` (FP32 time / INT8 time) and ``faster`` (speedup > 1.05).
    """
    for _ in range(warmup):
        fp32(inputs), int8(inputs)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for name, run in (("fp32", fp32), ("int8", int8)):
            started = time.perf_counter()
            run(inputs)
            times[name].append(1e3 * (time.perf_counter() - started))
    fp32_ms, int8_ms = statistics.median(times["fp32"]), statistics.median(times["int8"])
    speedup = fp32_ms / int8_ms if int8_ms > 0 else float("inf")
    return {"fp32_ms": round(fp32_ms, 4), "int8_ms": round(int8_ms, 4), "speedup": round(speedup, 3),
            "faster": speedup > 1.05}
