"""What differs between image and text training, behind one small interface.

The epoch loop, freezing, schedules, checkpoints, caching and reports are shared; a task says how to
load its data, build its model and spec, batch its examples, save its extra files, and fit its simple
linear baseline.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgetl.config import FinetuneConfig
from edgetl.data.text_augment import WordAugment
from edgetl.registry import Registry
from edgetl.spec import ModelSpec

log = logging.getLogger("edgetl")
TOKENIZER_DIR = "tokenizer"
# the tokenizer, plus what rebuilds the encoder without a download (config; sentence-transformers pooling)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
                   "modules.json", "1_Pooling/config.json")


@dataclass
class Built:
    """A freshly built model with its spec, weight provenance and anything the task must keep."""

    model: torch.nn.Module
    spec: ModelSpec
    weights: Any
    extras: dict[str, Any]


class Task(Protocol):
    """One kind of input (images, text)."""

    name: str
    scratch_baseline: bool  # whether --baseline also trains the backbone from random init

    def check_backbone(self, name: str) -> None: ...
    def load_data(self, cfg: FinetuneConfig) -> Any: ...
    def build(self, cfg: FinetuneConfig, classes: list[str], pretrained: bool | None = None) -> Built: ...
    def loader(
        self, samples: Any, built: Built, cfg: FinetuneConfig, *, train: bool, batch_size: int
    ) -> DataLoader: ...
    def save_extras(self, built: Built, folder: Path) -> dict[str, Any]: ...
    def linear_baseline(self, data: Any, cfg: FinetuneConfig) -> dict: ...


TASKS: Registry[Task] = Registry("task")


def _generator(cfg: FinetuneConfig) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.train.seed)


def text_augment(cfg: FinetuneConfig) -> WordAugment | None:
    """The training texts' word deletion and swaps (``data.text_augment``), seeded by ``train.seed``; None: off."""
    return WordAugment(cfg.data.text_augment, cfg.train.seed) if cfg.data.text_augment > 0 else None


class ImageTask:
    """Image folders / embedded image datasets, CNN backbones, the spec's preprocessing."""

    name = "image"
    scratch_baseline = True

    def check_backbone(self, name: str) -> None:
        from edgetl.models import BACKBONES

        BACKBONES.get(name)

    def load_data(self, cfg: FinetuneConfig) -> Any:
        from edgetl.data import load_image_data

        d = cfg.data
        return load_image_data(d.data, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                               seed=cfg.train.seed, limit_per_class=d.limit_per_class, strict=d.strict)

    def build(self, cfg: FinetuneConfig, classes: list[str], pretrained: bool | None = None) -> Built:
        from edgetl.models import build_classifier, default_spec

        m = cfg.model
        pretrained = m.pretrained if pretrained is None else pretrained
        model, weights = build_classifier(m.backbone, len(classes), weights=m.weights, dropout=m.dropout,
                                          hidden=m.hidden, pretrained=pretrained)
        model = model.to(memory_format=torch.channels_last)  # see loop.to_channels_last
        size = (cfg.data.image_size, cfg.data.image_size) if cfg.data.image_size else None
        return Built(model, default_spec(m.backbone, classes, input_size=size), weights, {})

    def loader(self, samples: Any, built: Built, cfg: FinetuneConfig, *, train: bool, batch_size: int) -> DataLoader:
        from edgetl.data.torch_data import TorchImageDataset, eval_transform, train_transform

        transform = train_transform(built.spec, cfg.data.augment) if train else eval_transform(built.spec)
        return DataLoader(TorchImageDataset(samples, transform), batch_size=batch_size, shuffle=train,
                          num_workers=cfg.train.workers, generator=_generator(cfg),
                          persistent_workers=cfg.train.workers > 0)

    def save_extras(self, built: Built, folder: Path) -> dict[str, Any]:
        return {}

    def linear_baseline(self, data: Any, cfg: FinetuneConfig) -> dict:
        from edgetl.train.baseline import pixel_logistic_regression

        return pixel_logistic_regression(data, seed=cfg.train.seed)


class TextDataset(Dataset):
    """``(text, label)`` pairs of a :class:`~edgetl.data.TextSamples`."""

    def __init__(self, samples: Any) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.samples.texts[i], int(self.samples.labels[i])


class TextCollate:
    """Tokenises a batch with dynamic padding (to the longest text, at most ``max_length``), after ``augment``
    (training texts only)."""

    def __init__(self, tokenizer: Any, max_length: int, augment: WordAugment | None = None) -> None:
        self.tokenizer, self.max_length, self.augment = tokenizer, max_length, augment

    def __call__(self, items: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        from edgetl.runtime.text import tokenize

        texts, labels = zip(*items, strict=True)
        texts = self.augment(list(texts)) if self.augment is not None else list(texts)
        arrays, _ = tokenize(self.tokenizer, texts, self.max_length)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}, torch.tensor(labels, dtype=torch.int64)


class TextTask:
    """CSV/TSV/JSONL/class-folder text datasets, Hugging Face encoders, a tokenizer in the spec."""

    name = "text"
    #: A transformer from random init on a few thousand sentences costs a full training run and only
    #: shows what everyone knows; the TF-IDF model is the baseline that matters.
    scratch_baseline = False

    def check_backbone(self, name: str) -> None:
        from edgetl.models.text import TEXT_BACKBONES

        if not Path(name).is_dir():
            TEXT_BACKBONES.get(name)

    def load_data(self, cfg: FinetuneConfig) -> Any:
        from edgetl.data import load_text_data

        d = cfg.data
        return load_text_data(d.data, text_column=d.text_column, label_column=d.label_column,
                              split_column=d.split_column, val_fraction=d.val_fraction,
                              test_fraction=d.test_fraction, seed=cfg.train.seed,
                              limit_per_class=d.limit_per_class, strict=d.strict)

    def build(self, cfg: FinetuneConfig, classes: list[str], pretrained: bool | None = None) -> Built:
        from edgetl.models.text import build_text_classifier
        from edgetl.runtime.text import load_tokenizer

        m = cfg.model
        model, weights, folder = build_text_classifier(
            m.backbone, len(classes), dropout=m.dropout, hidden=m.hidden,
            pretrained=m.pretrained if pretrained is None else pretrained)
        max_length = cfg.data.max_length or model.backbone.max_length  # the backbone's default, clipped
        spec = ModelSpec(labels=classes, task="text-classification", backbone=m.backbone, max_length=max_length,
                         tokenizer=TOKENIZER_DIR)
        return Built(model, spec, weights, {"folder": folder, "tokenizer": load_tokenizer(folder),
                                            "pooling": model.backbone.pooling})

    def loader(self, samples: Any, built: Built, cfg: FinetuneConfig, *, train: bool, batch_size: int) -> DataLoader:
        if train:
            self._log_truncation(samples, built)
        augment = text_augment(cfg) if train else None
        return DataLoader(TextDataset(samples), batch_size=batch_size, shuffle=train, generator=_generator(cfg),
                          collate_fn=TextCollate(built.extras["tokenizer"], built.spec.max_length, augment))

    @staticmethod
    def _log_truncation(samples: Any, built: Built) -> None:
        from edgetl.runtime.text import tokenize

        _, truncated = tokenize(built.extras["tokenizer"], list(samples.texts), built.spec.max_length)
        if truncated:
            log.info("%d of %d train texts are longer than max_length %d tokens and are truncated",
                     truncated, len(samples), built.spec.max_length)

    def save_extras(self, built: Built, folder: Path) -> dict[str, Any]:
        """Copy the tokenizer (and the encoder's config, to rebuild it) into ``folder/tokenizer``."""
        target = folder / TOKENIZER_DIR
        target.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (built.extras["folder"] / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(built.extras["folder"] / name, target / name)
        return {"task": "text", "pooling": built.extras["pooling"], "encoder": TOKENIZER_DIR}

    def linear_baseline(self, data: Any, cfg: FinetuneConfig) -> dict:
        from edgetl.train.baseline import tfidf_logistic_regression

        return tfidf_logistic_regression(data, seed=cfg.train.seed)


TASKS.add("image", ImageTask())
TASKS.add("text", TextTask())


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.divide(counts.sum() / num_classes, counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)
