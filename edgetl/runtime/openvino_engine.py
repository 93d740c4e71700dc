"""OpenVINO engine: an IR (``model.xml`` + ``model.bin``) compiled for the CPU, always in float32.

OpenVINO's CPU plugin runs float models in bfloat16 on processors that have it unless told otherwise, so
the engine pins ``INFERENCE_PRECISION_HINT`` to ``f32``: an FP16 IR has its weights widened to float32 and
both precisions compute in float32, as the bundle was verified. The latency hint keeps one stream (one
request at a time, all threads on it), which is how apps and ``edgetl bench`` call the engine.
Imports ``openvino`` only (no torch, no transformers).
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import RunFolderError
from edgetl.runtime.engines import Inputs, check_threads, prepare_feeds, require

_FIX = "the IR is corrupt or truncated; re-export the bundle with `edgetl export --format openvino`"


class OpenVINOEngine:
    """An OpenVINO IR compiled on the CPU device, float32 inference.

    Args:
        model_path: The ``.xml`` file; its weights are the ``.bin`` of the same name beside it.
        threads: Inference threads; ``None`` lets OpenVINO choose (one per physical core).

    Raises:
        RunFolderError: openvino is not installed, or the xml or bin is missing, truncated or corrupt.
        ConfigError: ``threads`` is below 1.
    """

    name = "openvino"
    package = "openvino"

    def __init__(self, model_path: str | Path, threads: int | None = None) -> None:
        check_threads(threads)
        ov = require("openvino", "openvino")
        self.model_path = Path(model_path)
        self.threads = threads
        self.compiled = _compile(ov, self.model_path, threads)
        #: Each input's name -> (shape with ``str`` for dynamic axes, numpy dtype).
        self.inputs: dict[str, tuple[list[Any], np.dtype]] = {
            port.get_any_name(): (_shape(port), np.dtype(port.get_element_type().to_dtype()))
            for port in self.compiled.inputs
        }
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns

    def run(self, inputs: Inputs) -> np.ndarray:
        """Float32 logits for ``inputs``: one array (single-input models) or arrays by input name.

        Arrays are converted to the model's dtypes; names the model does not take are ignored. Any batch
        size (and, for text, any sequence length) is accepted.

        Raises:
            DataError: An input is missing, or an array does not have the model's rank or fixed dimensions.
        """
        feeds = prepare_feeds(inputs, self.inputs)
        with self._lock:
            # share_inputs: the request reads the caller's arrays in place (no copy of the batch into its own
            # tensors); they outlive this synchronous call. As benchmark_app does, which fills its tensors once.
            self._request.infer(feeds, share_inputs=True)
            logits = self._request.get_output_tensor(0).data
            return np.array(logits, dtype=np.float32)  # a copy: the request reuses its output buffer

    @staticmethod
    def version() -> str:
        """The installed openvino version."""
        return importlib.metadata.version("openvino")


def _shape(port: Any) -> list[Any]:
    """A port's shape as OrtEngine lists it: ints for fixed axes, ``"?"`` for dynamic ones."""
    return [dim.get_length() if dim.is_static else "?" for dim in port.get_partial_shape()]


def _compile(ov: Any, model_path: Path, threads: int | None) -> Any:
    """Read the IR and compile it on the CPU, float32, latency hint (and ``threads`` when given).

    Raises:
        RunFolderError: The xml or bin is missing, or OpenVINO cannot read or compile them.
    """
    weights = model_path.with_suffix(".bin")
    for path in (model_path, weights):
        if not path.is_file():
            raise RunFolderError(f"model file not found: {path}", "re-export the bundle")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        model = core.read_model(str(model_path), str(weights))
        return core.compile_model(model, "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError (and its own subclasses) with long messages
        raise RunFolderError(f"OpenVINO cannot load {model_path}: {error_line(exc)}", _FIX) from None


def error_line(exc: Exception) -> str:
    """The first informative line of an OpenVINO error (its messages start with a blank or a file location)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0]
