"""Calibration sets: a recipe (YAML) picks samples from a dataset split; ``materialize`` writes them once.

A :class:`CalibrationRecipe` says which split, how many samples, whether to stratify per class and the seed.
It never declares preprocessing: a :class:`CalibrationSet` stores the raw samples (PNG images at their
original resolution, or texts) and :meth:`CalibrationSet.batches` preprocesses them per the model's
:class:`~edgetl.spec.ModelSpec` with :mod:`edgetl.runtime.preprocess` and :mod:`edgetl.runtime.text`, exactly
as verification and the runtime do. Every quantization backend reads the same materialised set.

Folder layout: ``calibration.json`` (recipe, classes, source, counts, the spec it was made for, fingerprint),
``samples.jsonl`` (one ``{"file", "label"}`` or ``{"text", "label"}`` line per sample, labels by name) and,
for images, ``images/00000.png``... Samples are stored interleaved by class, so any prefix (``limit``) stays
balanced. Only numpy, Pillow and yaml are imported here: no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from edgetl.errors import ConfigError, DataError, EdgetlError, OutputExistsError
from edgetl.fsutil import read_json, sha256_file, sha256_json, staged_dir, write_json, write_text
from edgetl.progress import Ticker
from edgetl.runtime.preprocess import normalize, open_image, resize
from edgetl.runtime.text import tokenize
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    from PIL import Image
    from tokenizers import Tokenizer

    from edgetl.config import FinetuneConfig
    from edgetl.data import ImageData, TextData
    from edgetl.runfolder import Run
    from edgetl.runtime.engines import Inputs

log = logging.getLogger("edgetl")

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
META_FILE = "calibration.json"
SAMPLES_FILE = "samples.jsonl"
IMAGES_DIR = "images"
MAKE_HINT = "make one with: edgetl calibrate --data DATA --out DIR (or --run RUN)"
REMAKE_HINT = "make it again with: edgetl calibrate --data DATA --out DIR --overwrite (or --run RUN)"
FOR_MODEL_HINT = "make one for this model with: edgetl calibrate --run RUN --out DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: What each part of the cache key is called in messages.
_KEY_NAMES = {"recipe": "recipe", "data_fingerprint": "dataset", "spec_for": "model spec", "kind": "kind of data"}


# ---------------------------------------------------------------- recipe


@dataclass(frozen=True)
class CalibrationRecipe:
    """How to pick a calibration set from a dataset; validated on construction.

    Attributes:
        name: Short name, used in default output folders (letters, digits, ``.``, ``_``, ``-``).
        split: ``train``, ``val`` or ``test`` (test works but leaks the test set into the model; warned).
        samples: How many samples to pick (all of the split when it holds fewer; warned).
        stratified: Pick as equal a number per class as the data allows, then fill; else uniformly at random.
        seed: Seed of the sampling.
    """

    name: str = "default"
    split: str = "train"
    samples: int = 300
    stratified: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), type(f.default))
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"recipe name {self.name!r} is not a plain name", "use letters, digits, '.', '_', '-'")
        if self.split not in SPLITS:
            raise ConfigError(f"recipe key 'split' must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.samples < 1 or self.seed < 0:
            raise ConfigError(f"recipe needs samples >= 1 and seed >= 0, got {self.samples} and {self.seed}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CalibrationRecipe:
        """Build from a mapping; unknown keys and wrong types raise :class:`ConfigError` naming the key."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"a calibration recipe must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(map(str, data)) - set(known)):
            raise ConfigError(
                f"unknown key(s) in calibration recipe: {', '.join(unknown)}", f"known keys: {', '.join(known)}"
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CalibrationRecipe:
        """Read a recipe YAML file (a flat mapping of the fields; missing keys keep their defaults).

        Raises:
            ConfigError: The file is missing or not YAML, or a key is unknown or has the wrong type.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"calibration recipe not found: {path}", "see calibration/default.yaml")
        try:
            return cls.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", exc.hint) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and YAML-ready dict."""
        return asdict(self)

    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`to_dict`."""
        return sha256_json(self.to_dict())

    def with_(self, **changes: Any) -> CalibrationRecipe:
        """A copy with the non-None ``changes`` applied (CLI flags over a recipe file)."""
        return CalibrationRecipe.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def _check_type(key: str, value: Any, expected: type) -> None:
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return
    names = {str: "a string", int: "an integer", bool: "true or false"}
    raise ConfigError(f"recipe key {key!r} must be {names[expected]}, got {value!r}")


# ---------------------------------------------------------------- sampling (pure functions)


def class_quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many samples to take per class: as equal as the counts allow, the rest to random classes.

    Every class gets ``n // k`` (or all of a smaller class), then what is left is shared again among the
    classes that still have samples; a remainder smaller than their number goes one each to classes drawn
    at random.
    """
    take = np.zeros_like(counts)
    left = min(n, int(counts.sum()))
    while left > 0:
        open_ = np.flatnonzero(take < counts)
        share = left // len(open_)
        if share == 0:
            take[rng.choice(open_, left, replace=False)] += 1
            break
        add = np.minimum(share, counts[open_] - take[open_])
        take[open_] += add
        left -= int(add.sum())
    return take


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` positions, per class as equal as the data allows (see :func:`class_quotas`).

    Returns:
        Positions into ``labels`` sorted by class, then position; all of them when ``n >= len(labels)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = class_quotas(counts, n, rng)
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quotas, strict=True)]
    return _by_class(labels, np.concatenate([np.zeros(0, np.int64), *picked]))


def random_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` positions uniformly at random; sorted by class, then position."""
    labels = np.asarray(labels, dtype=np.int64)
    picked = np.random.default_rng(seed).choice(len(labels), min(n, len(labels)), replace=False)
    return _by_class(labels, picked)


def _by_class(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    return idx[np.lexsort((idx, labels[idx]))]


def interleave_by_class(labels: np.ndarray) -> np.ndarray:
    """An order taking the first sample of every class, then the second of every class, and so on.

    Stable: within a class the given order is kept, so any prefix of the result is as balanced as possible.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        mask = labels == c
        rank[mask] = np.arange(mask.sum())
    return np.lexsort((labels, rank))


def select_indices(labels: np.ndarray, recipe: CalibrationRecipe) -> np.ndarray:
    """The recipe's pick from a split with these labels, stored order (interleaved by class)."""
    pick = (stratified_indices if recipe.stratified else random_indices)(labels, recipe.samples, recipe.seed)
    return pick[interleave_by_class(np.asarray(labels)[pick])]


# ---------------------------------------------------------------- the materialised set


@dataclass(eq=False)
class CalibrationSet:
    """A materialised calibration set, loaded from its folder by :func:`load_calibration`.

    Attributes:
        path: The folder.
        recipe: The recipe it was made with.
        kind: ``image`` or ``text``.
        classes: Class names; label ``i`` means ``classes[i]``.
        labels: Class index per sample, int64 ``(N,)``.
        spec_for: ``ModelSpec.to_dict()`` of the run it was made for, or None (made from a dataset).
        fingerprint: SHA-256 over the recipe fingerprint, classes, labels and sample contents.
        files: Image sets: one PNG per sample.
        texts: Text sets: one string per sample.
        cached: True when :func:`materialize` found it up to date and wrote nothing.
    """

    path: Path
    recipe: CalibrationRecipe
    kind: str
    classes: tuple[str, ...]
    labels: np.ndarray
    spec_for: dict[str, Any] | None
    fingerprint: str
    files: list[Path] | None = None
    texts: list[str] | None = None
    cached: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` as an RGB PIL image (image sets)."""
        if self.files is None:
            raise DataError(f"calibration set {self.path} holds texts, not images", "use .texts")
        return open_image(self.files[i])

    def counts_per_class(self) -> dict[str, int]:
        """Number of samples per class name."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise :class:`DataError` unless this set fits a model with ``spec``.

        The kind (image/text) and the labels (same names, same order) must match; when the set was made for
        a run, that run's input size, mean and std (images) or max length (text) must match too. The layout
        is not compared: :meth:`batches` writes whichever layout ``spec`` asks for (an NHWC TFLite bundle of
        an NCHW run reads the run's set).
        """
        for problem in (self._kind_problem(spec), self._label_problem(spec), self._spec_for_problem(spec)):
            if problem:
                raise DataError(problem, FOR_MODEL_HINT)

    def _kind_problem(self, spec: ModelSpec) -> str:
        model = "text" if spec.is_text else "image"
        return "" if model == self.kind else f"calibration set {self.path} holds {self.kind}s, the model takes {model}s"

    def _label_problem(self, spec: ModelSpec) -> str:
        if self.classes == spec.labels:
            return ""
        ours, theirs = set(self.classes), set(spec.labels)
        if ours == theirs:
            order = f"{list(self.classes)} vs {list(spec.labels)}"
            return f"calibration set labels are in another order than the model's: {order}"
        only_set, only_model = sorted(ours - theirs), sorted(theirs - ours)
        return (
            f"calibration set labels differ from the model's: only in the set: {', '.join(only_set) or '-'}; "
            f"only in the model: {', '.join(only_model) or '-'}"
        )

    def _spec_for_problem(self, spec: ModelSpec) -> str:
        made = self.spec_for
        if not made:
            return ""
        if spec.is_text:
            if made.get("max_length") != spec.max_length:
                return (
                    f"calibration set was made for a model with max_length {made.get('max_length')}, "
                    f"this one takes {spec.max_length}"
                )
            return ""
        size = tuple(made.get("input_size") or ())
        if size != spec.input_size:
            return (
                f"calibration set was made for a model with {'x'.join(map(str, size))} inputs, this one takes "
                f"{spec.input_size[0]}x{spec.input_size[1]}"
            )
        for key in ("mean", "std"):
            if not np.allclose(np.asarray(made.get(key), np.float64), getattr(spec, key)):
                now = list(getattr(spec, key))
                return f"calibration set was made for a model with {key} {made.get(key)}, this one has {now}"
        return ""

    def batches(
        self, spec: ModelSpec, *, batch_size: int = 32, tokenizer: Tokenizer | None = None, limit: int | None = None
    ) -> list[Inputs]:
        """Model inputs per ``spec``, batch by batch: what every quantization backend calibrates on.

        Args:
            spec: The model's input contract (checked with :meth:`check_spec`).
            batch_size: Samples per batch.
            tokenizer: Text sets: the model's tokenizer (:func:`edgetl.runtime.text.load_tokenizer`).
            limit: Use at most this many samples (a prefix, balanced across classes); None for all.

        Returns:
            float32 image batches in the spec's layout, or token arrays by input name (int64).

        Raises:
            DataError: The set does not fit the spec.
            ConfigError: A text set without tokenizer, or ``batch_size``/``limit`` below 1.
        """
        return [
            inputs for inputs, _ in self.labelled_batches(spec, batch_size=batch_size, tokenizer=tokenizer, limit=limit)
        ]

    def labelled_batches(
        self, spec: ModelSpec, *, batch_size: int = 32, tokenizer: Tokenizer | None = None, limit: int | None = None
    ) -> list[tuple[Inputs, np.ndarray]]:
        """:meth:`batches` paired with each batch's int64 labels."""
        self.check_spec(spec)
        if spec.is_text and tokenizer is None:
            raise ConfigError(
                "calibrating a text model needs its tokenizer",
                "pass tokenizer=load_tokenizer(<run or bundle>/tokenizer) from edgetl.runtime.text",
            )
        chunks = _chunks(len(self), batch_size, limit)
        return [(self._inputs(spec, rows, tokenizer), self.labels[rows]) for rows in chunks]

    def _inputs(self, spec: ModelSpec, rows: slice, tokenizer: Tokenizer | None) -> Inputs:
        if spec.is_text:
            return tokenize(tokenizer, (self.texts or [])[rows], spec.max_length or 0)[0]
        return np.stack([normalize(resize(self.image(i), spec), spec) for i in range(len(self))[rows]])


def _chunks(n: int, batch_size: int, limit: int | None) -> Iterator[slice]:
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ConfigError(f"batch_size and limit must be >= 1, got {batch_size} and {limit}")
    n = n if limit is None else min(n, limit)
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


# ---------------------------------------------------------------- loading


def load_calibration(path: str | Path) -> CalibrationSet:
    """Open a folder written by :func:`materialize`, checking every file against the recorded fingerprint.

    Raises:
        DataError: The folder, ``calibration.json``, ``samples.jsonl`` or an image is missing, malformed or
            changed since it was written (the hint says how to make a set).
    """
    path = Path(path)
    meta = _read_meta(path)
    try:
        recipe = CalibrationRecipe.from_dict(meta["recipe"])
        classes = tuple(str(c) for c in meta["classes"])
        kind, recorded, spec_for = str(meta["kind"]), str(meta["fingerprint"]), meta["spec_for"]
    except (KeyError, TypeError, ValueError, EdgetlError) as exc:
        raise DataError(f"{path / META_FILE} is malformed ({_reason(exc)})", REMAKE_HINT) from None
    if kind not in ("image", "text") or (spec_for is not None and not isinstance(spec_for, dict)):
        raise DataError(f"{path / META_FILE} is malformed (kind {kind!r})", REMAKE_HINT)
    labels, content, digests = _read_samples(path, kind, classes)
    fingerprint = _set_fingerprint(recipe, kind, classes, labels, digests)
    if fingerprint != recorded:
        raise DataError(f"calibration set {path} changed since it was made (fingerprint differs)", REMAKE_HINT)
    files = content if kind == "image" else None
    texts = content if kind == "text" else None
    return CalibrationSet(path, recipe, kind, classes, labels, spec_for, fingerprint, files=files, texts=texts)


def _reason(exc: Exception) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise DataError(f"calibration set not found: {path}", MAKE_HINT)
    if not (path / META_FILE).is_file():
        raise DataError(f"{path} is not a calibration set (no {META_FILE})", MAKE_HINT)
    try:
        meta = read_json(path / META_FILE)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / META_FILE} is not valid JSON: {exc}", REMAKE_HINT) from None
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        raise DataError(f"{path / META_FILE} has schema_version {version}, expected {SCHEMA_VERSION}", REMAKE_HINT)
    return meta


def _read_samples(path: Path, kind: str, classes: tuple[str, ...]) -> tuple[np.ndarray, list, list[str]]:
    """Labels, contents (image paths or texts) and per-sample digests from ``samples.jsonl``."""
    file, index = path / SAMPLES_FILE, {c: i for i, c in enumerate(classes)}
    if not file.is_file():
        raise DataError(f"calibration set {path} has no {SAMPLES_FILE}", REMAKE_HINT)
    labels, content, digests = [], [], []
    for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            labels.append(index[row["label"]])
            item = path / row["file"] if kind == "image" else str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{file} line {line_no} is malformed ({_reason(exc)})", REMAKE_HINT) from None
        if kind == "image" and not item.is_file():
            raise DataError(f"calibration set {path} is missing {row['file']}", REMAKE_HINT)
        content.append(item)
        digests.append(sha256_file(item) if kind == "image" else _sha256_text(item))
    if not labels:
        raise DataError(f"calibration set {path} holds no samples", REMAKE_HINT)
    return np.asarray(labels, np.int64), content, digests


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _set_fingerprint(
    recipe: CalibrationRecipe, kind: str, classes: tuple[str, ...], labels: np.ndarray, digests: list[str]
) -> str:
    samples = [[int(label), digest] for label, digest in zip(labels, digests, strict=True)]
    return sha256_json({"recipe": recipe.fingerprint(), "kind": kind, "classes": list(classes), "samples": samples})


# ---------------------------------------------------------------- writing


def materialize(
    source: Any,
    recipe: CalibrationRecipe,
    out: str | Path,
    *,
    classes: list[str] | tuple[str, ...],
    spec: ModelSpec | None = None,
    source_name: str = "",
    data_fingerprint: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> CalibrationSet:
    """Pick the recipe's samples from ``source`` and write them to ``out`` (whole or not at all), once.

    An ``out`` already holding a set made with the same recipe, data fingerprint and spec is returned as is
    (``cached=True``), without rewriting anything.

    Args:
        source: The recipe's split of the dataset: labelled images (``len``, ``labels``, ``image(i)``, e.g.
            ``ImageData.train``) or labelled texts (``texts``, ``labels``, e.g. ``TextData.train``).
        recipe: Split (for the record and warnings), number of samples, stratification, seed.
        out: Folder to write.
        classes: Class names of the dataset; label ``i`` means ``classes[i]``.
        spec: The model the set is made for (recorded as ``spec_for``, checked by :meth:`CalibrationSet.check_spec`).
        source_name: Dataset name or path, for the record.
        data_fingerprint: The dataset's fingerprint (``ImageData.fingerprint``), part of the cache key.
        overwrite: Replace an ``out`` that holds something else.
        progress: Show a progress bar while writing images.

    Returns:
        The set, loaded back from ``out``.

    Raises:
        DataError: The split is empty, a label is out of range, or ``classes`` differ from ``spec``'s labels.
        OutputExistsError: ``out`` holds another set or other files, without ``overwrite``.
    """
    out, classes = Path(out), tuple(str(c) for c in classes)
    kind = "text" if hasattr(source, "texts") else "image"
    labels = _source_labels(source, classes, recipe.split, source_name)
    spec_for = _spec_for(spec, kind, classes)
    key = {"recipe": recipe.fingerprint(), "data_fingerprint": data_fingerprint, "spec_for": spec_for, "kind": kind}
    if (found := _cached(out, key, overwrite)) is not None:
        return found
    idx = _pick(labels, recipe, source_name)
    with staged_dir(out, overwrite=overwrite) as tmp:
        writer = _write_texts if kind == "text" else _write_images
        rows, digests = writer(source, idx, classes, tmp, progress)
        write_text(tmp / SAMPLES_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        picked = labels[idx]
        meta = {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "recipe": recipe.to_dict(),
            "classes": list(classes),
            "source": {"name": source_name, "split": recipe.split, "data_fingerprint": data_fingerprint},
            "samples": len(idx),
            "counts_per_class": _counts(picked, classes),
            "spec_for": spec_for,
            "fingerprint": _set_fingerprint(recipe, kind, classes, picked, digests),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(tmp / META_FILE, meta)
    log.info("calibration set of %d %ss written to %s", len(idx), kind, out)
    return load_calibration(out)


def _source_labels(source: Any, classes: tuple[str, ...], split: str, name: str) -> np.ndarray:
    labels = np.asarray(source.labels, dtype=np.int64).reshape(-1)
    where = f"the {split} split of {name or 'the dataset'}"
    if labels.shape[0] == 0:
        raise DataError(f"{where} holds no samples", "calibrate on another split (--split train)")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(
            f"{where} has label {int(labels.max())} but only {len(classes)} classes",
            "pass the dataset's class names as classes",
        )
    return labels


def _spec_for(spec: ModelSpec | None, kind: str, classes: tuple[str, ...]) -> dict[str, Any] | None:
    if spec is None:
        return None
    if ("text" if spec.is_text else "image") != kind:
        raise DataError(f"the data holds {kind}s but the model ({spec.task}) takes other inputs", FOR_MODEL_HINT)
    if spec.labels != classes:
        raise DataError(
            f"the dataset's classes {list(classes)} differ from the model's labels {list(spec.labels)}",
            "calibrate on the data the model was trained on",
        )
    return spec.to_dict()


def _cached(out: Path, key: dict[str, Any], overwrite: bool) -> CalibrationSet | None:
    """The set in ``out`` when it was made the same way; raise when ``out`` holds another one (no overwrite)."""
    try:
        meta = read_json(out / META_FILE)
        made = {
            "recipe": CalibrationRecipe.from_dict(meta["recipe"]).fingerprint(),
            "kind": meta["kind"],
            "data_fingerprint": meta["source"]["data_fingerprint"],
            "spec_for": meta["spec_for"],
        }
    except (OSError, ValueError, KeyError, TypeError, EdgetlError):
        return None  # nothing readable there: staged_dir's check decides
    if differs := [_KEY_NAMES[name] for name in key if made[name] != key[name]]:
        if overwrite:
            return None
        raise OutputExistsError(
            f"{out} holds a calibration set made with another {', '.join(differs)}",
            "pass --overwrite to replace it, or choose another --out",
        )
    try:
        found = load_calibration(out)
    except DataError as exc:
        if overwrite:
            return None
        raise DataError(exc.message, f"pass --overwrite to make it again ({exc.hint})") from None
    log.info("calibration set up to date: %s", out)
    found.cached = True
    return found


def _pick(labels: np.ndarray, recipe: CalibrationRecipe, name: str) -> np.ndarray:
    if recipe.split == "test":
        log.warning("calibrating on the test split leaks it into the quantized model; prefer train or val")
    if len(labels) < recipe.samples:
        log.warning(
            "the %s split of %s holds %d samples, fewer than the %d asked: using all of them",
            recipe.split,
            name or "the dataset",
            len(labels),
            recipe.samples,
        )
    return select_indices(labels, recipe)


def _counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts, strict=True)}


def _write_images(
    source: Any, idx: np.ndarray, classes: tuple[str, ...], folder: Path, progress: bool
) -> tuple[list[dict[str, str]], list[str]]:
    (folder / IMAGES_DIR).mkdir()
    rows, digests = [], []
    with Ticker("calibration images", total=len(idx), enabled=progress) as ticker:
        for n, i in enumerate(idx):
            name = f"{IMAGES_DIR}/{n:05d}.png"
            source.image(int(i)).convert("RGB").save(folder / name, format="PNG")
            rows.append({"file": name, "label": classes[int(source.labels[i])]})
            digests.append(sha256_file(folder / name))
            ticker.advance()
    return rows, digests


def _write_texts(
    source: Any, idx: np.ndarray, classes: tuple[str, ...], folder: Path, progress: bool
) -> tuple[list[dict[str, str]], list[str]]:
    rows = [{"text": str(source.texts[i]), "label": classes[int(source.labels[i])]} for i in idx]
    return rows, [_sha256_text(row["text"]) for row in rows]


# ---------------------------------------------------------------- from a dataset or a run


def load_dataset(config: FinetuneConfig) -> ImageData | TextData:
    """The dataset a finetune config trains on, split the same way (as ``Task.load_data``, without torch)."""
    from edgetl.data import load_image_data, load_text_data

    d, seed = config.data, config.train.seed
    if d.task == "text":
        return load_text_data(
            d.data or "",
            text_column=d.text_column,
            label_column=d.label_column,
            split_column=d.split_column,
            val_fraction=d.val_fraction,
            test_fraction=d.test_fraction,
            seed=seed,
            limit_per_class=d.limit_per_class,
            strict=d.strict,
        )
    return load_image_data(
        d.data or "",
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=seed,
        limit_per_class=d.limit_per_class,
        strict=d.strict,
    )


def calibration_for_data(
    config: FinetuneConfig, recipe: CalibrationRecipe, out: str | Path, **kw: Any
) -> CalibrationSet:
    """Load the dataset of ``config`` (see :func:`load_dataset`) and materialise the recipe's set from it.

    ``kw`` goes to :func:`materialize` (``spec``, ``overwrite``, ``progress``).
    """
    data = load_dataset(config)
    return materialize(
        data.splits()[recipe.split],
        recipe,
        out,
        classes=data.classes,
        source_name=str(config.data.data),
        data_fingerprint=data.fingerprint,
        **kw,
    )


def calibration_for_run(
    run: Run | str | Path, recipe: CalibrationRecipe, out: str | Path | None = None, **kw: Any
) -> CalibrationSet:
    """The recipe's set from the dataset a run was trained on, recorded as made for the run's spec.

    Args:
        run: A :class:`~edgetl.runfolder.Run` or its folder.
        recipe: The recipe.
        out: Folder to write; default ``<run>/calibration/<first 12 hex digits of the recipe fingerprint>``.
        **kw: ``overwrite``, ``progress`` (see :func:`materialize`).
    """
    from edgetl.runfolder import Run, load_run

    run = run if isinstance(run, Run) else load_run(run)
    out = run.path / "calibration" / recipe.fingerprint()[:12] if out is None else out
    return calibration_for_data(run.config, recipe, out, spec=run.spec, **kw)
