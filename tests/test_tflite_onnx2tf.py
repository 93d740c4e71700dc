"""The second TFLite route, ONNX -> onnx2tf -> TFLite (the ``tf`` extra): forced on the tiny MobileNetV3-Small run,
and taken automatically when litert-torch genuinely fails (it has no lowering for ``adaptive_max_pool2d``); its
files pass the same parity check as any other and run in the unchanged ai-edge-litert engine. Real models, no
mocks.

A text model takes the route too, through the real command: a one-layer BERT stand-in (random init, width 24,
the 30,522-token uncased vocabulary), whose single signature has the run's ``max_length``.

onnx2tf runs in a child process (TensorFlow import, SavedModel, two TFLite conversions): roughly 30 s for a tiny
model and 45 s for MobileNetV3-Small on 2 idle cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import LABELS, make_text_standin, predict_in_fresh_python

from edgetl.errors import ConfigError, ExportError
from edgetl.fsutil import read_json
from edgetl.runfolder import load_run
from edgetl.runtime import Bundle
from edgetl.spec import ModelSpec
from edgetl.verify import torch_reference

REVIEWS = ["a moving, funny film", "tedious", "the best movie of the year, a triumph",
           "dull, lifeless and far too long", "i laughed, i cried", "a mess", "beautifully shot and deeply felt",
           "boring", " ".join(["tender"] * 50)]


def _max_pool_net():
    """A small CNN with a global max-pooling head: litert-torch 0.10 cannot lower ``adaptive_max_pool2d``.

    Its convolution pads TF-"same" like EfficientNet-Lite (timm's ``Conv2dSame``), which the TorchScript exporter
    writes as shape arithmetic feeding a ``Pad``: onnx2tf only converts it once that is folded into constants.
    """
    import torch
    from timm.layers import Conv2dSame

    class MaxPoolNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = Conv2dSame(3, 8, 3, stride=2)
            self.fc = torch.nn.Linear(8, len(LABELS))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = torch.nn.functional.adaptive_max_pool2d(torch.relu(self.conv(x)), 1)
            return self.fc(pooled.flatten(1))

    torch.manual_seed(0)
    return MaxPoolNet().eval()


@pytest.fixture(scope="module")
def forced(image_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared image run exported with ``tflite_route="onnx2tf"`` and verified on its test split."""
    from edgetl.export import export

    out = tmp_path_factory.mktemp("onnx2tf") / "bundle"
    return export(image_run, "tflite", out, progress=False, tflite_route="onnx2tf")


@pytest.mark.slow
def test_forced_route_is_nhwc_verified_and_recorded(forced: Path, image_run: Path) -> None:
    assert sorted(p.name for p in forced.iterdir()) == ["edgetl.json", "model.tflite"]
    manifest = read_json(forced / "edgetl.json")
    assert (manifest["format"], manifest["precision"]) == ("tflite", "fp32")
    assert manifest["spec"]["layout"] == "NHWC"
    assert manifest["inputs"] == [{"name": "input", "shape": ["batch", 64, 64, 3], "dtype": "float32",
                                   "layout": "NHWC"}]
    v = manifest["verification"]
    assert v["n"] >= 3 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    artifact = manifest["artifact"]
    assert artifact["route"] == "onnx2tf" and "fallback_reason" not in artifact
    assert artifact["onnx2tf_version"] == "1.29.24" and artifact["tensorflow_version"].startswith("2.")
    assert artifact["weights"] == "float32" and artifact["batch"].startswith("fixed 1") and artifact["opset"] == 18
    assert load_run(image_run).spec.layout == "NCHW"  # the run itself is untouched


@pytest.mark.slow
def test_forced_route_runs_unchanged_in_the_runtime(forced: Path, image_run: Path) -> None:
    bundle = Bundle.load(forced, threads=1)
    assert bundle.engine.signatures[0].key == "serving_default" and bundle.engine.input_names == ["input"]
    reference = torch_reference(load_run(image_run).model(), bundle.spec)
    paths = sorted((image_run.parent / "images").rglob("*.png"))[::3]
    inputs = bundle.preprocess(paths)
    np.testing.assert_allclose(bundle.logits(inputs), reference(inputs), atol=1e-4)
    fresh = predict_in_fresh_python(forced, paths[:3])
    assert fresh["heavy"] == []  # no torch, no TensorFlow in the app
    assert [row[0][0] for row in fresh["preds"]] == [LABELS[i] for i in reference(inputs[:3]).argmax(1)]


@pytest.mark.slow
def test_litert_failure_falls_back_to_onnx2tf_and_says_why(tmp_path: Path) -> None:
    import torch

    from edgetl.export.tflite import EXPORTER

    model, spec = _max_pool_net(), EXPORTER.bundle_spec(ModelSpec(labels=LABELS, input_size=(16, 16)))
    with pytest.raises(ExportError, match=r"litert-torch failed: RuntimeError: Lowering not found: "
                                          r"aten\.adaptive_max_pool2d") as info:
        EXPORTER.with_route("litert-torch").convert(model, spec, tmp_path / "litert.tflite")
    assert "--tflite-route onnx2tf" in info.value.hint and not (tmp_path / "litert.tflite").exists()

    facts = EXPORTER.convert(model, spec, tmp_path / "model.tflite")  # route auto
    assert facts["route"] == "onnx2tf"
    assert facts["fallback_reason"] == "litert-torch failed: RuntimeError: Lowering not found: " \
                                       "aten.adaptive_max_pool2d.default"
    images = np.random.default_rng(0).standard_normal((32, 16, 16, 3), dtype=np.float32)
    got = EXPORTER.predictor(tmp_path / "model.tflite", threads=1)(images)
    with torch.no_grad():
        want = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - want).max() <= 1e-4 and (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.slow
def test_both_routes_failing_is_one_line_naming_both(tmp_path: Path) -> None:
    """``erfinv``: litert-torch has no lowering and ONNX no op, so neither route gets as far as TensorFlow."""
    import torch

    from edgetl.export.tflite import EXPORTER

    class ErfInv(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erfinv(torch.tanh(x.mean((2, 3))))

    spec = EXPORTER.bundle_spec(ModelSpec(labels=LABELS, input_size=(8, 8)))
    with pytest.raises(ExportError) as info:
        EXPORTER.convert(ErfInv(), spec, tmp_path / "model.tflite")
    line = info.value.one_line()
    assert line.startswith("TFLite export failed; litert-torch failed: RuntimeError: Lowering not found: aten.erfinv")
    assert "; then ONNX export for onnx2tf failed: " in line and "\n" not in line
    assert not (tmp_path / "model.tflite").exists()


@pytest.fixture(scope="module")
def tiny_text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature-extraction run (120 reviews, max length 32) on a one-layer BERT stand-in at width 24.

    Its init scale (0.5) makes the [CLS] feature follow the text, so the run predicts both classes.
    """
    from edgetl.config import FinetuneConfig
    from edgetl.train.finetune import finetune

    root = tmp_path_factory.mktemp("tiny-text")
    standin = make_text_standin(root / "standin", "bert", layers=1, hidden_size=24, num_attention_heads=2,
                                intermediate_size=48, initializer_range=0.5)
    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.max_length = "text", "rotten-tomatoes", 60, 32
    cfg.model.backbone = str(standin)
    cfg.train.mode, cfg.train.epochs, cfg.train.lr, cfg.train.batch_size = "feature-extract", 4, 3e-2, 16
    finetune(cfg.validate(), root / "run")
    return root / "run"


@pytest.mark.slow
def test_text_model_through_the_command_has_one_signature_at_max_length(tiny_text_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgetl.cli import main

    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(tiny_text_run), "--format", "tflite", "--out", str(out),
                                       "--tflite-route", "onnx2tf"])
    assert result.exit_code == 0, result.output
    manifest = read_json(out / "edgetl.json")
    artifact, v = manifest["artifact"], manifest["verification"]
    assert artifact["route"] == "onnx2tf" and artifact["sequence_lengths"] == [32]
    assert artifact["onnx_exporter"] == "torch.onnx (dynamo)"  # onnx2tf fails on the TorchScript graph of BERT
    assert v["n"] >= 10 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    bundle = Bundle.load(out)
    assert bundle.engine.sequence_lengths == [32]
    run = load_run(tiny_text_run)
    reference = torch_reference(run.model(), run.spec)
    for texts in (REVIEWS, REVIEWS[1:2], REVIEWS[-2:]):  # 3 to 32 tokens, each batch padded to the one signature
        inputs = bundle.preprocess(texts)
        np.testing.assert_allclose(bundle.logits(inputs), reference(inputs), atol=1e-4)
    fresh = predict_in_fresh_python(out, REVIEWS)
    assert fresh["heavy"] == [] and len({row[0][0] for row in fresh["preds"]}) == 2  # both classes: a real check


def test_routes_are_checked_before_any_work(image_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgetl.cli import main
    from edgetl.export import export
    from edgetl.export.tflite import EXPORTER, ROUTES

    assert ROUTES == ("auto", "litert-torch", "onnx2tf") and EXPORTER.route == "auto"
    assert EXPORTER.with_route("onnx2tf").route == "onnx2tf" and EXPORTER.route == "auto"
    with pytest.raises(ConfigError, match="unknown TFLite route 'tf'"):
        EXPORTER.with_route("tf")
    with pytest.raises(ConfigError, match=r"a TFLite route \('onnx2tf'\) was given for onnx export") as info:
        export(image_run, "onnx", tmp_path / "b", tflite_route="onnx2tf")
    assert "--format tflite only" in info.value.hint and not (tmp_path / "b").exists()
    result = CliRunner().invoke(main, ["export", str(image_run), "--format", "tflite", "--out", str(tmp_path / "c"),
                                       "--tflite-route", "tensorflow"])
    assert result.exit_code == 2 and "'tensorflow' is not one of 'auto', 'litert-torch', 'onnx2tf'" in result.output
    assert not (tmp_path / "c").exists()


def test_the_route_is_installed_for_ci() -> None:
    """``make install`` brings the ``tf`` extra and onnx2tf, so the tests above really take the route."""
    from edgetl.export.tflite_onnx2tf import check_available, missing_modules

    assert missing_modules() == []
    check_available()
