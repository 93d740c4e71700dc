"""Image preprocessing from a :class:`~edgetl.spec.ModelSpec`, with numpy and Pillow only.

This is the one implementation of the input contract: training (eval transform), verification,
benchmarks and the torch-free runtime all call it, so an app that follows ``edgetl.json`` feeds the
model exactly what it saw in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgetl.errors import DataError
from edgetl.spec import ModelSpec

ImageLike = str | Path | Image.Image | np.ndarray
#: File name endings read as images (any case), in datasets and by `edgetl predict` on a folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def open_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a missing or unreadable file raises :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}", "check the path")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", "re-save it as JPEG or PNG") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Grey, palette, RGBA (composited on white) and CMYK images become RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8))
    return img.convert("RGB")


def array_to_image(arr: np.ndarray) -> Image.Image:
    """An ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` uint8 (or [0, 1] float) array as an RGB image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(
            f"cannot use an array of shape {arr.shape} as an image",
            "pass HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA)",
        )
    if arr.dtype != np.uint8:
        scale = 255.0 if float(np.nanmax(arr, initial=0)) <= 1.0 else 1.0
        arr = np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(arr))


def as_image(item: ImageLike) -> Image.Image:
    """Any accepted image input (path, PIL image, numpy array) as an RGB PIL image."""
    if isinstance(item, (str, Path)):
        return open_image(item)
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        return array_to_image(item)
    raise DataError(f"cannot use {type(item).__name__} as an image", "pass a path, PIL image or numpy array")


def resize(img: Image.Image, spec: ModelSpec) -> Image.Image:
    """Resize (and centre-crop) an RGB image to the spec's input size."""
    height, width = spec.input_size
    resample = _FILTERS.get(spec.interpolation, Image.Resampling.BILINEAR)
    if spec.resize == "squash":
        return img.resize((width, height), resample)
    scale = max(height / img.height, width / img.width) / spec.crop_pct
    new_w, new_h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    img = img.resize((new_w, new_h), resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


def normalize(img: Image.Image, spec: ModelSpec) -> np.ndarray:
    """An input-size RGB image as a float32 array in the spec's layout (without batch axis)."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.color_order == "BGR":
        arr = arr[:, :, ::-1]
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def preprocess(item: ImageLike, spec: ModelSpec) -> np.ndarray:
    """One image (path, PIL or array) to the model's input tensor, without batch axis."""
    return normalize(resize(as_image(item), spec), spec)


def preprocess_batch(items: list[ImageLike], spec: ModelSpec) -> np.ndarray:
    """Several images stacked into one batch."""
    return np.stack([preprocess(item, spec) for item in items])
