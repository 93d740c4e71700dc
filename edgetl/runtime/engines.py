"""Inference engines the torch-free runtime can drive: one class per engine, registered by name.

Every engine takes a model file (and an optional thread count) and maps a float32 batch in the
bundle's input layout to a float32 logits array. The engine's library is imported only when an
engine is created, so importing :mod:`edgetl.runtime` stays cheap.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgetl.errors import ConfigError, DataError, RunFolderError
from edgetl.registry import Registry

log = logging.getLogger("edgetl")


class Engine(Protocol):
    """What :class:`~edgetl.runtime.bundle.Bundle` needs from an engine."""

    input_name: str

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 batch in the model's input layout."""
        ...


#: Engine classes by name; each is called as ``cls(model_path, threads=None)``.
ENGINES: Registry[type] = Registry("runtime engine")


def check_threads(threads: int | None) -> None:
    """Refuse a thread count below 1 (``None`` means the engine's default)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}", "omit it for the default")


@ENGINES.register("onnxruntime")
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
        first_input = self.session.get_inputs()[0]
        self.input_name: str = first_input.name
        self.input_shape: list[Any] = list(first_input.shape)
        self.output_name: str = self.session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch`` (converted to contiguous float32).

        Raises:
            DataError: The batch does not have the model's input rank or fixed dimensions.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._check_shape(batch.shape)
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        expected = self.input_shape
        fits = len(shape) == len(expected) and all(
            not isinstance(want, int) or want == got for want, got in zip(expected, shape, strict=True)
        )
        if not fits:
            raise DataError(
                f"input of shape {tuple(shape)} does not fit the model input {expected}",
                "preprocess images with the bundle's spec (Bundle.predict does it for you)",
            )

    @staticmethod
    def version() -> str:
        """The installed onnxruntime version."""
        return importlib.metadata.version("onnxruntime")


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


def create_engine(name: str, model_path: str | Path, threads: int | None = None) -> Engine:
    """Create the engine registered as ``name`` on ``model_path``.

    Raises:
        UnknownNameError: ``name`` is not registered (the known names are listed).
    """
    return ENGINES.get(name)(model_path, threads=threads)
