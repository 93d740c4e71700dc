"""A ``.tflite`` model in the ai-edge-litert interpreter (LiteRT's Python runtime; no TensorFlow, no torch).

Files from ``edgetl export --format tflite`` have fixed shapes (see :mod:`edgetl.export.tflite`): image
models one NHWC float32 ``input`` of batch 1; text models one signature per fixed sequence length, with
int32 ``input_ids`` and ``attention_mask`` of batch 1. This engine accepts any batch: a fixed batch of 1
runs sample by sample, and a text batch is padded (``input_ids`` 0, ``attention_mask`` 0) to the
smallest signature that holds it. A file with a dynamic batch axis runs in one call.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import DataError, RunFolderError
from edgetl.runtime.engines import Inputs, check_threads, require
from edgetl.runtime.text import TEXT_INPUTS

#: The output name edgetl's exporter gives the logits (else a file's first output is used).
OUTPUT_NAME = "logits"
_PREPROCESS_HINT = "preprocess inputs with the bundle's spec (Bundle.predict does it for you)"


def signature_name(length: int) -> str:
    """The name of a text model's signature for sequences of ``length`` tokens."""
    return f"seq_{length}"


@dataclass(frozen=True)
class Signature:
    """One signature of the file: a runner and its tensors.

    Attributes:
        key: The signature's name.
        runner: The interpreter's signature runner (resizes inputs and invokes).
        inputs: Each input's name -> (shape with -1 for dynamic axes, numpy dtype).
        output: The name of the (first) output, the logits.
        classes: The logits' last dimension.
    """

    key: str
    runner: Any
    inputs: dict[str, tuple[tuple[int, ...], Any]]
    output: str
    classes: int

    @property
    def batch(self) -> int:
        """The fixed batch size of the inputs, or -1 when dynamic."""
        return next(iter(self.inputs.values()))[0][0]

    @property
    def length(self) -> float:
        """Text signatures: the fixed sequence length (``inf`` when dynamic)."""
        length = self.inputs[TEXT_INPUTS[0]][0][1]
        return float("inf") if length < 0 else length


class TFLiteEngine:
    """A TFLite model in the ai-edge-litert interpreter (CPU, with its default XNNPACK delegate).

    Args:
        model_path: The ``.tflite`` file.
        threads: Interpreter threads; ``None`` lets the interpreter choose.

    Raises:
        RunFolderError: ai-edge-litert is not installed, or the file is missing, truncated, not a TFLite
            model, or has no signature.
        ConfigError: ``threads`` is below 1.
    """

    name = "ai-edge-litert"
    package = "ai-edge-litert"

    def __init__(self, model_path: str | Path, threads: int | None = None) -> None:
        check_threads(threads)
        self.model_path = Path(model_path)
        self.threads = threads
        self.interpreter = _open_interpreter(self.model_path, threads)
        #: The file's signatures; for text models sorted by sequence length.
        self.signatures = _read_signatures(self.interpreter, self.model_path)
        self.is_text = set(TEXT_INPUTS) <= set(self.signatures[0].inputs)
        if self.is_text:
            self.signatures.sort(key=lambda s: s.length)

    @property
    def input_names(self) -> list[str]:
        """The inputs' names (``input``; or ``input_ids`` and ``attention_mask``)."""
        return list(self.signatures[0].inputs)

    @property
    def sequence_lengths(self) -> list[float]:
        """Text models: the signatures' fixed sequence lengths, shortest first."""
        return [s.length for s in self.signatures] if self.is_text else []

    def run(self, inputs: Inputs) -> np.ndarray:
        """Float32 logits ``(batch, classes)`` for a float32 NHWC image batch, or token arrays by name.

        Raises:
            DataError: An input is missing or does not fit the model (rank, fixed dimensions), or a text
                is longer than the longest signature.
        """
        named = inputs if isinstance(inputs, dict) else {self.input_names[0]: inputs}
        missing = [name for name in self.input_names if name not in named]
        if missing:
            raise DataError(f"the model needs inputs {self.input_names}; missing {missing}",
                            "tokenize texts with the bundle (Bundle.predict does it for you)")
        if self.is_text:
            signature, feeds = self._text_feeds(named)
        else:
            signature = self.signatures[0]
            feeds = {name: np.asarray(named[name]) for name in signature.inputs}
        feeds = _cast_and_check(signature, feeds)
        return _run_batch(signature, feeds)

    def explain(self, inputs: Inputs) -> str | None:
        """How ``inputs`` really run when that differs from their shape (padding, per-sample calls), for
        benchmark rows; None when they run as given."""
        named = inputs if isinstance(inputs, dict) else {self.input_names[0]: inputs}
        rows, *rest = np.asarray(named[self.input_names[0]]).shape
        signature, notes = self.signatures[0], []
        if self.is_text:
            signature, _ = self._text_feeds(named)
            if math.isfinite(signature.length) and rest and signature.length > rest[0]:
                notes.append(f"runs padded to {int(signature.length)} tokens ({signature.key})")
        if 0 < signature.batch < rows:
            notes.append(f"batch {rows} runs as {rows // signature.batch} calls of {signature.batch}")
        return "; ".join(notes) or None

    def _text_feeds(self, named: dict[str, np.ndarray]) -> tuple[Signature, dict[str, np.ndarray]]:
        """The smallest signature that holds the batch's sequence length, and the inputs padded to it."""
        feeds = {name: np.asarray(named[name]) for name in TEXT_INPUTS}
        shape = feeds[TEXT_INPUTS[0]].shape
        for name, array in feeds.items():
            if array.ndim != 2:
                raise DataError(f"input {name!r} of shape {array.shape} does not fit the model input "
                                "['batch', 'sequence']", _PREPROCESS_HINT)
            if array.shape != shape:
                raise DataError(f"input {name!r} of shape {array.shape} does not match {TEXT_INPUTS[0]!r} "
                                f"of shape {shape}", _PREPROCESS_HINT)
        signature = next((s for s in self.signatures if s.length >= shape[1]), None)
        if signature is None:
            longest = int(self.signatures[-1].length)
            raise DataError(f"a sequence of {shape[1]} tokens is longer than the model's longest signature "
                            f"({longest} tokens)", f"truncate texts to {longest} tokens (Bundle.predict does it)")
        if math.isfinite(signature.length) and signature.length > shape[1]:
            pad = ((0, 0), (0, int(signature.length) - shape[1]))
            feeds = {name: np.pad(array, pad, constant_values=0) for name, array in feeds.items()}
        return signature, feeds

    @staticmethod
    def version() -> str:
        """The installed ai-edge-litert version."""
        return importlib.metadata.version("ai-edge-litert")


def _open_interpreter(model_path: Path, threads: int | None) -> Any:
    interpreter_module = require("ai_edge_litert.interpreter", "ai-edge-litert")
    if not model_path.is_file():
        raise RunFolderError(f"model file not found: {model_path}", "re-export the bundle")
    try:
        interpreter = interpreter_module.Interpreter(model_path=str(model_path), num_threads=threads)
        interpreter.allocate_tensors()
        return interpreter
    except Exception as exc:  # the interpreter raises ValueError or RuntimeError, worded by the C++ side
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunFolderError(
            f"ai-edge-litert cannot load {model_path}: {detail}",
            "the file is corrupt or truncated; re-export the bundle with `edgetl export`",
        ) from None


def _read_signatures(interpreter: Any, model_path: Path) -> list[Signature]:
    keys = list(interpreter.get_signature_list())
    if not keys:
        raise RunFolderError(f"{model_path} has no signature", "re-export the bundle with `edgetl export`")
    return [_signature(interpreter, key) for key in keys]


def _signature(interpreter: Any, key: str) -> Signature:
    runner = interpreter.get_signature_runner(key)
    inputs = {name: (tuple(int(d) for d in detail["shape_signature"]), detail["dtype"])
              for name, detail in runner.get_input_details().items()}
    outputs = runner.get_output_details()
    output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs))
    return Signature(key, runner, inputs, output, int(outputs[output]["shape"][-1]))


def _cast_and_check(signature: Signature, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays in the signature's dtypes, after checking their rank and fixed non-batch dimensions."""
    out = {}
    for name, (shape, dtype) in signature.inputs.items():
        array = feeds[name]
        fits = array.ndim == len(shape) and all(want < 0 or want == got for want, got in zip(shape[1:], array.shape[1:],
                                                                                              strict=True))
        if not fits:
            expected = ["batch", *("?" if d < 0 else d for d in shape[1:])]
            raise DataError(f"input {name!r} of shape {tuple(array.shape)} does not fit the model input {expected}",
                            _PREPROCESS_HINT)
        out[name] = np.ascontiguousarray(array, dtype=dtype)
    return out


def _run_batch(signature: Signature, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run the rows in steps of the signature's fixed batch (all at once when the batch axis is dynamic)."""
    n = next(iter(feeds.values())).shape[0]
    step = n if signature.batch < 0 else signature.batch
    if n == 0:
        return np.zeros((0, signature.classes), np.float32)
    if n % step:
        raise DataError(f"a batch of {n} does not split into the model's fixed batch of {step}",
                        f"pass a multiple of {step} samples")
    logits = [signature.runner(**{name: array[start : start + step] for name, array in feeds.items()})[signature.output]
              for start in range(0, n, step)]
    return np.concatenate(logits).astype(np.float32, copy=False)
