"""Export front end: run folder -> verified bundle, dispatching to one module per format.

Each format module (``edgetl.export.onnx``, ``.openvino``, ``.tflite``) exposes ``EXPORTER`` following
:class:`Exporter`; only that module imports the format's libraries, and only when it is used. Text
bundles also carry the tokenizer files (``tokenizer/``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

from edgetl.errors import ConfigError, DataError, EdgetlError, ParityError
from edgetl.export.bundle import bundle_tokenizer, provenance, write_manifest
from edgetl.export.fp16 import Fp16Plan
from edgetl.export.int8 import Int8Plan
from edgetl.fsutil import check_out_dir, staged_dir
from edgetl.registry import Registry
from edgetl.runfolder import Run, load_run
from edgetl.spec import ModelSpec
from edgetl.verify import ParityLimits, Predictor, check_parity, limits_for, torch_reference, verify_samples

__all__ = ["ALL_FORMATS", "EXPORTERS", "Exporter", "export", "export_all", "get_exporter"]

log = logging.getLogger("edgetl")


class Exporter(Protocol):
    """The contract of a format module's ``EXPORTER``.

    Attributes:
        format: The format's name (``onnx``, ``openvino``, ``tflite``), as in ``edgetl.json``.
        model_file: The main model file's name in the bundle (``model.onnx``, ``model.xml``...); other
            files the format needs (``model.bin``) are written beside it.
        precisions: The precisions it can write.
    """

    format: str
    model_file: str
    precisions: tuple[str, ...]

    def check_options(self, *, opset: int, precision: str = "fp32", spec: ModelSpec | None = None) -> None:
        """Raise ConfigError for options the format cannot honour (for this model, when ``spec`` is given)."""
        ...

    def bundle_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec the artifact's inputs follow (e.g. NHWC for TFLite images); ``spec`` when unchanged."""
        ...

    def convert(self, model: Any, spec: ModelSpec, path: Path, *, opset: int) -> dict[str, Any] | None:
        """Write the FP32 artifact for ``model`` (inputs per ``spec``, the bundle spec) to ``path``; FP16 and
        INT8 artifacts are made from it (:class:`~edgetl.export.fp16.Fp16Plan`, :class:`~edgetl.export.int8.Int8Plan`).

        Returns:
            Format-specific facts for ``edgetl.json``'s ``artifact`` entry (route used, fixed sequence
            lengths...), or None.
        """
        ...

    def predictor(self, path: Path, threads: int | None = None) -> Predictor:
        """A callable running the written artifact on the model's inputs."""
        ...


#: Export formats -> the module that implements them (imported on first use).
EXPORTERS: Registry[str] = Registry("export format")
EXPORTERS.add("onnx", "edgetl.export.onnx")
EXPORTERS.add("openvino", "edgetl.export.openvino")
EXPORTERS.add("tflite", "edgetl.export.tflite")
#: Files of a run's tokenizer folder that a text bundle carries (the encoder's config and weights stay behind).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def get_exporter(fmt: str) -> Exporter:
    """The exporter of format ``fmt``; an unknown format lists the known ones."""
    return importlib.import_module(EXPORTERS.get(fmt)).EXPORTER


def export(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    *,
    precision: str = "fp32",
    overwrite: bool = False,
    verify: bool = True,
    verify_limit: int | None = None,
    opset: int = 18,
    max_abs_diff: float | None = None,
    min_agreement: float | None = None,
    max_accuracy_drop: float | None = None,
    max_rel_diff: float | None = None,
    progress: bool = True,
    calib: str | Path | None = None,
    method: str = "auto",
    budget_samples: int | None = None,
    tflite_route: str = "auto",
    qat_steps: int | None = None,
) -> Path:
    """Export a run folder's model to a bundle, verify it against PyTorch, and write ``edgetl.json``.

    The bundle is built in a staging folder and only moved to ``out`` when export and verification
    pass, so a refused or failed export leaves nothing at ``out``.

    Args:
        run_dir: A run folder written by ``edgetl finetune``.
        fmt: Artifact format (see ``EXPORTERS``).
        out: Bundle folder; default ``bundles/<run folder name>-<fmt>-<precision>``.
        precision: ``fp32``, ``fp16`` or ``int8``. INT8 walks the format's accuracy ladder (see
            :mod:`edgetl.quantize.frontend`) until ``max_accuracy_drop`` holds on the validation split against
            the FP32 artifact; when nothing does, the bundle holds the FP32 artifact and says why.
        overwrite: Replace a non-empty ``out``.
        verify: Compare with PyTorch on the run's test split and refuse a mismatch.
        verify_limit: Verify on at most this many test samples (``None``: all).
        opset: ONNX opset (17 or newer).
        max_abs_diff: Largest logit difference accepted (default per precision: 1e-4 for fp32, 1e-2 for fp16,
            unchecked for int8). FP16 keeps the fewest leading weight ops in float32 that hold half of it (or
            of ``max_rel_diff``) on the validation split (see :mod:`edgetl.export.fp16`).
        min_agreement: Smallest top-1 agreement accepted, 0..1 (default 0.999 fp32, 0.995 fp16, 0.95 int8).
        max_accuracy_drop: Largest accuracy loss in points (default: 1.0 for int8 only): the INT8 budget on the
            validation split against the FP32 artifact, and the test-split check against PyTorch.
        max_rel_diff: Largest logit difference relative to the logits' scale (default: unchecked).
        progress: Show a progress bar during verification.
        calib: INT8: a calibration set folder (``edgetl calibrate``); required for static INT8.
        method: INT8: ``auto`` (text: dynamic where the format has it; images: static), ``dynamic``, ``static``.
        budget_samples: INT8: measure the budget on the first N validation samples (default: all of them).
        tflite_route: TFLite only: ``auto`` (litert-torch, then onnx2tf if it fails), ``litert-torch`` or
            ``onnx2tf`` (see :mod:`edgetl.export.tflite`).
        qat_steps: INT8: optimiser steps of the quantization-aware-training rung (default 200).

    Returns:
        The bundle folder.

    Raises:
        UnknownNameError: ``fmt`` is not a known format.
        ConfigError: ``precision`` or ``opset`` is not supported.
        OutputExistsError: ``out`` is not empty and ``overwrite`` is False.
        RunFolderError: ``run_dir`` is not a complete run folder.
        ParityError: The artifact differs from PyTorch beyond the limits (nothing is written).
    """
    exporter = _with_route(get_exporter(fmt), tflite_route)
    _check_options(exporter, precision, opset, verify_limit)
    limits = limits_for(precision, max_abs_diff=max_abs_diff, min_agreement=min_agreement,
                        max_accuracy_drop=max_accuracy_drop, max_rel_diff=max_rel_diff)
    out = check_out_dir(out if out is not None else default_out(run_dir, fmt, precision), overwrite)
    run = load_run(run_dir)
    exporter.check_options(opset=opset, precision=precision, spec=run.spec)
    spec = exporter.bundle_spec(run.spec)
    plan = None
    if precision == "int8":
        plan = Int8Plan.make(run, fmt, spec, calib=calib, method=method, budget=limits.max_accuracy_drop,
                             budget_samples=budget_samples, min_agreement=limits.min_agreement, qat_steps=qat_steps)
    with staged_dir(out, overwrite) as stage:
        if spec.is_text:
            _copy_tokenizer(run, stage)
        model_path = stage / exporter.model_file
        model = run.model()
        quantization = None
        if plan is not None:
            artifact_info, quantization = plan.execute(exporter, model, stage, model_path, opset=opset,
                                                       progress=progress)
            if quantization["declined"]:  # the bundle holds the FP32 artifact: judge it as FP32
                precision = "fp32"
                limits = limits_for(precision, max_abs_diff=max_abs_diff, min_agreement=min_agreement,
                                    max_rel_diff=max_rel_diff)
        elif precision == "fp16":
            artifact_info = Fp16Plan(run, spec, limits.max_abs_diff, limits.max_rel_diff).execute(
                exporter, model, stage, model_path, opset=opset)
        else:
            artifact_info = exporter.convert(model, spec, model_path, opset=opset)
        verification = None
        if verify:
            try:
                verification = _verify(run, spec, model, exporter.predictor(model_path), stage, verify_limit,
                                       limits, progress, precision)
            except ParityError as exc:
                if precision != "int8":
                    raise
                # the kept rung met the budget on the validation split but not on the test split: keep FP32
                assert quantization is not None
                quantization.update(chosen=None, speed=None, int8_bytes=None, declined=(
                    f"{quantization['chosen']} met the budget on the validation split but not on the test split "
                    f"({exc.message}): kept FP32"))
                log.warning("INT8 declined: %s", quantization["declined"])
                precision = "fp32"
                limits = limits_for(precision, max_abs_diff=max_abs_diff, min_agreement=min_agreement,
                                    max_rel_diff=max_rel_diff)
                artifact_info = exporter.convert(model, spec, model_path, opset=opset)
                verification = _verify(run, spec, model, exporter.predictor(model_path), stage, verify_limit,
                                       limits, progress, precision)
        write_manifest(stage, fmt=fmt, precision=precision, model_file=exporter.model_file, spec=spec,
                       verification=verification, provenance=provenance(run, stage, model_path),
                       artifact=artifact_info, quantization=quantization)
    log.info("bundle written to %s", out)
    return out


def _copy_tokenizer(run: Run, stage: Path) -> None:
    """Copy the run's tokenizer files into the bundle, at the same relative folder the spec names."""
    source, target = run.path / run.spec.tokenizer, stage / run.spec.tokenizer
    if not (source / "tokenizer.json").is_file():
        raise ConfigError(f"the run's tokenizer is missing: {source / 'tokenizer.json'}", "re-train the run")
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


#: ``--format all`` means every registered format.
ALL_FORMATS = "all"


def export_all(
    run_dir: str | Path, out: str | Path | None = None, *, precision: str = "fp32", overwrite: bool = False,
    **options: Any,
) -> dict[str, Path | EdgetlError]:
    """Export to every registered format, each in ``out/<format>`` and each verified on its own.

    A format that cannot take the model (or fails verification) does not stop the others: its entry in
    the result is the error, and nothing is written for it.

    Args:
        run_dir: A run folder.
        out: Parent folder; default ``bundles/<run folder name>-<precision>``.
        precision: As for :func:`export`; formats that cannot write it report why.
        overwrite: Replace non-empty ``out/<format>`` folders.
        **options: Passed on to :func:`export` (``verify_limit``, ``opset``, limits, ``progress``).

    Returns:
        Format -> bundle folder, or the error that stopped that format.

    Raises:
        RunFolderError: ``run_dir`` is not a run folder (checked once, before any work).
    """
    load_run(run_dir)
    route = options.pop("tflite_route", "auto")
    out = Path(out) if out is not None else Path("bundles") / f"{Path(run_dir).resolve().name}-{precision}"
    results: dict[str, Path | EdgetlError] = {}
    for fmt in EXPORTERS.names():
        log.info("export %d/%d: %s", len(results) + 1, len(EXPORTERS), fmt)
        try:
            routed = {"tflite_route": route} if fmt == "tflite" else {}
            results[fmt] = export(run_dir, fmt, out / fmt, precision=precision, overwrite=overwrite, **options,
                                  **routed)
        except EdgetlError as exc:
            log.warning("%s: %s", fmt, exc.one_line())
            results[fmt] = exc
    return results


def default_out(run_dir: str | Path, fmt: str, precision: str) -> Path:
    """The default bundle folder: ``bundles/<run folder name>-<fmt>-<precision>``."""
    return Path("bundles") / f"{Path(run_dir).resolve().name}-{fmt}-{precision}"


def _with_route(exporter: Exporter, route: str) -> Exporter:
    """``exporter`` converting with ``route``; a route other than ``auto`` needs a format that has routes."""
    if route == "auto":
        return exporter
    if not hasattr(exporter, "with_route"):
        raise ConfigError(f"a TFLite route ({route!r}) was given for {exporter.format} export",
                          "--tflite-route applies to --format tflite only")
    return exporter.with_route(route)


def _check_options(exporter: Exporter, precision: str, opset: int, verify_limit: int | None) -> None:
    _check_precision(precision, exporter)
    exporter.check_options(opset=opset)
    if verify_limit is not None and verify_limit < 1:
        raise ConfigError(f"verify_limit must be >= 1, got {verify_limit}", "omit it to use every test image")


def _check_precision(precision: str, exporter: Exporter) -> None:
    if precision in exporter.precisions:
        return
    if precision in ("fp16", "int8"):
        raise ConfigError(
            f"precision {precision!r} is not available for {exporter.format} export yet",
            f"choose one of: {', '.join(exporter.precisions)}",
        )
    raise ConfigError(f"unknown precision {precision!r}", f"choose one of: {', '.join(exporter.precisions)}")


_QUANTIZED_HINT = ("the export is refused: {precision} loses too much on this model; export fp32, or accept "
                   "the loss with --max-rel-diff / --max-abs-diff / --min-agreement / --max-accuracy-drop")


def _verify(
    run: Run, spec: ModelSpec, model: Any, artifact: Predictor, bundle: Path, limit: int | None,
    limits: ParityLimits, progress: bool, precision: str,
) -> dict[str, Any]:
    """Parity of ``artifact`` vs the torch model on the run's test split; raises ParityError on failure.

    Text is tokenized with the bundle's own tokenizer copy, so the files an app receives are checked too.
    """
    samples = _test_split(run)
    tokenizer = bundle_tokenizer(bundle, spec)
    report = verify_samples(torch_reference(model, spec), artifact, samples, spec,
                            limit=limit, progress=progress, tokenizer=tokenizer)
    what = "texts" if spec.is_text else "images"
    log.info("parity on %d test %s: max |diff| %.2e, top-1 agreement %.2f%%, accuracy %.2f%% "
             "(torch %.2f%%)", report.n, what, report.max_abs_diff, 100 * report.top1_agreement,
             100 * report.artifact_accuracy, 100 * report.reference_accuracy)
    hint = _QUANTIZED_HINT.format(precision=precision) if precision != "fp32" else None
    check_parity(report, limits.max_abs_diff, limits.min_agreement, limits.max_accuracy_drop, hint=hint,
                 max_rel_diff=limits.max_rel_diff)
    return {**report.to_dict(), "split": "test", "reference": "pytorch", "limits": limits.to_dict()}


def _test_split(run: Run) -> Any:
    """The run's held-out test split, checking that its classes still match the model's labels."""
    try:
        data = run.data()
    except DataError as exc:
        message = f"cannot load the run's dataset to verify the export: {exc.message}"
        raise DataError(message, exc.hint) from None
    if tuple(data.classes) != tuple(run.spec.labels):
        raise DataError(
            f"the dataset's classes {data.classes} no longer match the model's labels "
            f"{list(run.spec.labels)}",
            "restore the dataset the run was trained on, or re-train",
        )
    return data.test
