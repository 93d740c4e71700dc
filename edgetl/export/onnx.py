"""ONNX exporter: torch model -> one self-contained ``model.onnx`` (opset >= 17, dynamic batch axis).

Image models take one float32 ``input``; text models take int64 ``input_ids`` and ``attention_mask`` with
dynamic batch and sequence axes. ``fp16`` converts the FP32 file (float16 weights, float32 compute,
inputs and outputs); ``int8`` is made from the FP32 file by :mod:`edgetl.quantize` (the export front end
walks the accuracy ladder), so :meth:`OnnxExporter.convert` writes fp32 and fp16 only.

Uses the TorchScript-based ("legacy") ``torch.onnx.export``: on this toolchain it writes one file with
inlined weights in about 0.5 s, while the dynamo exporter takes about 20 s for a MobileNetV3-Small and
writes external data unless told not to; both give the same graph quality and parity (~1e-7). If a
future torch drops the legacy path, the dynamo exporter (``external_data=False``) is used instead.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, ExportError
from edgetl.export.bundle import OUTPUT_NAME, input_names
from edgetl.runtime.engines import OrtEngine
from edgetl.spec import ModelSpec
from edgetl.verify import Predictor, spec_layout_module

log = logging.getLogger("edgetl")

MIN_OPSET = 17
MAX_OPSET = 20  # the highest opset the legacy exporter writes in torch 2.14
_DUMMY_BATCH = 2  # > 1 so that a batch size of 1 cannot be folded into the graph as a constant


class OnnxExporter:
    """Writes and runs ``model.onnx`` (the ``onnx`` format of :data:`edgetl.export.EXPORTERS`)."""

    format = "onnx"
    model_file = "model.onnx"
    precisions = ("fp32", "fp16", "int8")

    def check_options(self, *, opset: int, precision: str = "fp32", spec: ModelSpec | None = None) -> None:
        """Refuse an opset this exporter cannot write."""
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ConfigError(
                f"ONNX opset {opset} is not supported", f"choose an opset from {MIN_OPSET} to {MAX_OPSET}"
            )

    def bundle_spec(self, spec: ModelSpec) -> ModelSpec:
        """ONNX keeps the run's input layout."""
        return spec

    def convert(self, model: Any, spec: ModelSpec, path: Path, *, opset: int = 18) -> None:
        """Export ``model`` (eval mode) to an FP32 file at ``path`` and check it (FP16 and INT8 artifacts are
        made from this file: :class:`edgetl.export.fp16.Fp16Plan`, :class:`edgetl.export.int8.Int8Plan`).

        Raises:
            ConfigError: An option this exporter cannot honour.
            ExportError: Both exporters failed, or the file fails the ONNX checker.
        """
        self.check_options(opset=opset, spec=spec)
        module, dummy, axes = _module_and_inputs(model, spec)
        try:
            _export_legacy(module, dummy, path, opset, spec, axes)
        except Exception as exc:  # the legacy exporter is deprecated and may disappear
            log.warning("legacy ONNX exporter failed (%s); trying the dynamo exporter", exc)
            _export_dynamo(module, dummy, path, opset, spec, axes)
        check_onnx(path, opset, spec)
        log.info("wrote %s (%.2f MB, fp32, opset %d)", path.name, path.stat().st_size / 1e6, opset)

    def predictor(self, path: Path, threads: int | None = None) -> Predictor:
        """A callable running the exported file in ONNX Runtime."""
        return OrtEngine(path, threads=threads).run

    def fp16_weight_ops(self, fp32_path: Path) -> int:
        """The FP32 file's float32 weights (see ``onnx_static.fp16_weights``)."""
        import onnx

        from edgetl.quantize.onnx_static import fp16_weights

        return len(fp16_weights(onnx.load(str(fp32_path))))

    def cast_fp16(self, fp32_path: Path, dst: Path, *, keep: int = 0) -> dict[str, Any]:
        """Write ``fp32_path`` to ``dst`` with float16 weights except the first ``keep`` (compute stays float32)."""
        from edgetl.quantize.onnx_static import quantize_onnx_fp16

        facts = quantize_onnx_fp16(fp32_path, dst, keep=keep)
        n = facts["weights_fp16"] + facts["weights_fp32"]
        weights = "float16" if not keep else f"float16 except the first {facts['weights_fp32']} of {n} weight " \
            "tensors (float32)"
        return {"weights": weights, "compute": "float32", "fp16_tool": facts["tool"]}


def _module_and_inputs(model: Any, spec: ModelSpec) -> tuple[Any, tuple[Any, ...], dict[int, str]]:
    """The module to trace (positional inputs), example inputs, and each input's dynamic axes."""
    import torch

    rng = np.random.default_rng(0)
    if spec.is_text:
        module = text_inputs_module(model).eval()  # eval before tracing: a fresh wrapper is in train mode
        ids = torch.from_numpy(rng.integers(1000, 2000, (_DUMMY_BATCH, 16), dtype=np.int64))
        mask = torch.ones_like(ids)
        mask[1, 11:] = 0  # a padded row, so the mask's path is traced with real values
        return module, (ids, mask), {0: "batch", 1: "sequence"}
    height, width = spec.input_size
    shape = (_DUMMY_BATCH, 3, height, width) if spec.layout == "NCHW" else (_DUMMY_BATCH, height, width, 3)
    dummy = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return spec_layout_module(model, spec).eval(), (dummy,), {0: "batch"}


def text_inputs_module(model: Any) -> Any:
    """``model`` (a text classifier taking a dict) with positional ``input_ids, attention_mask`` inputs."""
    import torch

    class TextInputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner({"input_ids": input_ids, "attention_mask": attention_mask})

    return TextInputs(model)


def _export_legacy(module: Any, dummy: tuple[Any, ...], path: Path, opset: int, spec: ModelSpec,
                   axes: dict[int, str]) -> None:
    import torch

    names = input_names(spec)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={**dict.fromkeys(names, axes), OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            dynamo=False,
        )


def _export_dynamo(module: Any, dummy: tuple[Any, ...], path: Path, opset: int, spec: ModelSpec,
                   axes: dict[int, str]) -> None:
    import torch

    dims = {i: torch.export.Dim(name, min=1 if name == "batch" else 2) for i, name in axes.items()}
    try:
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=input_names(spec),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=tuple(dims for _ in dummy),
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "the model may use an op ONNX cannot express; run with -v and report the backbone",
        ) from exc


def check_onnx(path: Path, opset: int, spec: ModelSpec) -> None:
    """Run the ONNX checker and confirm one file, the opset, the I/O names and the dynamic axes.

    Raises:
        ExportError: Naming what is wrong.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported ONNX file fails the checker: {exc}", "report the backbone") from None
    model = onnx.load(str(path), load_external_data=False)
    problems = _graph_problems(model, opset, spec)
    if problems:
        message = "the exported ONNX file is not as expected: " + "; ".join(problems)
        raise ExportError(message, "report the backbone")


def _graph_problems(model: Any, opset: int, spec: ModelSpec) -> list[str]:
    from onnx.external_data_helper import uses_external_data

    problems = []
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version != opset:
        problems.append(f"opset {version}, expected {opset}")
    if any(uses_external_data(t) for t in model.graph.initializer):
        problems.append("weights stored as external data")
    dynamic = 2 if spec.is_text else 1  # batch (and sequence) axes
    io = [("input", model.graph.input, input_names(spec), dynamic), ("output", model.graph.output, [OUTPUT_NAME], 1)]
    for kind, values, names, n_dynamic in io:
        if [v.name for v in values] != names:
            problems.append(f"{kind}s {[v.name for v in values]}, expected {names}")
            continue
        for value in values:
            if any(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim[:n_dynamic]):
                problems.append(f"{kind} {value.name!r} has a fixed axis where a dynamic one is expected")
    return problems


EXPORTER = OnnxExporter()
