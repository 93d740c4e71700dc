"""Sample sets (images + integer labels) and :class:`ImageData`, the result of loading a dataset.

Only numpy and Pillow are used here, so everything that needs images without training (calibration,
parity checks, benchmarks) can read a dataset without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from edgetl.errors import DataError
from edgetl.runtime.preprocess import array_to_image, open_image


@runtime_checkable
class SampleSet(Protocol):
    """A sized, indexable set of labelled images.

    Attributes:
        labels: Class index of every sample, int64, shape ``(N,)``.
    """

    labels: np.ndarray

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` as an RGB PIL image."""
        ...

    def subset(self, idx: np.ndarray) -> SampleSet:
        """A new set holding the samples at positions ``idx``, in that order."""
        ...


def _as_labels(labels: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"got {n} images but {arr.shape[0]} labels", "pass one label per image")
    return arr


class FileSamples:
    """Images stored as files, opened on demand.

    Args:
        paths: One image file per sample.
        labels: Class index per sample.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | np.ndarray) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = _as_labels(labels, len(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"FileSamples(n={len(self)})"

    def image(self, i: int) -> Image.Image:
        """Open sample ``i`` as RGB; an unreadable file raises :class:`DataError`."""
        return open_image(self.paths[i])

    def subset(self, idx: np.ndarray) -> FileSamples:
        """A new set holding the samples at positions ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return FileSamples([self.paths[i] for i in idx], self.labels[idx])


class ArraySamples:
    """Images held in memory as one uint8 array.

    Args:
        images: ``(N, H, W)`` grey or ``(N, H, W, C)`` array with ``C`` in 1, 3, 4.
        labels: Class index per sample.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(
                f"image array must be uint8 (N,H,W) or (N,H,W,C), got {images.dtype} {images.shape}",
                "convert the array with .astype(np.uint8)",
            )
        self.images = images
        self.labels = _as_labels(labels, images.shape[0])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"ArraySamples(n={len(self)}, shape={self.images.shape[1:]})"

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` as an RGB PIL image."""
        return array_to_image(self.images[i])

    def subset(self, idx: np.ndarray) -> ArraySamples:
        """A new set holding the samples at positions ``idx`` (the arrays are copied)."""
        idx = np.asarray(idx, dtype=np.int64)
        return ArraySamples(self.images[idx], self.labels[idx])


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Number of samples per class index, length ``num_classes``."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


@dataclass
class ImageData:
    """A dataset split into train, validation and test sets.

    Attributes:
        classes: Class names; label ``i`` means ``classes[i]``.
        train: Training samples.
        val: Validation samples (model selection, early stopping).
        test: Held-out samples for the final metric.
        source: ``"fashion-mnist"`` (an embedded name) or the resolved folder path.
        skipped: Corrupt or unreadable files that were left out, as path strings.
        fingerprint: SHA-256 over the dataset identity and the loading options; it changes when
            files or options change, so pipeline stages can be skipped when it does not.
    """

    classes: list[str]
    train: SampleSet
    val: SampleSet
    test: SampleSet
    source: str
    skipped: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def splits(self) -> dict[str, SampleSet]:
        """The three sets by name: ``train``, ``val``, ``test``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Sizes per split and per class, JSON-ready.

        Returns:
            ``{"source", "classes", "train", "val", "test", "skipped", "per_class": {split: {class: n}}}``.
        """
        return split_summary(self.source, self.classes, self.splits(), skipped=len(self.skipped))


def split_summary(source: str, classes: list[str], splits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Sizes per split and per class of any labelled splits (images or text), plus ``extra`` keys."""
    out: dict[str, Any] = {"source": source, "classes": list(classes)}
    per_class: dict[str, dict[str, int]] = {}
    for name, samples in splits.items():
        out[name] = len(samples)
        counts = class_counts(samples.labels, len(classes))
        per_class[name] = {c: int(n) for c, n in zip(classes, counts, strict=True)}
    return {**out, **extra, "per_class": per_class}
