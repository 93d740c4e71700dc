"""Inference engines the torch-free runtime can drive: one class per engine, registered by name.

Every engine takes a model file (and an optional thread count) and maps model inputs to a float32
logits array: an image model's one float32 batch in the bundle's input layout, or a text model's
int64 token arrays by input name (``input_ids``, ``attention_mask``). Engines are registered as
``"module:Class"`` paths and imported on first use, so each engine's module (``openvino_engine``,
``tflite_engine``) imports its library alone. The engine's library is imported only when an
engine is created, so importing :mod:`edgetl.runtime` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgetl.errors import ConfigError, DataError, RunFolderError
from edgetl.registry import Registry

log = logging.getLogger("edgetl")

#: Model inputs: one array for a single-input model, or arrays by input name.
Inputs = np.ndarray | dict[str, np.ndarray]


class Engine(Protocol):
    """What :class:`~edgetl.runtime.bundle.Bundle` needs from an engine."""

    def run(self, inputs: Inputs) -> np.ndarray:
        """Logits for a float32 image batch, or for token arrays by input name."""
        ...


#: Engine classes by name, as ``"module:Class"``; each is called as ``cls(model_path, threads=None)``.
ENGINES: Registry[str] = Registry("runtime engine")
ENGINES.add("onnxruntime", "edgetl.runtime.engines:OrtEngine")
ENGINES.add("openvino", "edgetl.runtime.openvino_engine:OpenVINOEngine")
ENGINES.add("ai-edge-litert", "edgetl.runtime.tflite_engine:TFLiteEngine")


def check_threads(threads: int | None) -> None:
    """Refuse a thread count below 1 (``None`` means the engine's default)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}", "omit it for the default")


class OrtEngine:
    """An ONNX model in an ONNX Runtime CPU session.

    Args:
        model_path: The ``.onnx`` file.
        threads: Intra-op threads; ``None`` lets ONNX Runtime choose (one per physical core).

    Raises:
        RunFolderError: The file is missing, truncated or not a model ONNX Runtime can load.
        ConfigError: ``threads`` is below 1.
    """

    name = "onnxruntime"
    package = "onnxruntime"

    def __init__(self, model_path: str | Path, threads: int | None = None) -> None:
        check_threads(threads)
        self.model_path = Path(model_path)
        self.threads = threads
        self.session = _open_session(self.model_path, threads)
        #: Each input's name -> (shape with ``str`` for dynamic axes, numpy dtype).
        self.inputs: dict[str, tuple[list[Any], np.dtype]] = {
            i.name: (list(i.shape), _NUMPY_TYPES.get(i.type, np.float32)) for i in self.session.get_inputs()
        }
        self.output_name: str = self.session.get_outputs()[0].name

    def run(self, inputs: Inputs) -> np.ndarray:
        """Logits for ``inputs``: one array (single-input models) or arrays by input name.

        Arrays are converted to the model's dtypes; names the model does not take are ignored.

        Raises:
            DataError: An input is missing, or an array does not have the model's rank or fixed dimensions.
        """
        return self.session.run([self.output_name], prepare_feeds(inputs, self.inputs))[0]

    @staticmethod
    def version() -> str:
        """The installed onnxruntime version."""
        return importlib.metadata.version("onnxruntime")


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def prepare_feeds(inputs: Inputs, expected: dict[str, tuple[list[Any], Any]]) -> dict[str, np.ndarray]:
    """``inputs`` as contiguous arrays of each model input's dtype, checked against its shape.

    Args:
        inputs: One array (given to the first input) or arrays by input name; extra names are ignored.
        expected: Each model input's name -> (shape with ``str`` for dynamic axes, numpy dtype).

    Raises:
        DataError: An input is missing, or an array does not have the input's rank or fixed dimensions.
    """
    named = inputs if isinstance(inputs, dict) else {next(iter(expected)): inputs}
    missing = [name for name in expected if name not in named]
    if missing:
        raise DataError(f"the model needs inputs {list(expected)}; missing {missing}",
                        "tokenize texts with the bundle (Bundle.predict does it for you)")
    feeds = {}
    for name, (shape, dtype) in expected.items():
        feeds[name] = np.ascontiguousarray(named[name], dtype=dtype)
        _check_shape(name, feeds[name].shape, shape)
    return feeds


def _check_shape(name: str, shape: tuple[int, ...], expected: list[Any]) -> None:
    fits = len(shape) == len(expected) and all(
        not isinstance(want, int) or want == got for want, got in zip(expected, shape, strict=True)
    )
    if not fits:
        raise DataError(
            f"input {name!r} of shape {tuple(shape)} does not fit the model input {expected}",
            "preprocess inputs with the bundle's spec (Bundle.predict does it for you)",
        )


def _open_session(model_path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    if not model_path.is_file():
        raise RunFolderError(f"model file not found: {model_path}", "re-export the bundle")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes, all plain Exception subclasses
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFolderError(
            f"ONNX Runtime cannot load {model_path}: {detail}",
            "the file is corrupt or truncated; re-export the bundle with `edgetl export`",
        ) from None


def engine_class(name: str) -> type:
    """The class registered as ``name``, importing its module.

    Raises:
        UnknownNameError: ``name`` is not registered (the known names are listed).
    """
    module, _, attr = ENGINES.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)


def create_engine(name: str, model_path: str | Path, threads: int | None = None) -> Engine:
    """Create the engine registered as ``name`` on ``model_path``.

    Raises:
        UnknownNameError: ``name`` is not registered (the known names are listed).
        RunFolderError: The engine's library is not installed (what to install is said), or the model
            cannot be loaded.
    """
    return engine_class(name)(model_path, threads=threads)


def require(module: str, package: str) -> Any:
    """Import an engine's library, or say which package to install.

    Raises:
        RunFolderError: ``module`` cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RunFolderError(f"this bundle needs {package}, which is not installed ({exc})",
                             f"pip install {package}") from None
