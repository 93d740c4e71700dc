"""INT8 export through the accuracy ladder, on a small MobileNetV3-Small run (``builders.make_run``).

The run is random-init with re-estimated batch-norm statistics: its logits are varied and its decisions
stable, so top-1 agreement with the FP32 artifact (which every rung must keep >= 95%) is a meaningful
measure even where accuracy is not.

Covers: static ONNX INT8 from a calibration set (QDQ graph, smaller, recorded in edgetl.json, timed against
FP32); the ladder moving past calibration methods to keeping sensitive layers in float on a model built to
break per-tensor activation quantization; FP32 kept (and said) when no rung meets the budget; the CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetl.fsutil import read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory) -> Path:
    """MobileNetV3-Small at 64 px on 3 classes x 60 images (6 validation images per class)."""
    from builders import make_run

    return make_run(tmp_path_factory.mktemp("ladder"), per_class=60)


@pytest.fixture(scope="module")
def calib(fmnist_run: Path):
    from edgetl.quantize.calibration import CalibrationRecipe, calibration_for_run

    return calibration_for_run(fmnist_run, CalibrationRecipe(samples=128), progress=False)


def make_sensitive(run_dir: Path, out: Path, scale: float = 1000.0) -> Path:
    """A copy of a MobileNetV3-Small run computing the same function, with every other channel of one
    activation scaled up ``scale`` times (and scaled back by the next batch norm's statistics).

    ReLU is positively homogeneous and the depthwise convolution after it is linear per channel, so FP32
    predictions do not change; but a per-tensor INT8 range set by the big channels crushes the small ones,
    whatever the calibration method: only keeping that tensor in float recovers the accuracy.
    """
    from safetensors.numpy import load_file, save_file

    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("calibration"))
    weights = load_file(out / "weights.safetensors")
    expand, depthwise = "backbone.blocks.2.block.0.1.", "backbone.blocks.2.block.1.1."
    for key in ("weight", "bias"):
        weights[expand + key][::2] *= scale
    weights[depthwise + "running_mean"][::2] *= scale
    weights[depthwise + "running_var"][::2] *= scale * scale
    save_file(weights, out / "weights.safetensors")
    return out


def test_static_onnx_int8_bundle(fmnist_run: Path, calib, tmp_path: Path) -> None:
    import onnx

    from edgetl.export import export
    from edgetl.runtime import Bundle

    fp32 = export(fmnist_run, "onnx", tmp_path / "fp32", progress=False)
    # 18 validation and 18 test images and a random-init model's small margins: one flipped decision is 5.6%
    bundle = export(fmnist_run, "onnx", tmp_path / "int8", precision="int8", calib=calib.path, progress=False,
                    min_agreement=0.8, max_accuracy_drop=20)
    manifest = read_json(bundle / "edgetl.json")
    q, v = manifest["quantization"], manifest["verification"]
    assert manifest["precision"] == "int8" and q["method"] == "static" and q["chosen"] == q["attempts"][0]["step"]
    assert q["attempts"][0]["settings"]["calibration"] == "minmax" and q["budget_points"] == 20
    assert q["validation_samples"] >= 15 and q["attempts"][0]["drop"] <= 20
    assert set(q["speed"]) == {"fp32_ms", "int8_ms", "speedup", "faster"} and q["speed"]["int8_ms"] > 0
    assert q["int8_bytes"] < 0.5 * q["fp32_bytes"]
    assert (bundle / "model.onnx").stat().st_size < 0.5 * (fp32 / "model.onnx").stat().st_size
    ops = {n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert v["top1_agreement"] >= 0.8
    data = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    assert Bundle.load(bundle).predict(data)[0].label in manifest["spec"]["labels"]


def test_ladder_keeps_sensitive_layers_float_when_calibration_cannot_help(fmnist_run, tmp_path: Path) -> None:
    from edgetl.export import export
    from edgetl.quantize.calibration import CalibrationRecipe, calibration_for_run

    run = make_sensitive(fmnist_run, tmp_path / "sensitive")
    calib = calibration_for_run(run, CalibrationRecipe(samples=128), progress=False)
    # agreement with FP32 is what separates the rungs here (accuracy of a random-init model is noise)
    bundle = export(run, "onnx", tmp_path / "int8", precision="int8", calib=calib.path, progress=False,
                    min_agreement=0.85, max_accuracy_drop=20)
    q = read_json(bundle / "edgetl.json")["quantization"]
    steps = [a["step"] for a in q["attempts"]]
    assert steps[:3] == [f"static, per-channel, {m}" for m in ("minmax", "percentile", "entropy")]
    assert not any(a["ok"] for a in q["attempts"][:3]) and all(a["agreement"] < 0.9 for a in q["attempts"][:3])
    kept = next(a for a in q["attempts"] if a["ok"])  # the first rung within the budget on validation
    assert "sensitive layers float" in kept["step"] and kept["agreement"] >= 0.85
    assert any("blocks.2/block/block.1" in name for name in kept["settings"]["excluded"])
    # 18 test images of a random-init model: the test-split check may still flip a decision or three
    assert q["chosen"] == kept["step"] or "not on the test split" in q["declined"]


def test_no_rung_within_budget_declines_int8(fmnist_run, tmp_path: Path) -> None:
    """The front end itself, on 128 labelled calibration images: no rung matches FP32 on every one of them."""
    from edgetl.export.onnx import EXPORTER
    from edgetl.quantize.calibration import CalibrationRecipe, calibration_for_run
    from edgetl.quantize.frontend import quantize_artifact
    from edgetl.runfolder import load_run

    run = load_run(make_sensitive(fmnist_run, tmp_path / "sensitive", scale=1e5))
    calib = calibration_for_run(run, CalibrationRecipe(samples=128), progress=False)
    fp32 = tmp_path / "model.onnx"
    EXPORTER.convert(run.model(), run.spec, fp32)
    result, kept, facts = quantize_artifact(
        "onnx", fp32, method="static", text=False, calib=calib.batches(run.spec),
        validation=calib.labelled_batches(run.spec), budget=0.0, min_agreement=1.0,
        predictor=EXPORTER.predictor, workdir=tmp_path / "ladder")
    if kept is not None:  # a rung matched FP32 on all 128 images: the budget did hold
        pytest.skip(f"{result.attempts[result.chosen].step} matched FP32 on every image")
    assert facts is None and result.chosen is None and len(result.attempts) >= 4
    assert "kept FP32" in result.declined and "best was" in result.declined
    assert result.to_dict()["declined"] == result.declined and result.validation_samples == len(calib)


def test_cli_calibrate_then_export_int8_prints_the_ladder(fmnist_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgetl.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", "--run", str(fmnist_run), "--samples", "64",
                                  "--out", str(tmp_path / "calib")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["export", str(fmnist_run), "--format", "onnx", "--precision", "int8",
                                  "--calib", str(tmp_path / "calib"), "--max-accuracy-drop", "20",
                                  "--min-agreement", "0.8", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "INT8 ladder" in result.stdout and "static, per-channel, minmax" in result.stdout
    assert ("kept" in result.stdout and "vs FP32" in result.stdout) or "INT8 declined" in result.stdout
    result = runner.invoke(main, ["export", str(fmnist_run), "--precision", "int8", "--calib",
                                  str(tmp_path / "missing"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "edgetl calibrate" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()


def test_recipe_export_keeps_the_faster_artifact_that_meets_the_budget(fmnist_run: Path, tmp_path: Path) -> None:
    from edgetl.pipeline import ExportStage, export_stage

    work = tmp_path / "work"
    shutil.copytree(fmnist_run, work / "run")
    out = export_stage(work / "run", ExportStage(precision="int8", max_accuracy_drop=20.0), work / "bundle-onnx")
    assert (work / "calibration" / "calibration.json").is_file()  # made from the run's training split
    q = read_json(work / "bundle-onnx-int8" / "edgetl.json")["quantization"]
    int8_usable = not q["declined"]
    int8_pays = int8_usable and q["speed"]["faster"]
    assert read_json(out / "edgetl.json")["precision"] == ("int8" if int8_pays else "fp32")
    kept = export_stage(work / "run", ExportStage(precision="int8", max_accuracy_drop=20.0, prefer_faster=False),
                        work / "bundle-b")
    assert read_json(kept / "edgetl.json")["precision"] == ("int8" if int8_usable else "fp32")
