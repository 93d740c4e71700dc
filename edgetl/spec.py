"""``ModelSpec``: the model's input contract, which travels with the weights into every bundle.

Calibration, parity, benchmarks and apps read preprocessing from here and never re-declare it.
This module imports neither torch nor any engine, so the runtime can use it alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgetl.errors import RunFolderError

SPEC_VERSION = 1
RESIZE_MODES = ("crop", "squash")
TASKS = ("image-classification", "text-classification")


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects as input and what its outputs mean.

    Attributes:
        task: ``image-classification`` or ``text-classification``.
        labels: Class names, in output order.
        input_size: ``(height, width)`` in pixels.
        layout: ``NCHW`` or ``NHWC`` of the model's input tensor.
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel std divided after subtracting the mean.
        color_order: ``RGB`` or ``BGR`` channel order of the input tensor.
        resize: ``crop``: scale the shorter side to ``input / crop_pct`` then centre-crop;
            ``squash``: resize straight to ``input_size`` (aspect ratio not kept).
        crop_pct: Fraction of the resized image kept by the centre crop (``crop`` only).
        interpolation: PIL resampling filter name (``bilinear``, ``bicubic``, ``nearest``).
        backbone: Registered backbone name the weights belong to.
        max_length: Text only: longest token sequence; longer texts are truncated.
        tokenizer: Text only: folder (relative to the run or bundle) holding ``tokenizer.json``.

    Image fields (``input_size`` ... ``interpolation``) are ignored for text models.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    task: str = "image-classification"
    layout: str = "NCHW"
    color_order: str = "RGB"
    resize: str = "crop"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    backbone: str = ""
    max_length: int | None = None
    tokenizer: str | None = None
    version: int = field(default=SPEC_VERSION)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "input_size", tuple(int(x) for x in self.input_size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            problems.append(f"input_size must be (height, width) >= 8, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need 3 values each, std > 0")
        if self.layout not in ("NCHW", "NHWC"):
            problems.append(f"layout must be NCHW or NHWC, got {self.layout!r}")
        if self.color_order not in ("RGB", "BGR"):
            problems.append(f"color_order must be RGB or BGR, got {self.color_order!r}")
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "text-classification" and not (self.max_length and self.max_length > 1 and self.tokenizer):
            problems.append("a text model needs max_length > 1 and a tokenizer folder")
        if not 0 < self.crop_pct <= 1:
            problems.append(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if problems:
            raise RunFolderError("invalid model spec: " + "; ".join(problems))

    @property
    def is_text(self) -> bool:
        """True for text models (tokenizer input), False for images."""
        return self.task == "text-classification"

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels)

    def with_(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        for key in ("labels", "input_size", "mean", "std"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build from :meth:`to_dict` output; unknown keys are refused by name."""
        if not isinstance(data, dict):
            raise RunFolderError("model spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunFolderError(f"model spec has unknown keys: {', '.join(unknown)}")
        if "labels" not in data:
            raise RunFolderError("model spec has no 'labels'")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise RunFolderError(f"invalid model spec: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        from edgetl.fsutil import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        """Read a spec written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise RunFolderError(f"no model spec at {path}", "point at a run folder made by `edgetl finetune`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFolderError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)
