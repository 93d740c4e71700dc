"""The verification matrix: every registered backbone x every export format x every precision it writes.

Each cell exports a real (small) run folder and relies on ``export()``'s own verification against
PyTorch on the run's test split, with the default limits of the precision (fp32: max |logit diff| <= 1e-4
and >= 99.9% top-1 agreement; fp16: logit diff <= 1e-2 of the largest logit and >= 99.5%); the cell then
reloads the bundle through the runtime and predicts. The coverage test fails when a backbone or a format
is registered without being added here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from builders import LABELS, make_run

from edgetl.errors import WeightsError
from edgetl.export import EXPORTERS, export, get_exporter
from edgetl.fsutil import read_json
from edgetl.models import BACKBONES, TEXT_BACKBONES
from edgetl.runtime import Bundle

IMAGE = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2")
TEXT = ("minilm_l6", "distilbert_base_uncased", "bert_base_uncased")
FORMATS = ("onnx", "openvino", "tflite")
IMAGE_SIZE = 48  # small and fast; every backbone's graph is the same at any size
#: Quantized cells are judged on decisions, with limits sized for the small test splits used here.
QUANTIZED_LIMITS = {"min_agreement": 0.9, "max_accuracy_drop": 5.0}
#: The image runs here are random-init (no ImageNet weights for every backbone offline). Rounding random
#: weights to FP16 moves their logits by 1-5% of their scale (the same happens in PyTorch itself), against
#: 0.04-0.64% for trained models (MiniLM; EfficientNet-Lite0 on Fashion-MNIST): their FP16 cells get 5%.
RANDOM_INIT_FP16_LIMITS = {"max_rel_diff": 0.05}


def cells() -> list[tuple[str, str, str]]:
    """(backbone, format, precision) for every precision each format writes; INT8 images need calibration
    (static quantization), which is not part of this matrix."""
    out = []
    for backbone in (*IMAGE, *TEXT):
        for fmt in FORMATS:
            for precision in get_exporter(fmt).precisions:
                if precision == "int8" and backbone in IMAGE:
                    continue
                out.append((backbone, fmt, precision))
    return out


def test_matrix_covers_every_registered_backbone_and_format() -> None:
    registered = set(BACKBONES.names()) | set(TEXT_BACKBONES.names())
    assert set(IMAGE) | set(TEXT) == registered, f"add {registered - set(IMAGE) - set(TEXT)} to the matrix"
    assert set(FORMATS) == set(EXPORTERS.names()), f"add {set(EXPORTERS.names()) - set(FORMATS)} to the matrix"
    assert {c[2] for c in cells()} >= {"fp32", "fp16"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_run) -> Callable[[str], Path]:
    """Run folders made on first use, one per backbone."""
    made: dict[str, Path] = {"minilm_l6": text_run[0]}

    def get(backbone: str) -> Path:
        if backbone not in made:
            root = tmp_path_factory.mktemp(backbone)
            made[backbone] = make_run(root, backbone, IMAGE_SIZE) if backbone in IMAGE else _text_run(root, backbone)
        return made[backbone]

    return get


def _text_run(root: Path, backbone: str) -> Path:
    """A run on a pretrained encoder with a fresh head (no training): only when the encoder is here offline."""
    from edgetl.config import FinetuneConfig
    from edgetl.models.text import resolve_text_model
    from edgetl.train.finetune import finetune

    try:
        resolve_text_model(backbone, allow_download=False)
    except WeightsError as exc:
        pytest.skip(f"{backbone} is not available offline ({exc.message})")
    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.max_length = "text", "rotten-tomatoes", 30, 32
    cfg.model.backbone = backbone
    cfg.train.mode, cfg.train.epochs, cfg.train.lr = "feature-extract", 2, 0.01
    finetune(cfg.validate(), root / "run")
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "fmt", "precision"), cells(), ids=lambda v: str(v))
def test_export_cell(runs, tmp_path: Path, backbone: str, fmt: str, precision: str) -> None:
    run_dir = runs(backbone)
    limits = {"int8": QUANTIZED_LIMITS, "fp16": RANDOM_INIT_FP16_LIMITS if backbone in IMAGE else {}}.get(precision, {})
    bundle = export(run_dir, fmt, tmp_path / "bundle", precision=precision, progress=False, **limits)
    manifest = read_json(bundle / "edgetl.json")
    v = manifest["verification"]
    assert (manifest["format"], manifest["precision"]) == (fmt, precision) and v["n"] >= 3
    if precision == "fp32":
        assert v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    elif precision == "fp16":
        assert v["max_rel_diff"] <= (0.05 if backbone in IMAGE else 1e-2) and v["top1_agreement"] >= 0.995
    loaded = Bundle.load(bundle)
    if loaded.spec.is_text:
        preds = loaded.predict(["a moving, funny film", "tedious"])
    else:
        preds = loaded.predict(sorted((run_dir.parent / "images" / LABELS[0]).glob("*.png"))[:2])
    assert len(preds) == 2 and all(p[0].label in loaded.spec.labels for p in preds)
