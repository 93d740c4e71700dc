"""Image-folder datasets: ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

Files are found recursively inside each class folder; hidden files and folders (names starting
with ``.``) are ignored. Every image is opened and verified with Pillow once at discovery, so a
corrupt file is reported here rather than in the middle of a training epoch.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgetl.data.samples import FileSamples, ImageData, SampleSet
from edgetl.data.splits import (
    LoadOptions,
    cap_per_class,
    check_class_sizes,
    min_per_class,
    split_predefined,
    stratified_split,
)
from edgetl.errors import ConfigError, DataError
from edgetl.runtime.preprocess import IMAGE_EXTENSIONS

log = logging.getLogger("edgetl")

#: Split folder names (lower case) and the split each one stands for.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_LAYOUT_HINT = "arrange images as <root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"


@dataclass
class _Scan:
    """Files found in one folder of class folders: per class, sorted paths."""

    folder: Path
    files: dict[str, list[Path]]


def load_folder(root: str | Path, options: LoadOptions) -> ImageData:
    """Load an image-folder dataset, with or without split folders.

    Args:
        root: Dataset folder.
        options: Split and sampling options.

    Returns:
        The split dataset; ``source`` is the resolved folder path.

    Raises:
        DataError: The folder is missing, malformed, or a class is empty or too small.
    """
    root = _resolve_root(root)
    split_dirs = _split_dirs(root)
    if split_dirs:
        scans = {split: _scan_classes(folder) for split, folder in split_dirs.items()}
    else:
        scans = {"all": _scan_classes(root)}
    _check_same_classes(scans)
    identity = _identity(root, scans)
    skipped = _drop_corrupt(scans, options.strict)
    classes = sorted(next(iter(scans.values())).files)
    if split_dirs:
        train, val, test = _predefined(scans, classes, options)
    else:
        train, val, test = _flat(scans["all"], classes, options)
    return ImageData(
        classes=classes,
        train=train,
        val=val,
        test=test,
        source=str(root),
        skipped=[str(p) for p in skipped],
        fingerprint=options.fingerprint(identity),
    )


def _resolve_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset folder not found: {path}", "check the path, or use an embedded dataset name"
        )
    if not path.is_dir():
        raise DataError(f"dataset path {path} is a file, not a folder", _LAYOUT_HINT)
    return path.resolve()


def _visible_dirs(folder: Path) -> dict[str, Path]:
    """Non-hidden sub-folders by name, sorted."""
    dirs = (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    return {p.name: p for p in sorted(dirs)}


def _split_dirs(root: Path) -> dict[str, Path]:
    """``{"train": ..., "val": ..., "test": ...}`` for the split folders present; empty when none."""
    found: dict[str, Path] = {}
    others = []
    for name, path in _visible_dirs(root).items():
        split = SPLIT_FOLDERS.get(name.lower())
        if split is None:
            others.append(name)
        elif split in found:
            raise DataError(
                f"{root} has two {split} folders: {found[split].name} and {name}", "keep only one of them"
            )
        else:
            found[split] = path
    if found and "train" not in found:
        raise DataError(
            f"{root} has split folders ({', '.join(sorted(found))}) but no train folder", _LAYOUT_HINT
        )
    if found and others:
        log.warning("ignoring folders next to the split folders in %s: %s", root, ", ".join(others))
    return {split: found[split] for split in ("train", "val", "test") if split in found}


def is_image_file(name: str) -> bool:
    """Whether a file name is a visible file with an image extension (any case)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under ``class_dir``, recursively, hidden files and folders excluded, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def _scan_classes(folder: Path) -> _Scan:
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        raise DataError(f"no class folders in {folder}", _LAYOUT_HINT)
    files = {name: _image_files(path) for name, path in class_dirs.items()}
    if not any(files.values()):
        raise DataError(
            f"no images found under {folder}",
            f"supported extensions: {', '.join(IMAGE_EXTENSIONS)} (any case)",
        )
    for name, paths in files.items():
        if not paths:
            raise DataError(
                f"class folder {class_dirs[name]} has no images", "add images to it or remove the folder"
            )
    if len(files) < 2:
        raise DataError(
            f"need at least 2 classes, found only {next(iter(files))!r} in {folder}", "add a folder per class"
        )
    return _Scan(folder, files)


def _check_same_classes(scans: dict[str, _Scan]) -> None:
    train = set(next(iter(scans.values())).files)
    for split, scan in scans.items():
        missing, extra = sorted(train - set(scan.files)), sorted(set(scan.files) - train)
        if missing or extra:
            parts = [f"missing in {split}: {', '.join(missing)}"] if missing else []
            parts += [f"only in {split}: {', '.join(extra)}"] if extra else []
            raise DataError(
                f"class folders differ between train and {split} ({'; '.join(parts)})",
                "every split folder needs the same class folders",
            )


def _identity(root: Path, scans: dict[str, _Scan]) -> list[tuple[str, int, int]]:
    """Sorted ``(relative path, size, mtime_ns)`` of every image file found."""
    rows = []
    for scan in scans.values():
        for paths in scan.files.values():
            for path in paths:
                st = path.stat()
                rows.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(rows)


def check_image(path: Path) -> str | None:
    """Open and verify an image file without decoding it; the reason it is unusable, or ``None``."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
        return f"{type(exc).__name__}: {exc}"
    return None


def _drop_corrupt(scans: dict[str, _Scan], strict: bool) -> list[Path]:
    """Verify every file, remove the corrupt ones from ``scans`` and return them (or raise if strict)."""
    paths = sorted(p for scan in scans.values() for files in scan.files.values() for p in files)
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4)) as pool:
        reasons = dict(zip(paths, pool.map(check_image, paths), strict=True))
    bad = [p for p in paths if reasons[p] is not None]
    if bad and strict:
        raise DataError(
            f"corrupt image {bad[0]} ({reasons[bad[0]]})",
            "delete or re-save it, or load without strict to skip corrupt files",
        )
    if bad:
        log.warning("skipped %d corrupt or unreadable image file(s), e.g. %s", len(bad), bad[0])
    bad_set = set(bad)
    for scan in scans.values():
        for name, files in scan.files.items():
            kept = [p for p in files if p not in bad_set]
            if not kept:
                raise DataError(
                    f"class folder {scan.folder / name} has no readable images "
                    f"({len(files)} corrupt file(s) skipped)",
                    "replace the corrupt files",
                )
            scan.files[name] = kept
    return bad


def _samples(scan: _Scan, classes: list[str]) -> FileSamples:
    paths = [p for name in classes for p in scan.files[name]]
    labels = np.repeat(np.arange(len(classes)), [len(scan.files[name]) for name in classes])
    return FileSamples(paths, labels)


def _flat(scan: _Scan, classes: list[str], options: LoadOptions) -> tuple[SampleSet, ...]:
    fractions = (options.val_fraction, options.test_fraction)
    limit, need = options.limit_per_class, min_per_class(fractions)
    if limit is not None and limit < need:
        raise ConfigError(
            f"limit_per_class={limit} leaves too few images to split; need at least {need}",
            f"use limit_per_class >= {need}",
        )
    samples = _samples(scan, classes)
    samples = samples.subset(cap_per_class(samples.labels, limit, (options.seed, 0)))
    check_class_sizes(samples.labels, classes, fractions)
    return tuple(samples.subset(idx) for idx in stratified_split(samples.labels, fractions, options.seed))


def _predefined(scans: dict[str, _Scan], classes: list[str], options: LoadOptions) -> tuple[SampleSet, ...]:
    given = {split: _samples(scan, classes) for split, scan in scans.items()}
    return split_predefined(
        classes,
        given["train"],
        given.get("val"),
        given.get("test"),
        val_fraction=options.val_fraction,
        test_fraction=options.test_fraction,
        seed=options.seed,
        limit_per_class=options.limit_per_class,
    )
