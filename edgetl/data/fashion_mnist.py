"""Fashion-MNIST, the embedded image dataset, read from the IDX files of the Debian package.

``sudo apt-get install dataset-fashion-mnist`` puts the four ``*-ubyte.gz`` files in
``/usr/share/datasets/fashion-mnist/``; the ``EDGETL_FASHION_MNIST_DIR`` environment variable points
elsewhere (plain, un-gzipped IDX files work too). Images stay uint8 arrays in memory.
"""

from __future__ import annotations

import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgetl.data.samples import ArraySamples, ImageData
from edgetl.data.splits import LoadOptions, split_predefined
from edgetl.errors import DataError

NAME = "fashion-mnist"
ENV_VAR = "EDGETL_FASHION_MNIST_DIR"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_INSTALL_HINT = f"sudo apt-get install dataset-fashion-mnist, or set {ENV_VAR} to a folder with the IDX files"
# IDX type codes (third magic byte) and their big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def fashion_mnist_dir() -> Path:
    """The folder holding the IDX files: ``$EDGETL_FASHION_MNIST_DIR`` or the Debian package's."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def find_file(folder: Path, stem: str) -> Path:
    """``stem.gz`` or ``stem`` in ``folder``; :class:`DataError` with the install hint when neither exists."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"Fashion-MNIST file {stem}.gz not found in {folder}", _INSTALL_HINT)


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    Args:
        path: ``.gz`` or plain IDX file.
        ndim: Expected number of dimensions; ``None`` accepts any.

    Raises:
        DataError: The file is unreadable, has a bad magic number, or its size does not match its header.
    """
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}", _INSTALL_HINT) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})", _INSTALL_HINT)
    dims_found, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    if ndim is not None and dims_found != ndim:
        raise DataError(f"{path} has {dims_found} dimensions, expected {ndim}", _INSTALL_HINT)
    header = 4 + 4 * dims_found
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=dims_found, offset=4))
    if len(data) - header != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated or padded: header says shape {shape}", _INSTALL_HINT)
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_split(folder: Path, split: str) -> ArraySamples:
    """The official ``train`` or ``test`` split as :class:`ArraySamples`."""
    images_stem, labels_stem = FILES[split]
    with ThreadPoolExecutor(max_workers=2) as pool:
        images_job = pool.submit(read_idx, find_file(folder, images_stem), 3)
        labels = read_idx(find_file(folder, labels_stem), 1)
        images = images_job.result()
    if len(images) != len(labels) or (labels.size and labels.max() >= len(CLASSES)):
        raise DataError(
            f"Fashion-MNIST {split} files in {folder} do not match (images vs labels)", _INSTALL_HINT
        )
    return ArraySamples(images, labels.astype(np.int64))


def _identity(folder: Path) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of the four IDX files."""
    paths = [find_file(folder, stem) for stems in FILES.values() for stem in stems]
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def load_fashion_mnist(options: LoadOptions) -> ImageData:
    """Load Fashion-MNIST with its official train/test split and val carved from train.

    ``options.test_fraction`` is not used (the official 10,000-image test set is); ``limit_per_class``
    caps train at N and val and test at ``ceil(N / 4)`` images per class.

    Args:
        options: Split and sampling options.

    Returns:
        28x28 grey images as :class:`ArraySamples`, with the ten class names.

    Raises:
        DataError: The files are missing or malformed (the hint says how to install them).
    """
    folder = fashion_mnist_dir()
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST folder not found: {folder}", _INSTALL_HINT)
    identity = _identity(folder)
    with ThreadPoolExecutor(max_workers=2) as pool:
        train_job = pool.submit(read_split, folder, "train")
        test = read_split(folder, "test")
        train = train_job.result()
    train, val, test = split_predefined(
        CLASSES,
        train,
        None,
        test,
        val_fraction=options.val_fraction,
        test_fraction=0.0,
        seed=options.seed,
        limit_per_class=options.limit_per_class,
    )
    return ImageData(list(CLASSES), train, val, test, source=NAME, fingerprint=options.fingerprint(identity))
