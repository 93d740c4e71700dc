"""The torch-free runtime: load a bundle, preprocess images or tokenize texts per its spec, predict.

Imports numpy, Pillow, ``tokenizers`` (text bundles) and (when a bundle is loaded) the bundle's engine
only, so apps and devices can use it without PyTorch or transformers.
"""

from edgetl.runtime.bundle import (
    FORMAT_ENGINES,
    MANIFEST_NAME,
    Bundle,
    Item,
    Manifest,
    Prediction,
    read_manifest,
    softmax,
)
from edgetl.runtime.engines import ENGINES, Inputs, OrtEngine, create_engine
from edgetl.runtime.preprocess import (
    ImageLike,
    as_image,
    normalize,
    open_image,
    preprocess,
    preprocess_batch,
    resize,
)
from edgetl.runtime.text import TEXT_INPUTS, load_tokenizer, synthetic_tokens, tokenize

__all__ = [
    "ENGINES",
    "FORMAT_ENGINES",
    "MANIFEST_NAME",
    "TEXT_INPUTS",
    "Bundle",
    "ImageLike",
    "Inputs",
    "Item",
    "Manifest",
    "OrtEngine",
    "Prediction",
    "as_image",
    "create_engine",
    "load_tokenizer",
    "normalize",
    "open_image",
    "preprocess",
    "preprocess_batch",
    "read_manifest",
    "resize",
    "softmax",
    "synthetic_tokens",
    "tokenize",
]
