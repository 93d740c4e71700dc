"""OpenVINO INT8 with NNCF: post-training quantization of the shared image and text IRs, ignored ops,
accuracy control, and refusals. Real models, real NNCF and OpenVINO, no mocks.

The image model is the tiny random-init MobileNetV3-Small of ``builders.make_run``: its three classes differ
by overall brightness, so per-sample activation ranges differ widely and NNCF's default ranges (the mean of
each sample's min and max) clip the bright class; its parity test uses global ranges, which do not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import format_fixtures

from edgetl.errors import ConfigError, DataError, ExportError
from edgetl.fsutil import read_json
from edgetl.quantize.openvino_nncf import (
    count_fake_quantize,
    quantizable_ops,
    quantize_accuracy_control,
    quantize_ptq,
)
from edgetl.runfolder import load_run
from edgetl.runtime.openvino_engine import OpenVINOEngine
from edgetl.runtime.text import load_tokenizer
from edgetl.spec import ModelSpec
from edgetl.verify import _batch, _text_batch

image_fp32, _, text_fp32, _ = format_fixtures("openvino")

FACT_KEYS = {
    "tool",
    "method",
    "algorithm",
    "preset",
    "model_type",
    "activation_ranges",
    "fast_bias_correction",
    "calibration_samples",
    "ignored",
    "fake_quantize",
    "float16_vectors",
}


def _spec(bundle: Path) -> ModelSpec:
    return ModelSpec.from_dict(read_json(bundle / "edgetl.json")["spec"])


@pytest.fixture(scope="module")
def images(image_fp32: Path, image_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the tiny run (train, val, test: 24), preprocessed as the bundle feeds them, and labels."""
    spec, data = _spec(image_fp32), load_run(image_run).data()
    splits = (data.train, data.val, data.test)
    x = np.concatenate([_batch(s, spec, range(len(s))) for s in splits])
    return x, np.concatenate([np.asarray(s.labels) for s in splits])


@pytest.fixture(scope="module")
def texts(text_fp32: Path, text_run: tuple[Path, dict]) -> dict[str, list]:
    """Tokenized text batches: ``calib`` (64 train texts, in two batches of different lengths) and ``eval``
    (the val and test splits, one batch each)."""
    spec, data = _spec(text_fp32), load_run(text_run[0]).data()
    tokenizer = load_tokenizer(text_fp32 / "tokenizer")
    calib = [_text_batch(data.train, spec, range(start, start + 32), tokenizer) for start in (0, 32)]
    evals = [_text_batch(s, spec, range(len(s)), tokenizer) for s in (data.val, data.test)]
    return {"calib": calib, "eval": evals}


@pytest.fixture(scope="module")
def image_ptq(image_fp32: Path, images, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The image IR quantized with NNCF defaults (performance preset, mean ranges), calibrated on 18 images
    fed as two batches."""
    x, _ = images
    dst = tmp_path_factory.mktemp("image-int8") / "model.xml"
    return dst, quantize_ptq(image_fp32 / "model.xml", dst, [x[:10], x[10:18]], text=False, compact=False)


def _agreement(reference: Path, candidate: Path, batches: list) -> tuple[float, float]:
    """Top-1 agreement and largest logit difference of ``candidate`` against ``reference`` (both float32)."""
    ref, art = OpenVINOEngine(reference), OpenVINOEngine(candidate)
    a = np.concatenate([ref.run(b) for b in batches])
    b = np.concatenate([art.run(b) for b in batches])
    return float(np.mean(a.argmax(1) == b.argmax(1))), float(np.abs(a - b).max())


def _quantized_inputs(model, name: str) -> bool:
    """Whether op ``name`` reads a FakeQuantize (activations, some weights) or int8 weights (a Constant
    widened by Convert, then scaled by Multiply), possibly through a Reshape."""
    import openvino as ov

    op = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)
    for value in op.input_values():
        node = value.get_node()
        if node.get_type_name() == "Reshape":
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() == "Multiply":
            widened = node.input_value(0).get_node()
            if widened.get_type_name() == "Subtract":
                widened = widened.input_value(0).get_node()
            if widened.get_type_name() == "Convert" and widened.input_value(0).get_element_type() == ov.Type.i8:
                return True
    return False


@pytest.mark.slow
def test_image_ptq_writes_int8_ir_with_nncf_facts(image_fp32: Path, image_ptq, images) -> None:
    dst, facts = image_ptq
    assert set(facts) == FACT_KEYS
    assert facts["tool"].startswith("nncf 3.") and (facts["method"], facts["algorithm"]) == ("static", "ptq")
    assert (facts["preset"], facts["model_type"], facts["activation_ranges"]) == ("performance", None, "mean")
    assert facts["calibration_samples"] == 18 and facts["ignored"] == []
    assert count_fake_quantize(image_fp32 / "model.xml") == 0
    assert facts["fake_quantize"] == count_fake_quantize(dst) > 40
    fp32_bin, int8_bin = (image_fp32 / "model.bin").stat().st_size, dst.with_suffix(".bin").stat().st_size
    print(f"\nimage IR weights: fp32 {fp32_bin / 1e6:.2f} MB, int8 {int8_bin / 1e6:.2f} MB")
    assert int8_bin < 0.5 * fp32_bin
    # runs in the runtime's engine at any batch size (the batch axis stayed dynamic)
    x, _ = images
    engine = OpenVINOEngine(dst)
    assert engine.inputs["input"][0][0] == "?"
    one, many = engine.run(x[:1]), engine.run(x[:7])
    assert one.shape == (1, 3) and many.shape == (7, 3) and np.isfinite(many).all()


@pytest.mark.slow
def test_image_ptq_follows_fp32(image_fp32: Path, image_ptq, images, tmp_path: Path) -> None:
    x, _ = images
    default = _agreement(image_fp32 / "model.xml", image_ptq[0], [x])
    dst = tmp_path / "global" / "model.xml"
    facts = quantize_ptq(
        image_fp32 / "model.xml", dst, [x[:18]], text=False, preset="mixed", activation_ranges="global"
    )
    assert (facts["preset"], facts["activation_ranges"]) == ("mixed", "global")
    tuned = _agreement(image_fp32 / "model.xml", dst, [x])
    print(
        f"\nimage INT8 vs FP32 on 24 images: defaults agreement {default[0]:.2%} (max |diff| {default[1]:.2f}); "
        f"mixed + global ranges {tuned[0]:.2%} (max |diff| {tuned[1]:.2f})"
    )
    assert tuned[0] >= 0.8


@pytest.mark.slow
def test_text_ptq_uses_transformer_type_and_follows_fp32(text_fp32: Path, texts, tmp_path: Path) -> None:
    dst = tmp_path / "model.xml"
    facts = quantize_ptq(text_fp32 / "model.xml", dst, texts["calib"], text=True)
    assert facts["model_type"] == "transformer" and facts["calibration_samples"] == 64
    assert facts["fake_quantize"] == count_fake_quantize(dst) > 20
    fp32_bin, int8_bin = (text_fp32 / "model.bin").stat().st_size, dst.with_suffix(".bin").stat().st_size
    agreement, diff = _agreement(text_fp32 / "model.xml", dst, texts["eval"])
    n = sum(len(b["input_ids"]) for b in texts["eval"])
    print(
        f"\ntext IR weights: fp32 {fp32_bin / 1e6:.1f} MB, int8 {int8_bin / 1e6:.1f} MB; "
        f"agreement with FP32 on {n} texts {agreement:.2%}, max |logit diff| {diff:.3f}"
    )
    assert int8_bin < 0.5 * fp32_bin
    assert agreement >= 0.9
    # token inputs keep dynamic batch and sequence axes
    engine = OpenVINOEngine(dst)
    assert engine.inputs["input_ids"][0] == ["?", "?"]
    short = {k: v[:3, :5] for k, v in texts["eval"][0].items()}
    assert engine.run(short).shape == (3, 2)


@pytest.mark.slow
def test_ignored_names_stay_float(image_fp32: Path, image_ptq, images, tmp_path: Path) -> None:
    import openvino as ov

    ops = quantizable_ops(image_fp32 / "model.xml")
    ignored = ops[:3]
    dst = tmp_path / "model.xml"
    x, _ = images
    facts = quantize_ptq(image_fp32 / "model.xml", dst, [x[:10], x[10:18]], text=False, ignored_names=ignored,
                         compact=False)
    assert facts["ignored"] == ignored
    assert 0 < facts["fake_quantize"] < image_ptq[1]["fake_quantize"]
    model, full = ov.Core().read_model(str(dst)), ov.Core().read_model(str(image_ptq[0]))
    assert not any(_quantized_inputs(model, name) for name in ignored)
    assert all(_quantized_inputs(full, name) for name in ignored)
    assert _quantized_inputs(model, ops[3])


@pytest.mark.slow
def test_quantizable_ops_lists_convolutions_and_matmuls(image_fp32: Path, text_fp32: Path) -> None:
    image = quantizable_ops(image_fp32 / "model.xml")
    assert len(image) == len(set(image)) > 40
    assert image[0].startswith("/backbone/stem") and "Gemm" in image[-1]  # execution order: stem first, head last
    text = quantizable_ops(text_fp32 / "model.xml")
    assert any("attention/self/query" in name for name in text) and any("intermediate" in name for name in text)


@pytest.mark.slow
def test_accuracy_control_reverts_layers_to_meet_the_budget(image_fp32: Path, images, tmp_path: Path) -> None:
    """Labels are the FP32 model's own answers (it scores 100%); plain INT8 gets 2 of the 24 wrong (8.3 points),
    so it misses a 5-point budget and NNCF must put layers back in float."""
    x, _ = images
    labels = OpenVINOEngine(image_fp32 / "model.xml").run(x).argmax(1)
    dst = tmp_path / "model.xml"
    facts = quantize_accuracy_control(
        image_fp32 / "model.xml",
        dst,
        [x[:18]],
        [(x[:12], labels[:12]), (x[12:], labels[12:])],
        text=False,
        max_drop_points=5.0,
        preset="mixed",
    )
    print(
        f"\naccuracy control: FP32 {facts['reference_accuracy']:.2%}, PTQ {facts['ptq_accuracy']:.2%}, "
        f"reverted {len(facts['reverted'])} of {facts['quantized_ops']}: {facts['reverted']}"
    )
    assert set(facts) == FACT_KEYS | {
        "max_drop_points",
        "validation_samples",
        "reference_accuracy",
        "ptq_accuracy",
        "reverted",
        "quantized_ops",
        "met_drop",
        "reverted_weights",
        "reverted_weights_int8",
        "reverted_weights_accuracy",
        "reverted_weights_note",
    }
    assert (facts["algorithm"], facts["max_drop_points"], facts["validation_samples"]) == ("accuracy_control", 5.0, 24)
    assert facts["reference_accuracy"] == 1.0 and facts["ptq_accuracy"] < 0.95
    assert facts["met_drop"] and facts["reverted"] and facts["quantized_ops"] > len(facts["reverted"])
    assert 0 < facts["fake_quantize"] == count_fake_quantize(dst)
    agreement, _ = _agreement(image_fp32 / "model.xml", dst, [x])
    assert agreement >= 0.8
    # the reverted ops' weights: int8 when that stayed within the budget (measured), float otherwise
    assert facts["reverted_weights"] in ("int8", "float")
    if facts["reverted_weights"] == "int8":
        assert facts["reverted_weights_int8"] > 0 and 1.0 - facts["reverted_weights_accuracy"] <= 0.05
        assert not _float_weights(dst)
    else:
        assert facts["reverted_weights_note"]


def _float_weights(xml: Path) -> list[str]:
    """Convolutions and MatMuls of the IR whose weight port reads a float32 Constant (maybe reshaped)."""
    import openvino as ov

    def source(value):
        node = value.get_node()
        return node.input_value(0).get_node() if node.get_type_name() == "Reshape" else node

    model = ov.Core().read_model(str(xml))
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
            and source(op.input_value(1)).get_type_name() == "Constant"
            and source(op.input_value(1)).get_element_type() == ov.Type.f32]


@pytest.mark.slow
def test_float_weights_stored_int8_follow_the_float_model(image_fp32: Path, images, tmp_path: Path) -> None:
    """Every weight of the FP32 IR as int8 + Convert + Multiply: a third of the bytes or less, logits close."""
    import openvino as ov

    from edgetl.quantize.openvino_nncf import store_float_weights_int8

    src = image_fp32 / "model.xml"
    model = ov.Core().read_model(str(src))
    count = store_float_weights_int8(model)
    assert count == len(quantizable_ops(src)) and count > 40
    dst = tmp_path / "model.xml"
    ov.save_model(model, str(dst), compress_to_fp16=False)
    assert not _float_weights(dst)
    assert dst.with_suffix(".bin").stat().st_size < 0.3 * src.with_suffix(".bin").stat().st_size
    x, _ = images
    ref, out = OpenVINOEngine(src).run(x), OpenVINOEngine(dst).run(x)
    # 8-bit weights everywhere on this tiny random-init model: 11% of the logits' norm (a wrong scale axis: ~100%)
    assert float(np.linalg.norm(out - ref) / np.linalg.norm(ref)) < 0.2


@pytest.mark.slow
def test_broken_inputs_raise_edgetl_errors(image_fp32: Path, images, tmp_path: Path) -> None:
    x, _ = images
    src = image_fp32 / "model.xml"
    with pytest.raises(ExportError, match="not found") as missing:
        quantize_ptq(tmp_path / "nowhere" / "model.xml", tmp_path / "out.xml", [x[:2]], text=False)
    assert "re-export" in missing.value.hint
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.xml").write_text("<net><layers><layer", "utf-8")
    (corrupt / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ExportError, match="cannot read"):
        quantize_ptq(corrupt / "model.xml", tmp_path / "out.xml", [x[:2]], text=False)
    with pytest.raises(ExportError, match="cannot read"):
        count_fake_quantize(corrupt / "model.xml")
    with pytest.raises(ExportError, match="cannot read"):
        quantizable_ops(corrupt / "model.xml")
    with pytest.raises(ExportError, match="NNCF post-training quantization failed") as unknown:
        quantize_ptq(src, tmp_path / "out.xml", [x[:2]], text=False, ignored_names=["no/such/op"])
    assert unknown.value.hint and "\n" not in unknown.value.message
    with pytest.raises(ConfigError, match="preset"):
        quantize_ptq(src, tmp_path / "out.xml", [x[:2]], text=False, preset="fast")
    with pytest.raises(ConfigError, match="activation_ranges"):
        quantize_ptq(src, tmp_path / "out.xml", [x[:2]], text=False, activation_ranges="histogram")
    with pytest.raises(DataError, match="no calibration samples"):
        quantize_ptq(src, tmp_path / "out.xml", [], text=False)
    with pytest.raises(DataError, match="labels"):
        quantize_accuracy_control(
            src, tmp_path / "out.xml", [x[:2]], [(x[:3], np.zeros(2))], text=False, max_drop_points=1.0
        )
    assert not (tmp_path / "out.xml").exists()


@pytest.mark.slow
def test_nncf_telemetry_is_off_and_its_logger_quiet() -> None:
    """Outside pytest (which NNCF detects, stubbing its telemetry), in fresh interpreters without NNCF_CI: when
    edgetl imports NNCF first, NNCF swaps in its stub; when the app imported NNCF first, consent is withdrawn."""
    import os

    first = (
        "import logging; from edgetl.quantize.openvino_nncf import _require_nncf; _require_nncf()\n"
        "from nncf.telemetry import decorator\n"
        "print(type(decorator.telemetry).__name__, logging.getLogger('nncf').level)"
    )
    later = (
        "import nncf; from edgetl.quantize.openvino_nncf import _require_nncf; _require_nncf()\n"
        "from nncf.telemetry import decorator\n"
        "print(type(decorator.telemetry).__name__, decorator.telemetry._impl.consent)"
    )
    env = {k: v for k, v in os.environ.items() if k != "NNCF_CI"}
    outs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
        for code in (first, later)
    ]
    assert [out.split() for out in outs] == [["MagicMock", "30"], ["NNCFTelemetry", "False"]]


@pytest.mark.slow
def test_compact_names_same_outputs_smaller_xml(image_fp32: Path, image_ptq, images, tmp_path: Path) -> None:
    """The default INT8 IR: internal names shortened, inputs and outputs named as before, the same logits."""
    import openvino as ov

    x, _ = images
    dst = tmp_path / "model.xml"
    quantize_ptq(image_fp32 / "model.xml", dst, [x[:10], x[10:18]], text=False)
    plain = image_ptq[0]
    assert dst.stat().st_size < 0.95 * plain.stat().st_size  # 411 -> 365 KB here: the rest is structure (ports, dims)
    assert dst.with_suffix(".bin").read_bytes() == plain.with_suffix(".bin").read_bytes()
    small, full = ov.Core().read_model(str(dst)), ov.Core().read_model(str(plain))
    assert [p.get_names() for p in small.inputs] == [p.get_names() for p in full.inputs]
    assert [p.get_names() for p in small.outputs] == [p.get_names() for p in full.outputs]
    np.testing.assert_array_equal(OpenVINOEngine(dst).run(x), OpenVINOEngine(plain).run(x))


@pytest.mark.slow
def test_depthwise_weights_stored_int8(image_ptq) -> None:
    """Folded constants: every convolution's weights (depthwise too) are int8 in the INT8 IR, none float32."""
    assert not _float_weights(image_ptq[0])
