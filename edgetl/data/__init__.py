"""Datasets: image folders, text files and embedded datasets, split into train, val and test.

``load_image_data`` is the front end; it dispatches to a loader registered in
``EMBEDDED_DATASETS`` (by name) or to the image-folder loader (by path). Only
:mod:`edgetl.data.torch_data` imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgetl.data.fashion_mnist import load_fashion_mnist
from edgetl.data.folder import IMAGE_EXTENSIONS, load_folder
from edgetl.data.samples import ArraySamples, FileSamples, ImageData, SampleSet
from edgetl.data.splits import LoadOptions
from edgetl.data.text import EMBEDDED_TEXT_DATASETS, TextData, TextSamples, load_text_data
from edgetl.errors import DataError
from edgetl.registry import Registry

__all__ = [
    "EMBEDDED_DATASETS",
    "EMBEDDED_TEXT_DATASETS",
    "IMAGE_EXTENSIONS",
    "ArraySamples",
    "FileSamples",
    "ImageData",
    "LoadOptions",
    "SampleSet",
    "TextData",
    "TextSamples",
    "load_image_data",
    "load_text_data",
]

#: Embedded datasets by name; each loader takes :class:`LoadOptions` and returns :class:`ImageData`.
EMBEDDED_DATASETS: Registry[Callable[[LoadOptions], ImageData]] = Registry("embedded dataset")
EMBEDDED_DATASETS.add("fashion-mnist", load_fashion_mnist)


def load_image_data(
    data: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit_per_class: int | None = None,
    strict: bool = False,
) -> ImageData:
    """Load an image-classification dataset and split it into train, val and test.

    ``data`` is an embedded dataset name (see ``EMBEDDED_DATASETS``, e.g. ``"fashion-mnist"``) or a
    folder laid out as ``root/<class>/...`` or ``root/{train,val,test}/<class>/...`` (``valid`` and
    ``validation`` also mean val). Class names are the sorted class-folder names.

    Splitting is stratified and seeded: without split folders each class is split into
    train/val/test with the given fractions (every class with 3 or more images gets at least one
    val and one test image). With split folders ``train`` is required and a missing val or test is
    carved from train the same way. Fashion-MNIST keeps its official test set and carves val from
    train. A string naming an embedded dataset wins over a folder of that name (pass
    ``./fashion-mnist`` or a ``Path`` for the folder).

    ``limit_per_class=N`` keeps tests and demos quick. Without split folders at most N images per
    class are sampled before splitting. With predefined splits (split folders, Fashion-MNIST) train
    keeps at most N images per class and val and test at most ``ceil(N / 4)`` each.

    Args:
        data: Embedded dataset name or folder path.
        val_fraction: Fraction of each class used for validation, in [0, 1).
        test_fraction: Fraction of each class used for test when the data has no test split.
        seed: Seed for every random choice; the same seed gives the same split.
        limit_per_class: Cap on images per class (see above); ``None`` uses everything.
        strict: Raise on the first corrupt image instead of skipping it (skipped files are listed
            in ``ImageData.skipped`` and logged as a warning).

    Returns:
        The split dataset with class names, skipped files and a fingerprint of data and options.

    Raises:
        DataError: The dataset is missing, malformed, or a class is empty or too small.
        ConfigError: An option is out of range.
    """
    options = LoadOptions(
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limit_per_class=limit_per_class,
        strict=strict,
    )
    if isinstance(data, str) and data in EMBEDDED_DATASETS:
        return EMBEDDED_DATASETS.get(data)(options)
    if not Path(data).expanduser().exists():
        raise DataError(
            f"dataset not found: {data}",
            f"give an image folder or an embedded dataset name ({', '.join(EMBEDDED_DATASETS.names())})",
        )
    return load_folder(data, options)
