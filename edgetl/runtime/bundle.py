"""Load an exported bundle (a folder with ``edgetl.json`` and a model file) and predict with it.

Numpy, Pillow, ``tokenizers`` (text bundles) and the bundle's engine only: no torch, no transformers,
so an app or a device can use this alone::

    from edgetl.runtime import Bundle

    bundle = Bundle.load("bundles/flowers-onnx")
    bundle.predict("daisy.jpg", top_k=3)   # [Prediction(label='daisy', score=0.93), ...]
    Bundle.load("bundles/reviews-int8").predict(["a gem", "two hours I will never get back"])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from edgetl.errors import ConfigError, DataError, RunFolderError
from edgetl.runtime.engines import Engine, Inputs, create_engine
from edgetl.runtime.preprocess import ImageLike, preprocess_batch
from edgetl.runtime.schema import schema_errors
from edgetl.runtime.text import TOKENIZER_FILE, load_tokenizer, tokenize
from edgetl.spec import ModelSpec

#: What a bundle predicts on: images (paths, PIL images, arrays) or, for text bundles, strings.
Item = ImageLike | str

MANIFEST_NAME = "edgetl.json"
SCHEMA_VERSION = 1
#: Which runtime engine runs each bundle format.
FORMAT_ENGINES = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert"}
_FIX = "re-export the bundle with `edgetl export`"


@dataclass(frozen=True)
class Prediction:
    """One class of a prediction.

    Attributes:
        label: Class name from the bundle's spec.
        score: Softmax probability in [0, 1].
    """

    label: str
    score: float


@dataclass(frozen=True)
class Manifest:
    """A validated ``edgetl.json``.

    Attributes:
        folder: The bundle folder.
        data: The parsed JSON.
        spec: The model's input contract and labels.
        model_path: The model file, inside ``folder``.
        tokenizer_path: Text bundles: the ``tokenizer.json`` inside ``folder``; None for images.
    """

    folder: Path
    data: dict[str, Any]
    spec: ModelSpec
    model_path: Path
    tokenizer_path: Path | None = None

    @property
    def format(self) -> str:
        """The artifact format (``onnx``)."""
        return str(self.data["format"])


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a bundle's ``edgetl.json`` without loading the model.

    Args:
        path: The bundle folder (or its ``edgetl.json``).

    Raises:
        RunFolderError: The folder or manifest is missing or malformed, the format is unknown, or
            ``model_file`` (or a text bundle's tokenizer) is missing or points outside the folder.
    """
    folder = Path(path)
    if folder.name == MANIFEST_NAME and folder.is_file():
        folder = folder.parent
    data = _load_json(folder / MANIFEST_NAME)
    _check_keys(data, folder)
    spec = ModelSpec.from_dict(data["spec"])
    model_path = _inside(folder, data["model_file"], "model_file", "model.onnx")
    tokenizer_path = None
    if spec.is_text:
        tokenizer_path = _inside(folder, f"{spec.tokenizer}/{TOKENIZER_FILE}", "spec.tokenizer", "tokenizer")
    return Manifest(folder=folder, data=data, spec=spec, model_path=model_path, tokenizer_path=tokenizer_path)


def _load_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise RunFolderError(f"no {MANIFEST_NAME} in {file.parent}", "point at a bundle from `edgetl export`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{file} is not valid JSON: {exc}", _FIX) from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{file} must hold a JSON object, got {type(data).__name__}", _FIX)
    return data


def _check_keys(data: dict[str, Any], folder: Path) -> None:
    """The schema version first (a newer edgetl's manifest may have keys this one does not know), then the schema."""
    where = folder / MANIFEST_NAME
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RunFolderError(
            f"{where} has schema_version {version}; this edgetl reads up to {SCHEMA_VERSION}",
            "upgrade edgetl",
        )
    errors = schema_errors(data)
    if errors:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise RunFolderError(f"{where} is not a valid bundle manifest: {errors[0]}{more}", _FIX)


def _inside(folder: Path, name: Any, key: str, example: str) -> Path:
    """``folder / name`` for the manifest entry ``key``, refusing names that are absolute or climb out."""
    where = folder / MANIFEST_NAME
    if not isinstance(name, str) or not name.strip():
        raise RunFolderError(f"{where}: {key} must be a file name, got {name!r}", _FIX)
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    escapes = posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or ".." in windows.parts
    candidate = (folder / name).resolve()
    if escapes or not candidate.is_relative_to(folder.resolve()):
        raise RunFolderError(
            f"{where}: {key} {name!r} points outside the bundle folder",
            f"{key} must be a path relative to the bundle, e.g. {example}",
        )
    if not candidate.is_file():
        raise RunFolderError(f"{name!r} ({key}) is missing from {folder}", _FIX)
    return folder / name


class Bundle:
    """A loaded bundle: its manifest, spec and a ready engine.

    Use :meth:`load` rather than the constructor.

    Attributes:
        path: The bundle folder.
        manifest: The parsed ``edgetl.json``.
        spec: Input contract and labels.
        model_path: The model file.
        engine: The engine running the model.
        tokenizer: Text bundles: the ``tokenizers.Tokenizer`` from the bundle; None for images.
    """

    def __init__(self, manifest: Manifest, engine: Engine) -> None:
        self.path = manifest.folder
        self.manifest = manifest.data
        self.spec = manifest.spec
        self.model_path = manifest.model_path
        self.engine = engine
        self.tokenizer = load_tokenizer(manifest.tokenizer_path) if manifest.tokenizer_path else None

    def __repr__(self) -> str:
        fmt = self.manifest["format"]
        return f"Bundle({str(self.path)!r}, format={fmt!r}, labels={self.spec.num_classes})"

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> Bundle:
        """Read ``edgetl.json`` in ``path``, validate it and start the format's engine.

        Args:
            path: The bundle folder.
            threads: Engine threads; ``None`` for the engine's default.

        Raises:
            RunFolderError: The bundle is missing, malformed or its model file is corrupt.
        """
        manifest = read_manifest(path)
        engine = create_engine(FORMAT_ENGINES[manifest.format], manifest.model_path, threads=threads)
        return cls(manifest, engine)

    def logits(self, inputs: Inputs) -> np.ndarray:
        """Raw logits for preprocessed inputs: a float32 image batch, or token arrays by name (text)."""
        return self.engine.run(inputs)

    def preprocess(self, items: list[Item]) -> Inputs:
        """Model inputs for a list of items, per the bundle's spec.

        Images (paths, PIL images or arrays) become one float32 batch; texts become ``input_ids`` and
        ``attention_mask`` (truncated to the spec's ``max_length``, padded to the longest text).

        Raises:
            DataError: An image cannot be read, or a text bundle got something other than strings.
        """
        if self.tokenizer is None:
            return preprocess_batch(items, self.spec)
        bad = next((item for item in items if not isinstance(item, str)), None)
        if bad is not None:
            raise DataError(f"a text bundle classifies strings, got {type(bad).__name__}", "pass str or a list of str")
        return tokenize(self.tokenizer, items, self.spec.max_length)[0]

    def predict(
        self, items: Item | list[Item], top_k: int = 1, batch_size: int = 32
    ) -> list[Prediction] | list[list[Prediction]]:
        """Classify one item or a list of items (images for image bundles, strings for text bundles).

        Args:
            items: A path, PIL image or numpy array (or a string, for text), or a list (or tuple) of them.
            top_k: How many classes to return per item, best first.
            batch_size: Items per engine call for a list.

        Returns:
            For one item a list of ``top_k`` :class:`Prediction`; for a list, one such list per item.

        Raises:
            ConfigError: ``top_k`` is not between 1 and the number of classes.
            DataError: An image cannot be read, or a text bundle got something other than strings.
        """
        self._check_top_k(top_k)
        single = not isinstance(items, (list, tuple))
        batch_items = [items] if single else list(items)
        results = []
        for start in range(0, len(batch_items), max(1, batch_size)):
            logits = self.logits(self.preprocess(batch_items[start : start + batch_size]))
            results.extend(self._top_k(logits, top_k))
        return results[0] if single else results

    def _check_top_k(self, top_k: int) -> None:
        if not isinstance(top_k, int) or not 1 <= top_k <= self.spec.num_classes:
            raise ConfigError(
                f"top_k must be between 1 and {self.spec.num_classes} (the number of classes), got {top_k!r}"
            )

    def _top_k(self, logits: np.ndarray, top_k: int) -> list[list[Prediction]]:
        if logits.ndim != 2 or logits.shape[1] != self.spec.num_classes:
            raise RunFolderError(
                f"the model returns logits of shape {logits.shape} for {self.spec.num_classes} labels",
                _FIX,
            )
        probs = softmax(logits)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        names = self.spec.labels
        return [[Prediction(names[i], float(p[i])) for i in idx] for p, idx in zip(probs, order, strict=True)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64 for stability."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
