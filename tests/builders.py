"""Builders of small real inputs shared by the tests: image folders and a tiny run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("cat", "dog", "fox")


def make_image_folder(root: Path, per_class: int = 8) -> Path:
    """Three classes of small PNGs whose colour differs per class (sizes vary, to exercise resizing)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(LABELS):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.normal(60 + 70 * c, 40, (40 + i, 56, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def make_run(root: Path, backbone: str = "mobilenet_v3_small", size: int = 64, per_class: int = 8) -> Path:
    """A run folder holding a random-init ``backbone`` at ``size`` px with meaningful, varied logits.

    Batch-norm statistics are re-estimated on random inputs so activations keep their spread (the
    random-init defaults collapse them), like a trained model's would.
    """
    import torch

    from edgetl.config import FinetuneConfig
    from edgetl.fsutil import write_json
    from edgetl.models import build_classifier, default_spec
    from edgetl.runfolder import save_run_files

    images = make_image_folder(root / "images", per_class)
    torch.manual_seed(0)
    model, _ = build_classifier(backbone, len(LABELS), pretrained=False)
    _calibrate_batchnorm(model, torch, size)
    spec = default_spec(backbone, LABELS, input_size=(size, size))
    config = FinetuneConfig()
    config.data.data = str(images)
    config.model.backbone, config.model.pretrained = backbone, False
    arch = {"backbone": backbone, "num_classes": len(LABELS), "dropout": 0.2, "hidden": None}
    run = root / "run"
    save_run_files(run, model.state_dict(), spec, arch, config)
    write_json(run / "metrics.json", {"test": {"accuracy": 1 / 3}})
    return run


def _calibrate_batchnorm(model, torch, size: int) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, size, size))
    model.eval()


def format_fixtures(fmt: str) -> tuple:
    """Module fixtures ``image_fp32``, ``image_fp16``, ``text_fp32``, ``text_fp16``: ``fmt`` bundles of the
    shared runs (conftest ``exported``). Assign them at module level: ``a, b, c, d = format_fixtures("tflite")``.
    """
    import pytest

    def make(kind: str, precision: str):
        @pytest.fixture(scope="module", name=f"{kind}_{precision}")
        def bundle(exported) -> Path:
            return exported(kind, fmt, precision)

        return bundle

    return tuple(make(kind, precision) for kind in ("image", "text") for precision in ("fp32", "fp16"))


#: Libraries the torch-free runtime must never import.
HEAVY_MODULES = ("torch", "transformers", "tensorflow")

_FRESH_APP = """
import json, sys
from edgetl.runtime import Bundle
bundle_dir, items, top_k, threads, heavy = json.loads(sys.argv[1])
bundle = Bundle.load(bundle_dir, threads=threads)
preds = bundle.predict(items, top_k=top_k)
print(json.dumps({
    "preds": [[[p.label, p.score] for p in row] for row in preds],
    "first": bundle.predict(items[0])[0].label,
    "logits": bundle.logits(bundle.preprocess(items)).tolist(),
    "heavy": sorted(m for m in heavy if m in sys.modules),
}))
"""


def predict_in_fresh_python(bundle: Path, items: list, *, top_k: int = 1, threads: int | None = None) -> dict:
    """Load ``bundle`` and predict ``items`` (image paths or texts) in a new interpreter, as an app would.

    Returns:
        ``preds`` (``[label, score]`` lists per item), ``first`` (the label of ``items[0]`` predicted
        alone), ``logits`` of the batch, and ``heavy``: which of :data:`HEAVY_MODULES` got imported.
    """
    import json
    import subprocess
    import sys

    args = json.dumps([str(bundle), [str(item) for item in items], top_k, threads, HEAVY_MODULES])
    proc = subprocess.run([sys.executable, "-c", _FRESH_APP, args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


#: The hub models' shapes (their config.json), for architecture stand-ins of registered text backbones.
TEXT_ARCHITECTURES = {
    "distilbert": {"dim": 768, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512},
    "bert": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512},
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def make_text_standin(folder: Path, model_type: str, layers: int = 2, seed: int = 0, **config) -> Path:
    """A text model folder with ``model_type``'s transformers architecture ("distilbert" or "bert") at its
    hub model's width, heads and 30,522-token uncased vocabulary, but only ``layers`` layers, random-init
    with ``seed`` (``model.safetensors``), and the packaged MiniLM's tokenizer (bert-base-uncased's vocab).
    ``config`` overrides other config fields (``initializer_range``...).

    It exercises an architecture's path (training, export, runtime), not any pretrained weights.
    """
    import shutil

    import torch
    import transformers

    from edgetl.models.text import TEXT_BACKBONES

    config_class, model_class = {
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertModel),
        "bert": (transformers.BertConfig, transformers.BertModel),
    }[model_type]
    depth = {"n_layers": layers} if model_type == "distilbert" else {"num_hidden_layers": layers}
    config = config_class(**{"vocab_size": 30522, **TEXT_ARCHITECTURES[model_type], **depth, **config})
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder, safe_serialization=True)
    packaged = TEXT_BACKBONES.get("minilm_l6").locate_packaged()
    for name in _TOKENIZER_FILES:
        shutil.copy(packaged / name, folder / name)
    return folder
