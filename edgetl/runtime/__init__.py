"""The torch-free runtime: load a bundle, preprocess images per its spec, predict with one engine.

Imports numpy, Pillow and (when a bundle is loaded) the bundle's engine only, so apps and devices can
use it without PyTorch.
"""

from edgetl.runtime.bundle import (
    FORMAT_ENGINES,
    MANIFEST_NAME,
    Bundle,
    Manifest,
    Prediction,
    read_manifest,
    softmax,
)
from edgetl.runtime.engines import ENGINES, OrtEngine, create_engine
from edgetl.runtime.preprocess import (
    ImageLike,
    as_image,
    normalize,
    open_image,
    preprocess,
    preprocess_batch,
    resize,
)

__all__ = [
    "ENGINES",
    "FORMAT_ENGINES",
    "MANIFEST_NAME",
    "Bundle",
    "ImageLike",
    "Manifest",
    "OrtEngine",
    "Prediction",
    "as_image",
    "create_engine",
    "normalize",
    "open_image",
    "preprocess",
    "preprocess_batch",
    "read_manifest",
    "resize",
    "softmax",
]
