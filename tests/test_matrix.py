"""The verification matrix: every registered backbone x every export format x every precision it writes.

Each cell exports a real (small) run folder and relies on ``export()``'s own verification against
PyTorch on the run's test split, with the default limits of the precision (fp32: max |logit diff| <= 1e-4
and >= 99.9% top-1 agreement; fp16: max |logit diff| <= 1e-2 and >= 99.5%); the cell then
reloads the bundle through the runtime and predicts. The coverage test fails when a backbone or a format
is registered without being added here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from builders import LABELS, make_run, make_text_standin

from edgetl.errors import WeightsError
from edgetl.export import EXPORTERS, export, get_exporter
from edgetl.fsutil import read_json
from edgetl.models import BACKBONES, TEXT_BACKBONES
from edgetl.quantize.frontend import DYNAMIC_FORMATS
from edgetl.runtime import Bundle

IMAGE = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2")
TEXT = ("minilm_l6", "distilbert_base_uncased", "bert_base_uncased")
FORMATS = ("onnx", "openvino", "tflite")
IMAGE_SIZE = 48  # small and fast; every backbone's graph is the same at any size
#: Quantized cells are judged on decisions, with limits sized for the small splits used here (24 test texts:
#: one flipped decision is 4.2 points; the budget is measured on as few validation texts).
QUANTIZED_LIMITS = {"min_agreement": 0.9, "max_accuracy_drop": 10.0}
#: Text backbones whose hub weights are not here offline run on an architecture stand-in (``_text_run``):
#: their transformers model_type at the hub model's width, heads and 30,522-token vocabulary, with fewer
#: layers, random-init. At the hub config's init scale (initializer_range 0.02) attention is near uniform
#: and small next to the residual, so the CLS feature is mostly the [CLS] embedding and every text gets the
#: same class (measured: all 20 test texts one class, both architectures), which leaves top-1 agreement
#: nothing to check. At 0.05 the CLS feature follows the text (both classes predicted).
TEXT_STANDINS = {"distilbert_base_uncased": "distilbert", "bert_base_uncased": "bert"}
STANDIN_LAYERS = 2
STANDIN = "architecture stand-in"
STANDIN_INIT = {"initializer_range": 0.05}
#: A random-init encoder's decisions sit near zero margin, where INT8's logit error (measured max rel diff:
#: ONNX 0.08 DistilBERT, 0.12 BERT; TFLite 0.06, 0.07) flips some (0 or 1 of the 20 test texts): stand-in
#: INT8 cells allow 3 of 20 and check the logits stay within 25% instead. FP16 needs nothing extra: its
#: rel diff is 1.1e-3 to 1.4e-3 in every format (default limit 1e-2).
STANDIN_INT8_LIMITS = {"min_agreement": 0.85, "max_accuracy_drop": 15.0}
STANDIN_INT8_MAX_REL_DIFF = 0.25
#: Reviews of both sentiments: every text cell's model must not give them all one class.
REVIEWS = (
    "a moving, funny film",
    "tedious",
    "the best movie of the year, a triumph",
    "dull, lifeless and far too long",
    "i laughed, i cried",
    "a mess",
    "charming performances carry a thin plot",
    "nothing works here",
    "an ambitious failure",
    "beautifully shot and deeply felt",
    "boring",
    "wonderful",
)


def cells() -> list[tuple[str, str, str]]:
    """(backbone, format, precision) for every precision each format writes. INT8 that needs calibration
    (static quantization: every image INT8, text INT8 in formats without dynamic INT8) is not part of
    this matrix."""
    out = []
    for backbone in (*IMAGE, *TEXT):
        for fmt in FORMATS:
            for precision in get_exporter(fmt).precisions:
                if precision == "int8" and (backbone in IMAGE or fmt not in DYNAMIC_FORMATS):
                    continue
                out.append((backbone, fmt, precision))
    return out


def test_matrix_covers_every_registered_backbone_and_format() -> None:
    registered = set(BACKBONES.names()) | set(TEXT_BACKBONES.names())
    assert set(IMAGE) | set(TEXT) == registered, f"add {registered - set(IMAGE) - set(TEXT)} to the matrix"
    assert set(FORMATS) == set(EXPORTERS.names()), f"add {set(EXPORTERS.names()) - set(FORMATS)} to the matrix"
    assert {c[2] for c in cells()} >= {"fp32", "fp16"}
    packaged = {"minilm_l6"}  # always here offline (an installed package)
    assert set(TEXT) - packaged == set(TEXT_STANDINS), f"give {set(TEXT) - packaged - set(TEXT_STANDINS)} a stand-in"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_run) -> Callable[[str], tuple[Path, str]]:
    """``(run folder, what its encoder's weights are)`` made on first use, one per backbone."""
    made: dict[str, tuple[Path, str]] = {"minilm_l6": (text_run[0], "registered weights (packaged MiniLM)")}

    def get(backbone: str) -> tuple[Path, str]:
        if backbone not in made:
            root = tmp_path_factory.mktemp(backbone)
            if backbone in IMAGE:
                made[backbone] = make_run(root, backbone, IMAGE_SIZE), "random init"
            else:
                made[backbone] = _text_run(root, backbone)
        return made[backbone]

    return get


def _text_run(root: Path, backbone: str) -> tuple[Path, str]:
    """A short feature-extraction run (200 reviews; 20 test) on ``backbone``'s registered weights when they
    are here offline, else on its architecture stand-in (:data:`TEXT_STANDINS`).

    The stand-in checks the architecture's path through training, export and the runtime (the same
    transformers classes, embeddings, attention masking and pooling as the hub model, with fewer layers),
    not the pretrained weights: those need a download this test cannot make offline.
    """
    from edgetl.config import FinetuneConfig
    from edgetl.models.text import resolve_text_model
    from edgetl.train.finetune import finetune

    try:
        folder, _, _ = resolve_text_model(backbone, allow_download=False)
        model, used = backbone, f"registered weights ({folder})"
    except WeightsError:
        model_type = TEXT_STANDINS[backbone]
        model = str(make_text_standin(root / "standin", model_type, layers=STANDIN_LAYERS, **STANDIN_INIT))
        used = f"{STANDIN} ({model_type}, {STANDIN_LAYERS} layers, random init; not the hub weights)"
    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.max_length = "text", "rotten-tomatoes", 100, 32
    cfg.model.backbone = model
    cfg.train.mode, cfg.train.epochs, cfg.train.lr, cfg.train.batch_size = "feature-extract", 4, 1e-3, 16
    finetune(cfg.validate(), root / "run")
    return root / "run", used


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "fmt", "precision"), cells(), ids=lambda v: str(v))
def test_export_cell(runs, record_property, tmp_path: Path, backbone: str, fmt: str, precision: str) -> None:
    run_dir, weights = runs(backbone)
    record_property("weights", weights)
    print(f"{backbone}: {weights}")
    standin = weights.startswith(STANDIN)
    int8_limits = STANDIN_INT8_LIMITS if standin else QUANTIZED_LIMITS
    limits = int8_limits if precision == "int8" else {}
    bundle = export(run_dir, fmt, tmp_path / "bundle", precision=precision, progress=False, **limits)
    manifest = read_json(bundle / "edgetl.json")
    v = manifest["verification"]
    record_property("parity", {k: v[k] for k in ("n", "max_abs_diff", "max_rel_diff", "top1_agreement")})
    assert (manifest["format"], manifest["precision"]) == (fmt, precision) and v["n"] >= 3
    if precision == "fp32":
        assert v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    elif precision == "fp16":  # the bar, met by keeping the earliest weights float32 where needed
        assert v["max_abs_diff"] <= 1e-2 and v["top1_agreement"] >= 0.995
        assert manifest["artifact"]["fp16"]["max_abs_diff"] is not None
    elif precision == "int8" and standin:
        assert v["max_rel_diff"] <= STANDIN_INT8_MAX_REL_DIFF
    loaded = Bundle.load(bundle)
    if loaded.spec.is_text:
        preds = loaded.predict(list(REVIEWS))
        assert len({p[0].label for p in preds}) > 1, "the model gives every review one class: nothing to compare"
    else:
        preds = loaded.predict(sorted((run_dir.parent / "images" / LABELS[0]).glob("*.png"))[:2])
        assert len(preds) == 2
    assert all(p[0].label in loaded.spec.labels for p in preds)
