"""Text-classification datasets: CSV/TSV/JSONL files, folders of ``.txt`` files, embedded datasets.

``load_text_data`` is the front end. Files are read by :mod:`edgetl.data.text_files`; texts and labels are
stripped of surrounding whitespace.
Splitting reuses the stratified, seeded helpers of :mod:`edgetl.data.splits`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.data.samples import split_summary
from edgetl.data.splits import LoadOptions, cap_per_class, min_per_class, split_predefined, stratified_split
from edgetl.data.text_files import LAYOUT_HINT, SPLIT_NAMES, Columns, Record, TableReader
from edgetl.errors import ConfigError, DataError
from edgetl.registry import Registry

log = logging.getLogger("edgetl")

#: Texts and labels equal to one of these (after stripping, any case) count as missing.
MISSING_VALUES = frozenset({"", "nan", "null", "none"})
#: Why a row is skipped; ``TextData.stats`` counts the rows per reason.
SKIP_REASONS = {
    "empty_text": "empty or missing text",
    "missing_label": "empty or missing label",
    "missing_split": "empty or missing split value",
    "rare_label": "label with too few examples to stratify",
}
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass
class TextSamples:
    """Texts with integer labels.

    Attributes:
        texts: One string per sample.
        labels: Class index per sample, int64, shape ``(N,)``.
    """

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.texts) != self.labels.shape[0]:
            raise DataError(f"got {len(self.texts)} texts but {self.labels.shape[0]} labels", "pass one label per text")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> TextSamples:
        """A new set holding the samples at positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return TextSamples([self.texts[i] for i in idx], self.labels[idx])


@dataclass
class TextData:
    """A text dataset split into train, validation and test sets.

    Attributes:
        classes: Class names; label ``i`` means ``classes[i]``. Sorted as strings, or in numeric order
            when every label is an integer (``"2"`` before ``"10"``); see :func:`class_order`.
        train: Training samples.
        val: Validation samples.
        test: Held-out samples for the final metric.
        source: An embedded dataset name or the resolved file or folder path.
        stats: Rows skipped, by reason (every key of ``SKIP_REASONS``, zero when none).
        fingerprint: SHA-256 over the files' identity, the columns and the loading options.
    """

    classes: list[str]
    train: TextSamples
    val: TextSamples
    test: TextSamples
    source: str
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    fingerprint: str = ""

    def splits(self) -> dict[str, TextSamples]:
        """The three sets by name: ``train``, ``val``, ``test``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Sizes per split and per class, and skipped rows, JSON-ready.

        Returns:
            ``{"source", "classes", "train", "val", "test", "skipped", "skipped_by_reason",
            "per_class": {split: {class: n}}}``; ``skipped`` is the total number of skipped rows.
        """
        return split_summary(self.source, self.classes, self.splits(), skipped=sum(self.stats.values()),
                             skipped_by_reason=dict(self.stats))


def _value(raw: Any, where: str, what: str) -> str | None:
    """A value as a stripped string; ``None`` when missing, NaN or NaN-like (see ``MISSING_VALUES``)."""
    if isinstance(raw, dict | list):
        raise DataError(f"{what} at {where} is a JSON {type(raw).__name__}", f"store each {what} as a string")
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    value = str(int(raw) if isinstance(raw, float) and raw.is_integer() else raw).strip()
    return None if value.lower() in MISSING_VALUES else value


def _split_value(raw: Any, where: str, split_column: bool) -> str | None:
    """``train``/``val``/``test``; ``all`` when the data has no splits; ``None`` when missing."""
    if raw is None and not split_column:
        return "all"
    value = _value(raw, where, "split")
    if value is not None and value.lower() not in SPLIT_NAMES:
        raise DataError(f"unknown split {value!r} at {where}", f"use one of: {', '.join(SPLIT_NAMES)} (any case)")
    return None if value is None else SPLIT_NAMES[value.lower()]


def _clean(records: list[Record], strict: bool, split_column: bool, stats: dict[str, int]) -> list[Record]:
    """Normalise every value; skip (and count) rows missing a text, label or split, or raise if strict."""
    rows, first = [], ""
    for rec in records:
        text, label = _value(rec.text, rec.where, "text"), _value(rec.label, rec.where, "label")
        row = Record(rec.where, text, label, _split_value(rec.split, rec.where, split_column))
        # SKIP_REASONS starts with the reasons for a missing text, label and split, in that order
        reason = next((r for r, v in zip(SKIP_REASONS, row[1:], strict=False) if v is None), None)
        if reason is None:
            rows.append(row)
        elif strict:
            raise DataError(f"{SKIP_REASONS[reason]} at {rec.where}", "fix that row, or load without strict to skip it")
        else:
            stats[reason] += 1
            first = first or rec.where
    if first:
        counts = ", ".join(f"{n} {reason}" for reason, n in stats.items() if n)
        log.warning("skipped %d row(s) (%s), the first at %s", sum(stats.values()), counts, first)
    return rows


def _drop_rare(rows: list[Record], need: int, strict: bool, stats: dict[str, int]) -> list[Record]:
    """Drop the labels with fewer than ``need`` examples in the rows to split (all rows, or train)."""
    counts = Counter(r.label for r in rows if r.split in ("all", "train"))
    rare = {label: n for label, n in sorted(counts.items()) if n < need}
    if not rare:
        return rows
    named = ", ".join(f"{label!r} ({n} example{'s' * (n > 1)})" for label, n in rare.items())
    if strict:
        raise DataError(
            f"too few examples to stratify label {named}; each label needs at least {need}",
            "add examples or remove the label, or load without strict to drop it",
        )
    kept = [r for r in rows if r.label not in rare]
    stats["rare_label"] += len(rows) - len(kept)
    log.warning("dropped label %s: too few examples to stratify (each label needs at least %d)", named, need)
    return kept


def class_order(labels: Iterable[str]) -> list[str]:
    """The distinct labels, sorted as strings, or numerically when every one is an integer."""
    names = set(labels)
    if names and all(_INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _classes(rows: list[Record], source: str) -> list[str]:
    classes = class_order(r.label for r in rows if r.split in ("all", "train"))
    if unseen := sorted({r.label for r in rows} - set(classes)):
        raise DataError(f"label {', '.join(map(repr, unseen))} is in val or test but not in train", "add it to train")
    if len(classes) < 2:
        raise DataError(
            f"{source}: need at least 2 classes, found {repr(classes[0]) if classes else 'none'}",
            "check label_column and the warnings about skipped rows and dropped labels",
        )
    return classes


def build_text_data(
    records: list[Record], *, source: str, identity: Any, options: LoadOptions, split_column: bool = False
) -> TextData:
    """Clean records, drop labels too rare to stratify, and split them into :class:`TextData`.

    Records without a split are split stratified and seeded with the option fractions (after
    ``limit_per_class``); records tagged train/val/test keep their split, and a missing val or test
    is carved from train (see :func:`edgetl.data.splits.split_predefined`).

    Args:
        records: Rows as read.
        source: ``TextData.source``.
        identity: JSON-serialisable identity of the data (files, columns), for the fingerprint.
        options: Split and sampling options.
        split_column: Whether the split values come from a user column (a missing one skips the row).

    Raises:
        DataError: Fewer than 2 classes, no train rows, or (strict) a skipped row or rare label.
        ConfigError: ``limit_per_class`` is too small to split.
    """
    stats = dict.fromkeys(SKIP_REASONS, 0)
    rows = _clean(records, options.strict, split_column, stats)
    given = {r.split for r in rows} - {"all"}
    if given and "train" not in given:
        raise DataError(f"{source} has no train rows (splits found: {', '.join(sorted(given))})", LAYOUT_HINT)
    fractions = [f for s, f in (("val", options.val_fraction), ("test", options.test_fraction)) if s not in given]
    need, limit = min_per_class(fractions), options.limit_per_class
    if not given and limit is not None and limit < need:
        raise ConfigError(f"limit_per_class={limit} leaves too few examples to split", f"use limit_per_class >= {need}")
    rows = _drop_rare(rows, need, options.strict, stats)
    classes = _classes(rows, source)
    index = {c: i for i, c in enumerate(classes)}
    parts = {s: [r for r in rows if r.split == s] for s in ("all", *given)}
    sets = {s: TextSamples([r.text for r in p], [index[r.label] for r in p]) for s, p in parts.items()}
    if given:  # split_predefined only needs .labels and .subset(), which TextSamples has
        train, val, test = split_predefined(
            classes, sets["train"], sets.get("val"), sets.get("test"), val_fraction=options.val_fraction,
            test_fraction=options.test_fraction, seed=options.seed, limit_per_class=limit,
        )  # fmt: skip
    else:
        pool = sets["all"].subset(cap_per_class(sets["all"].labels, limit, (options.seed, 0)))
        train, val, test = (pool.subset(i) for i in stratified_split(pool.labels, fractions, options.seed))
    fingerprint = options.fingerprint({"kind": "text", "data": identity})
    return TextData(classes, train, val, test, source=source, stats=stats, fingerprint=fingerprint)


# ---------------------------------------------------------------- front end


def load_text_data(
    data: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit_per_class: int | None = None,
    strict: bool = False,
) -> TextData:
    """Load a text-classification dataset and split it into train, val and test.

    ``data`` is an embedded dataset name (``EMBEDDED_TEXT_DATASETS``, e.g. ``"rotten-tomatoes"``;
    the column options do not apply), a table file (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, each
    optionally ``.gz``/``.bz2``), a folder of split files (``train.<ext>`` and optionally
    ``val``/``valid``/``validation``/``dev`` and ``test``), or a folder of class folders of ``.txt``
    files, one example per file (``root/<class>/*.txt`` or ``root/{train,val,test}/<class>/*.txt``).

    Rows whose text, label or split value is empty or NaN-like (``""``, ``nan``, ``null``, ``None``,
    any case) are skipped and counted in ``TextData.stats``. A label with too few examples to
    stratify (fewer than 3 with both val and test carved, i.e. seen once or twice) is dropped with a
    warning. Splitting and ``limit_per_class`` follow :func:`edgetl.data.load_image_data`.

    Args:
        data: Embedded dataset name, table file or folder.
        text_column: Column (or JSON key) holding the text.
        label_column: Column (or JSON key) holding the label.
        split_column: Column holding ``train``/``val``/``validation``/``valid``/``dev``/``test``
            (any case); ``None`` splits the rows with the fractions. Table files only.
        val_fraction: Fraction of each class used for validation, in [0, 1).
        test_fraction: Fraction of each class used for test when the data has no test split.
        seed: Seed for every random choice; the same seed gives the same split.
        limit_per_class: Cap on examples per class; ``None`` uses everything.
        strict: Raise on the first skipped row or rare label instead of skipping it.

    Returns:
        The split dataset with class names, skip counts and a fingerprint of data and options.

    Raises:
        DataError: The data is missing, unreadable, malformed, or has fewer than 2 usable classes.
        ConfigError: A column is missing (the message lists those found) or an option is out of range.
    """
    options = LoadOptions(val_fraction, test_fraction, seed, limit_per_class, strict)
    if isinstance(data, str) and data in EMBEDDED_TEXT_DATASETS:
        return EMBEDDED_TEXT_DATASETS.get(data)(options)
    path = Path(data).expanduser()
    if not path.exists():
        names = ", ".join(EMBEDDED_TEXT_DATASETS.names())
        raise DataError(f"text dataset not found: {data}", f"{LAYOUT_HINT}, or an embedded name ({names})")
    path, columns = path.resolve(), Columns(text_column, label_column, split_column)
    reader = TableReader(columns)
    records = reader.folder(path) if path.is_dir() else reader.table(path)
    identity = {"files": reader.identity(path if path.is_dir() else path.parent), "columns": asdict(columns)}
    return build_text_data(
        records, source=str(path), identity=identity, options=options, split_column=split_column is not None
    )


def _rotten_tomatoes(options: LoadOptions) -> TextData:
    from edgetl.data.rotten_tomatoes import load_rotten_tomatoes  # imported here: it imports this module

    return load_rotten_tomatoes(options)


#: Embedded text datasets by name; each loader takes :class:`LoadOptions` and returns :class:`TextData`.
EMBEDDED_TEXT_DATASETS: Registry[Callable[[LoadOptions], TextData]] = Registry("embedded text dataset")
EMBEDDED_TEXT_DATASETS.add("rotten-tomatoes", _rotten_tomatoes)
