"""Reading text-classification files: CSV/TSV/JSONL tables (optionally .gz/.bz2), split files, class folders.

Files are decoded as UTF-8 (a byte-order mark is allowed) with the standard library's ``csv`` and ``json``;
every problem is reported with its file and 1-based line.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edgetl.data.folder import SPLIT_FOLDERS
from edgetl.errors import ConfigError, DataError

#: Table file extensions (lower case) and their format; each may also end in a compression suffix.
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {".gz": gzip.decompress, ".bz2": bz2.decompress}
#: Split names (lower case) accepted in a split column and as split file or folder names.
SPLIT_NAMES = {**SPLIT_FOLDERS, "dev": "val"}
SUPPORTED_FORMATS = ".csv, .tsv, .jsonl, .ndjson, each optionally .gz or .bz2"
LAYOUT_HINT = "give a .csv/.tsv/.jsonl file, a folder of train/val/test files, or <root>/<class>/<example>.txt"


@dataclass(frozen=True)
class Columns:
    """The table columns (or JSON keys) holding the text, the label and, optionally, the split."""

    text: str = "text"
    label: str = "label"
    split: str | None = None

    def names(self) -> list[str]:
        """The column names to read: text, label, then split when set."""
        return [c for c in (self.text, self.label, self.split) if c is not None]

    def check(self, found: Iterable[str], path: Path) -> None:
        """Raise :class:`ConfigError` listing the columns found when a wanted one is missing."""
        found = list(found)
        missing = [c for c in self.names() if c not in found]
        if missing:
            raise ConfigError(
                f"{path.name}: column {', '.join(map(repr, missing))} not found; "
                f"columns found: {', '.join(map(repr, found)) or 'none'}",
                "pass text_column= / label_column= / split_column= naming the right columns",
            )


class Record(NamedTuple):
    """One row: where it is (for messages), and its text, label and split values."""

    where: str
    text: Any
    label: Any
    split: Any = None


# ---------------------------------------------------------------- reading files


def table_format(path: Path) -> tuple[str, str] | None:
    """``(format, full suffix)`` of a table file name, e.g. ``("csv", ".csv.gz")``; ``None`` if unsupported."""
    name = path.name.lower()
    for ext, fmt in TABLE_FORMATS.items():
        for suffix in (ext, *(ext + c for c in COMPRESSIONS)):
            if name.endswith(suffix):
                return fmt, suffix
    return None


def decode_utf8(raw: bytes, path: Path) -> str:
    """Decode UTF-8 (a BOM is dropped); a bad byte raises :class:`DataError` naming its 1-based line."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            f"re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed-{path.name}",
        ) from None


def _read_text(path: Path, suffix: str) -> str:
    decompress = next((fn for comp, fn in COMPRESSIONS.items() if suffix.endswith(comp)), None)
    try:
        raw = path.read_bytes()
        raw = decompress(raw) if decompress else raw
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}", "check that the file is complete and not corrupt") from None
    return decode_utf8(raw, path)


def _parse_delimited(text: str, path: Path, columns: Columns, delimiter: str) -> list[Record]:
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in next((row for row in reader if row), [])]
    columns.check(header, path)
    positions = [header.index(name) for name in columns.names()]
    records, start = [], reader.line_num + 1
    try:
        for fields in reader:
            if fields:
                values = [fields[i] if i < len(fields) else None for i in positions]
                records.append(Record(f"{path.name} line {start}", *values))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: line {start} is malformed ({exc})", "check the quoting on that line") from None
    return records


def _parse_jsonl(text: str, path: Path, columns: Columns) -> list[Record]:
    records, keys = [], {}
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg})", "write one object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n} is a JSON {type(obj).__name__}", "write one JSON object per line")
        keys.update(dict.fromkeys(obj))
        records.append(Record(f"{path.name} line {n}", *(obj.get(name) for name in columns.names())))
    columns.check(keys, path)
    return records


def read_table(path: Path, columns: Columns) -> list[Record]:
    """Read the wanted columns of every row of a CSV, TSV or JSONL file (optionally compressed).

    Raises:
        DataError: Unsupported extension, undecodable or malformed file, or no rows.
        ConfigError: A wanted column is missing (the message lists the columns found).
    """
    found = table_format(path)
    if found is None:
        raise DataError(f"unsupported text data file {path.name}", f"use one of: {SUPPORTED_FORMATS}")
    text = _read_text(path, found[1])
    if not text.strip():
        raise DataError(f"{path} is empty", "add a header row and at least 3 examples per class")
    if found[0] == "jsonl":
        records = _parse_jsonl(text, path, columns)
    else:
        records = _parse_delimited(text, path, columns, "\t" if found[0] == "tsv" else ",")
    if not records:
        raise DataError(f"{path} has no data rows", "add at least 3 examples per class")
    return records


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _by_split(entries: dict[str, Path], root: Path, what: str) -> dict[str, Path]:
    """``{split: path}`` for the entries whose name is a split name (``train``, ``val``, ...)."""
    found: dict[str, Path] = {}
    for name, path in entries.items():
        split = SPLIT_NAMES.get(name.lower())
        if split in found:
            raise DataError(f"{root} has two {split} {what}s: {found[split].name}, {path.name}", "keep only one")
        if split is not None:
            found[split] = path
    if found and "train" not in found:
        raise DataError(f"{root} has {what}s for {', '.join(sorted(found))} but none for train", LAYOUT_HINT)
    return found


@dataclass
class TableReader:
    """Reads records from a file or folder and keeps the list of files read, for the fingerprint."""

    columns: Columns
    files: list[Path] = field(default_factory=list)

    def table(self, path: Path, split: str | None = None) -> list[Record]:
        self.files.append(path)
        records = read_table(path, self.columns)
        return records if split is None else [r._replace(split=split) for r in records]

    def folder(self, root: Path) -> list[Record]:
        if self.columns.split is not None:
            raise ConfigError("split_column applies to a single table file, not a folder", "leave it unset")
        tables = {p.name[: -len(f[1])]: p for p in _visible(root) if p.is_file() and (f := table_format(p))}
        if split_files := _by_split(tables, root, "file"):
            return [r for split, path in split_files.items() for r in self.table(path, split)]
        if split_dirs := _by_split({p.name: p for p in _visible(root) if p.is_dir()}, root, "folder"):
            return [r for split, path in split_dirs.items() for r in self.class_dirs(path, root, split)]
        return self.class_dirs(root, root, None)

    def class_dirs(self, folder: Path, root: Path, split: str | None) -> list[Record]:
        dirs = [p for p in _visible(folder) if p.is_dir()]
        if not dirs:
            raise DataError(f"no split files or class folders in {folder}", LAYOUT_HINT)
        records = []
        for d in dirs:
            paths = [p for p in sorted(d.rglob("*")) if p.suffix.lower() == ".txt" and p.is_file()]
            paths = [p for p in paths if not any(s.startswith(".") for s in p.relative_to(d).parts)]
            if not paths:
                raise DataError(f"class folder {d} has no .txt files", "add one .txt file per example, or remove it")
            self.files.extend(paths)
            records += [Record(p.relative_to(root).as_posix(), decode_utf8(p.read_bytes(), p), d.name, split)
                        for p in paths]
        return records

    def identity(self, root: Path) -> list[tuple[str, int, int]]:
        """Sorted ``(path relative to root, size, mtime_ns)`` of every file read."""
        stats = [(p.relative_to(root).as_posix(), p.stat()) for p in self.files]
        return sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats)


# ---------------------------------------------------------------- building the dataset
