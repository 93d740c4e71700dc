"""Seeded, stratified splitting and per-class sampling with numpy.

Every function returns sorted index arrays into the label array it was given, so the result depends
only on the labels and the seed, never on the order in which files were found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgetl.data.samples import SampleSet
from edgetl.errors import ConfigError, DataError
from edgetl.fsutil import sha256_json

SeedLike = int | tuple[int, ...]
#: Bump when splitting or sampling changes, so old fingerprints no longer match.
LOADER_VERSION = 1


@dataclass(frozen=True)
class LoadOptions:
    """How a dataset is split and sampled; validated on construction.

    Attributes:
        val_fraction: Fraction of each class carved out for validation.
        test_fraction: Fraction of each class carved out for test (when the data has no test split).
        seed: Seed for every random choice.
        limit_per_class: Cap on images per class (see :func:`edgetl.data.load_image_data`).
        strict: Fail on the first corrupt image instead of skipping it.
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    limit_per_class: int | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        check_options(self.val_fraction, self.test_fraction, self.limit_per_class)

    def fingerprint(self, identity: Any) -> str:
        """SHA-256 over a source ``identity`` (JSON-serialisable) and these options."""
        return sha256_json({"loader": LOADER_VERSION, "source": identity, "options": asdict(self)})


def check_options(val_fraction: float, test_fraction: float, limit_per_class: int | None) -> None:
    """Refuse fractions outside [0, 1), fractions summing to 1 or more, and a limit below 1.

    Raises:
        ConfigError: Naming the bad option.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}", "use e.g. 0.1 for 10%")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}",
            "leave some images for training, e.g. 0.1 and 0.1",
        )
    if limit_per_class is not None and limit_per_class < 1:
        raise ConfigError(f"limit_per_class must be at least 1, got {limit_per_class}", "or leave it unset")


def min_per_class(fractions: Sequence[float]) -> int:
    """Images a class needs so that train and every non-zero fraction get at least one."""
    return 1 + sum(1 for f in fractions if f > 0)


def _class_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` images go to each carved split: at least one each, train keeps one."""
    sizes = [max(1, math.floor(n * f + 0.5)) if f > 0 else 0 for f in fractions]
    while sum(sizes) > n - 1:
        largest = max(range(len(sizes)), key=lambda k: sizes[k])
        sizes[largest] -= 1
    return sizes


def check_class_sizes(labels: np.ndarray, classes: Sequence[str], fractions: Sequence[float]) -> None:
    """Raise :class:`DataError` naming the first class too small to be split by ``fractions``."""
    need = min_per_class(fractions)
    counts = np.bincount(labels, minlength=len(classes))
    for name, count in zip(classes, counts, strict=False):
        if count < need:
            raise DataError(
                f"class {name!r} has {count} image(s) but needs at least {need} to split into train/val/test",
                "add images to that class or set val_fraction/test_fraction to 0",
            )


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: SeedLike
) -> tuple[np.ndarray, ...]:
    """Split indices per class, so each carved split keeps the class balance.

    Each class is shuffled with ``np.random.default_rng(seed)``; every carved split with a
    non-zero fraction gets at least one image of each class that has enough (see
    :func:`min_per_class`; check with :func:`check_class_sizes` first).

    Args:
        labels: Class index per sample.
        fractions: Fraction of each class for each carved split, e.g. ``(val, test)``.
        seed: Random seed (an int or a tuple of ints); the same seed gives the same split.

    Returns:
        ``(rest, carved_1, carved_2, ...)`` sorted index arrays; ``rest`` is what is left (train).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for k, size in enumerate(_class_sizes(len(idx), fractions), start=1):
            parts[k].append(idx[start : start + size])
            start += size
        parts[0].append(idx[start:])
    return tuple(_sorted_concat(p) for p in parts)


def cap_per_class(labels: np.ndarray, limit: int | None, seed: SeedLike) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` randomly chosen samples of each class.

    Args:
        labels: Class index per sample.
        limit: Maximum per class; ``None`` keeps everything.
        seed: Random seed for the choice.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if limit is None:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(labels == cls))[:limit] for cls in np.unique(labels)]
    return _sorted_concat(kept)


def eval_limit(limit: int | None) -> int | None:
    """Per-class cap on predefined val and test splits for a train cap of ``limit``: ceil(limit / 4)."""
    return None if limit is None else math.ceil(limit / 4)


def split_predefined(
    classes: Sequence[str],
    train: SampleSet,
    val: SampleSet | None,
    test: SampleSet | None,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limit_per_class: int | None,
) -> tuple[SampleSet, SampleSet, SampleSet]:
    """Complete a dataset that comes with its own splits, then apply ``limit_per_class``.

    A missing ``val`` (``test``) is carved from ``train``, stratified and seeded, with
    ``val_fraction`` (``test_fraction``) of each class. Then train keeps at most ``limit_per_class``
    images per class and val and test at most ``ceil(limit_per_class / 4)`` each.

    Returns:
        ``(train, val, test)``.
    """
    fractions = (val_fraction if val is None else 0.0, test_fraction if test is None else 0.0)
    if any(f > 0 for f in fractions):
        check_class_sizes(train.labels, classes, fractions)
        rest, carved_val, carved_test = stratified_split(train.labels, fractions, seed)
        val = train.subset(carved_val) if val is None else val
        test = train.subset(carved_test) if test is None else test
        train = train.subset(rest)
    val = val if val is not None else train.subset(np.zeros(0, dtype=np.int64))
    test = test if test is not None else train.subset(np.zeros(0, dtype=np.int64))
    small = eval_limit(limit_per_class)
    return (
        _capped(train, limit_per_class, (seed, 1)),
        _capped(val, small, (seed, 2)),
        _capped(test, small, (seed, 3)),
    )


def _capped(samples: SampleSet, limit: int | None, seed: SeedLike) -> SampleSet:
    return samples if limit is None else samples.subset(cap_per_class(samples.labels, limit, seed))


def _sorted_concat(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(arrays)).astype(np.int64)
