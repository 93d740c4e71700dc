"""Quantization-aware training: the ONNX INT8 ladder's last rung (and ``--method qat``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgetl.cli import main
from edgetl.models import build_classifier
from edgetl.quantize.qat import static_same_padding


def test_static_same_padding_is_the_same_function() -> None:
    torch.manual_seed(0)
    model, _ = build_classifier("efficientnet_lite0", 4, pretrained=False)
    model.eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        expected = model(x)
        same = [n for n, m in model.named_modules() if type(m).__name__ == "Conv2dSame"]
        fixed = static_same_padding(model, x[:1])
        assert same, "timm's TF-ported EfficientNet-Lite uses Conv2dSame for its strided convolutions"
        assert not [n for n, m in fixed.named_modules() if type(m).__name__ == "Conv2dSame"]
        torch.testing.assert_close(fixed(x), expected, rtol=0, atol=1e-5)


def test_qat_refused_for_text_and_other_formats(text_run, tmp_path: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["export", str(text_run[0]), "--precision", "int8", "--method", "qat",
                                "--out", str(tmp_path / "t")])
    assert text.exit_code == 2 and "not available for text models" in text.output
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_qat_rung_exports_a_qdq_bundle(image_run: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "qat"
    result = CliRunner().invoke(main, ["export", str(image_run), "--precision", "int8", "--method", "qat",
                                       "--qat-steps", "12", "--max-accuracy-drop", "100", "--min-agreement", "0",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "edgetl.json").read_text())
    q = manifest["quantization"]
    assert manifest["precision"] == "int8" and q["method"] == "qat"
    assert q["chosen"] == "quantization-aware training" and [a["step"] for a in q["attempts"]] == [q["chosen"]]
    facts = q["attempts"][0]["settings"]
    assert facts["steps"] == 12 and facts["method"] == "qat"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert q["int8_bytes"] < 0.4 * q["fp32_bytes"]
    # the QAT model is a quantized twin of the FP32 one, not a new model
    verification = manifest["verification"]
    assert verification["n"] > 0 and np.isfinite(verification["max_abs_diff"])


@pytest.mark.slow
def test_openvino_qat_rung_writes_an_int8_ir(image_run: Path, tmp_path: Path) -> None:
    import openvino as ov

    out = tmp_path / "qat-ov"
    result = CliRunner().invoke(main, ["export", str(image_run), "--format", "openvino", "--precision", "int8",
                                       "--method", "qat", "--qat-steps", "6", "--max-accuracy-drop", "100",
                                       "--min-agreement", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "edgetl.json").read_text())
    q = manifest["quantization"]
    assert manifest["precision"] == "int8" and q["method"] == "qat"
    assert [a["step"] for a in q["attempts"]] == ["quantization-aware training"] == [q["chosen"]]
    facts = q["attempts"][0]["settings"]
    assert facts["steps"] == 6 and facts["fake_quantize"] > 0 and facts["format"].startswith("OpenVINO IR")
    model = ov.Core().read_model(str(out / "model.xml"))
    types = {op.get_type_name() for op in model.get_ops()}
    assert {"FakeQuantize", "Convolution"} <= types
    int8_weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                    and op.get_element_type() == ov.Type.i8 and op.get_output_partial_shape(0).rank.get_length() == 4]
    assert int8_weights, "convolution weights are stored as int8"
    assert q["int8_bytes"] < 0.45 * q["fp32_bytes"]
    verification = manifest["verification"]
    assert verification["n"] > 0 and np.isfinite(verification["max_abs_diff"])
