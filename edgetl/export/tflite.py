"""TFLite exporter: torch model -> one ``model.tflite`` (litert-torch, or ONNX -> onnx2tf), run by ai-edge-litert.

Inputs follow the mobile convention:

- Image models take one float32 NHWC ``input`` of shape ``(1, H, W, 3)`` (the bundle spec's layout is
  ``NHWC``). The batch is fixed at 1: litert-torch 0.10 cannot convert a dynamic batch of MobileNetV3
  (its JAX bridge needs concrete shapes), and a phone classifies one camera frame at a time. The
  runtime engine (:class:`edgetl.runtime.tflite_engine.TFLiteEngine`) runs a batch sample by sample.
- Text models take int32 ``input_ids`` and ``attention_mask`` of shape ``(1, L)``, one signature
  ``seq_<L>`` per fixed length ``L`` (litert-torch cannot convert a dynamic sequence length): lengths
  16, 32, 64, 128... below ``spec.max_length``, and ``spec.max_length`` itself. The engine pads a batch
  to the smallest signature that holds it; padded positions carry ``attention_mask`` 0, so they are
  masked out of attention and of pooling and the logits do not change. All signatures share one copy
  of the weights.

The output is float32 ``logits`` of shape ``(1, num_classes)``.

``fp16`` stores the weights of fully connected, convolution and embedding ops as float16 (ai-edge-quantizer's
``float_casting`` weight-only recipe): about half the size, compute stays float32, so inputs and
outputs are unchanged.

Routes (``edgetl.json`` records the one used in ``artifact.route``):

- ``litert-torch`` (the default): PyTorch -> TFLite without TensorFlow.
- ``onnx2tf`` (:mod:`edgetl.export.tflite_onnx2tf`): a fixed-shape ONNX file -> onnx2tf (TensorFlow) ->
  TFLite, with the same inputs and outputs; text models get one signature, at ``spec.max_length``. It
  needs the optional ``tf`` extra. With the route ``auto`` it is tried when litert-torch fails, and the
  bundle records why (``artifact.fallback_reason``); ``--tflite-route onnx2tf`` forces it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from edgetl.errors import ConfigError, ExportError
from edgetl.export.bundle import INPUT_NAME, OUTPUT_NAME
from edgetl.runtime.text import TEXT_INPUTS
from edgetl.runtime.tflite_engine import TFLiteEngine, signature_name
from edgetl.spec import ModelSpec
from edgetl.verify import Predictor, spec_layout_module

log = logging.getLogger("edgetl")

#: Fixed sequence lengths written for text models, clipped to (and always including) ``spec.max_length``.
SEQUENCE_LENGTHS = (16, 32, 64, 128, 256, 512)
IMAGE_SIGNATURE = "serving_default"
_BATCH_NOTE = "fixed 1; the engine runs a batch sample by sample"


#: ``auto``: litert-torch, then onnx2tf when litert-torch fails; or one route only.
ROUTES = ("auto", "litert-torch", "onnx2tf")


@dataclass(frozen=True)
class TFLiteExporter:
    """Writes and runs ``model.tflite`` (the ``tflite`` format of :data:`edgetl.export.EXPORTERS`).

    Attributes:
        route: One of :data:`ROUTES` (see the module's docstring); :meth:`with_route` makes another.
    """

    route: str = "auto"
    format: ClassVar[str] = "tflite"
    model_file: ClassVar[str] = "model.tflite"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    routes: ClassVar[tuple[str, ...]] = ROUTES

    def with_route(self, route: str) -> TFLiteExporter:
        """This exporter converting with ``route`` (``auto``, ``litert-torch`` or ``onnx2tf``).

        Raises:
            ConfigError: An unknown route.
        """
        if route not in ROUTES:
            raise ConfigError(f"unknown TFLite route {route!r}", f"choose one of: {', '.join(ROUTES)}")
        return replace(self, route=route)

    def check_options(self, *, opset: int, precision: str = "fp32", spec: ModelSpec | None = None) -> None:
        """Refuse the ``onnx2tf`` route when its packages are missing (before any work).

        ``opset`` only matters to the onnx2tf route; int8 is made by edgetl.quantize.
        """
        if self.route == "onnx2tf":
            from edgetl.export import tflite_onnx2tf

            tflite_onnx2tf.check_available()

    def bundle_spec(self, spec: ModelSpec) -> ModelSpec:
        """Image models take NHWC input (the mobile convention); text models are unchanged."""
        return spec if spec.is_text else spec.with_(layout="NHWC")

    def convert(self, model: Any, spec: ModelSpec, path: Path, *, opset: int = 18) -> dict[str, Any]:
        """Convert ``model`` (inputs per the bundle ``spec``) to an FP32 file at ``path`` (:meth:`cast_fp16`
        and the INT8 plan start from it).

        Returns:
            Facts for ``edgetl.json``: route (and why the first failed, after a fallback), converter
            version, batch handling, sequence lengths (text), weight precision.

        Raises:
            ConfigError: An option this exporter cannot honour.
            ExportError: Conversion failed (naming the first failure of each route tried).
        """
        self.check_options(opset=opset, spec=spec)
        started = time.perf_counter()
        if self.route == "onnx2tf":
            facts = _convert_onnx2tf(model, spec, path, opset)
        else:
            try:
                content, facts = _convert_litert(model, spec)
            except Exception as exc:
                if self.route == "litert-torch":
                    raise ExportError(f"TFLite export failed; litert-torch failed: {_one_line(exc)}",
                                      "try --tflite-route onnx2tf, or export to onnx") from exc
                facts = _second_route(model, spec, path, opset, exc)
            else:
                path.write_bytes(content)
                facts["weights"] = "float32"
        log.info("wrote %s (%.2f MB, fp32, %s) in %.0f s", path.name, path.stat().st_size / 1e6, facts["route"],
                 time.perf_counter() - started)
        return facts

    def predictor(self, path: Path, threads: int | None = None) -> Predictor:
        """A callable running the written file in the ai-edge-litert interpreter."""
        return TFLiteEngine(path, threads=threads).run

    def fp16_weight_ops(self, fp32_path: Path) -> int:
        """The most weight ops any signature of the FP32 file has (see :func:`weight_op_scopes`)."""
        return max((len(ops) for ops in weight_op_scopes(Path(fp32_path).read_bytes())), default=0)

    def cast_fp16(self, fp32_path: Path, dst: Path, *, keep: int = 0) -> dict[str, Any]:
        """Write ``fp32_path`` to ``dst`` with float16 weights except the first ``keep`` weight ops' of each
        signature."""
        content = Path(fp32_path).read_bytes()
        scopes = weight_op_scopes(content) if keep else []
        Path(dst).write_bytes(_cast_fp16(content, {scope for ops in scopes for scope in ops[:keep]}))
        facts = _fp16_facts()
        if keep:
            n = max(len(ops) for ops in scopes)
            facts["weights"] += f"; the first {keep} of {n} weight ops kept float32"
        return facts


def sequence_lengths(max_length: int) -> list[int]:
    """The fixed lengths written for a text model: :data:`SEQUENCE_LENGTHS` below ``max_length``, then it."""
    return [n for n in SEQUENCE_LENGTHS if n < max_length] + [max_length]


def _convert_litert(model: Any, spec: ModelSpec) -> tuple[bytes, dict[str, Any]]:
    """Convert with litert-torch, one signature per fixed shape: the float32 flatbuffer and facts about it.

    Raises:
        ExportError: litert-torch is not installed.
    """
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its progress lines are not ours to print
    try:
        with _quiet_logger("torch.utils._pytree"):  # litert-torch registers an Enum the way torch 2.14 deprecates
            import litert_torch
    except ImportError as exc:
        raise ExportError(f"TFLite export needs litert-torch, which cannot be imported ({exc})",
                          "pip install litert-torch ai-edge-litert ai-edge-quantizer") from None
    converter = litert_torch.Converter()
    facts: dict[str, Any] = {"route": "litert-torch", "litert_torch_version": litert_torch.__version__,
                             "batch": _BATCH_NOTE}
    if spec.is_text:
        facts["sequence_lengths"] = lengths = sequence_lengths(int(spec.max_length))
        module = _text_module(model)
        for length in lengths:
            converter.signature(signature_name(length), module, sample_kwargs=_text_sample(length))
    else:
        converter.signature(IMAGE_SIGNATURE, _image_module(model, spec), sample_kwargs=_image_sample(spec))
    return bytes(converter.convert().model_content()), facts


def _image_module(model: Any, spec: ModelSpec) -> Any:
    """``model`` taking an NHWC ``input`` and returning ``{"logits": ...}`` (names the file's tensors)."""
    import torch

    class ImageLogits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
            return {OUTPUT_NAME: self.inner(input)}

    return ImageLogits(spec_layout_module(model, spec)).eval()


def _text_module(model: Any) -> Any:
    """``model`` taking int32 ``input_ids, attention_mask`` and returning ``{"logits": ...}``.

    The file's inputs are int32 (litert-torch narrows int64 anyway); they are widened to int64 for the model.
    """
    import torch

    from edgetl.export.onnx import text_inputs_module

    class TextLogits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
            return {OUTPUT_NAME: self.inner(input_ids.long(), attention_mask.long())}

    return TextLogits(text_inputs_module(model)).eval()


def _image_sample(spec: ModelSpec) -> dict[str, Any]:
    import torch

    height, width = spec.input_size
    return {INPUT_NAME: torch.randn(1, height, width, 3, generator=torch.Generator().manual_seed(0))}


def _text_sample(length: int) -> dict[str, Any]:
    """One row of ``length`` tokens, the last quarter padded, so the mask's path is traced with real values."""
    import torch

    ids = torch.randint(1000, 2000, (1, length), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, length - max(1, length // 4):] = 0
    ids[mask == 0] = 0
    return dict(zip(TEXT_INPUTS, (ids, mask), strict=True))


def weight_op_scopes(content: bytes) -> list[list[str]]:
    """Per subgraph (signature), the scopes of the ops that read a constant float32 tensor, in execution order:
    what ai-edge-quantizer's recipe rules match (an op's scope is the names of its outputs)."""
    import numpy as np
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(content)
    scopes = []
    for subgraph in model.subgraphs:
        ops: dict[str, None] = {}
        for op in subgraph.operators:
            for i in op.inputs:
                data = fb.get_tensor_data(subgraph.tensors[i], model.buffers) if i >= 0 else None
                if data is not None and data.dtype == np.float32 and data.size > 1:
                    ops[fb.get_op_scope(op, subgraph.tensors)] = None
                    break
        scopes.append(list(ops))
    return scopes


def _cast_fp16(content: bytes, kept: Collection[str] = ()) -> bytes:
    """Store weights as float16 with ai-edge-quantizer's weight-only ``float_casting`` recipe (compute stays fp32),
    except those of the ops whose scopes are in ``kept`` (see :func:`weight_op_scopes`).

    Raises:
        ExportError: ai-edge-quantizer is missing or fails.
    """
    try:
        from ai_edge_quantizer import qtyping, quantizer

        qt = quantizer.Quantizer(bytearray(content))  # signatures share weight buffers: each is cast once per use
        qt.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        )
        for scope in sorted(kept):  # later rules win over the ".*" one
            qt.update_quantization_recipe(f"^{re.escape(scope)}$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                          algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
        # ai-edge-quantizer 0.10 does not pass enable_progress_bar on to its last step, whose tqdm bar goes to stderr
        with _quiet_root_warnings("Quantized data for tensor"), contextlib.redirect_stderr(io.StringIO()):
            return bytes(qt.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
    except Exception as exc:
        raise ExportError(f"casting the TFLite weights to fp16 failed: {_one_line(exc)}",
                          "export fp32, or pip install ai-edge-quantizer if it is missing") from exc


@contextlib.contextmanager
def _quiet_root_warnings(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with ``prefix`` (ai-edge-quantizer warns once per shared buffer)."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence the logger ``name`` below ERROR for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fp16_facts() -> dict[str, Any]:
    return {"weights": "float16 (ai-edge-quantizer float_casting, weight-only)", "compute": "float32",
            "ai_edge_quantizer_version": importlib.metadata.version("ai-edge-quantizer")}


def _second_route(model: Any, spec: ModelSpec, path: Path, opset: int, first: Exception) -> dict[str, Any]:
    """After litert-torch failed: ONNX -> onnx2tf -> TFLite when onnx2tf is installed, else the first failure.

    Raises:
        ExportError: onnx2tf is missing or failed too (one line naming both failures).
    """
    reason = f"litert-torch failed: {_one_line(first)}"
    log.debug("litert-torch conversion failed", exc_info=first)
    from edgetl.export import tflite_onnx2tf

    missing = tflite_onnx2tf.missing_modules()
    if missing:
        raise ExportError(f"TFLite export failed; {reason}",
                          f"the onnx2tf route (ONNX -> onnx2tf -> TFLite) needs {', '.join(missing)}: "
                          f"{tflite_onnx2tf.INSTALL_HINT}")
    log.warning("%s; trying ONNX -> onnx2tf", reason)
    try:
        facts = _convert_onnx2tf(model, spec, path, opset)
    except Exception as exc:
        second = exc.message if isinstance(exc, ExportError) else f"onnx2tf failed: {_one_line(exc)}"
        raise ExportError(f"TFLite export failed; {reason}; then {second}",
                          "export to onnx or openvino instead") from exc
    return {**facts, "fallback_reason": reason}


def _convert_onnx2tf(model: Any, spec: ModelSpec, path: Path, opset: int) -> dict[str, Any]:
    """The onnx2tf route (:mod:`edgetl.export.tflite_onnx2tf`), with the facts both routes record."""
    from edgetl.export import tflite_onnx2tf

    facts = tflite_onnx2tf.convert(model, spec, path, opset=opset)
    return {**facts, "batch": _BATCH_NOTE, "weights": "float32"}


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an error (with the next line when the first only introduces it), clipped."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXPORTER = TFLiteExporter()
