"""TFLite bundles: litert-torch export (fp32 and fp16) of the tiny image run and the MiniLM text run, the
ai-edge-litert engine at any batch size and sequence length, and refusals. Real models, no mocks.

Each export converts with litert-torch: about 30 s for the image run and 50 s for the text run (three
signatures: 16, 32 and 48 tokens) on 2 busy cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import LABELS, format_fixtures, predict_in_fresh_python

from edgetl.errors import ConfigError, DataError, ExportError, RunFolderError
from edgetl.fsutil import read_json
from edgetl.runfolder import load_run
from edgetl.runtime import Bundle
from edgetl.verify import torch_reference

REVIEWS = ["A warm, funny and beautifully acted film.", "Dull, overlong and badly written.", "fine"]
LONG_REVIEW = " ".join(["surprisingly tender"] * 60)  # truncated to the run's 48 tokens


@pytest.fixture(scope="module")
def run_dir(image_run: Path) -> Path:
    return image_run  # conftest: the tiny MobileNetV3-Small run


image_fp32, image_fp16, text_fp32, text_fp16 = format_fixtures("tflite")


def _images(run_dir: Path) -> list[Path]:
    return sorted((run_dir.parent / "images").rglob("*.png"))


@pytest.mark.slow
def test_image_bundle_is_nhwc_and_verified(image_fp32: Path, run_dir: Path) -> None:
    assert sorted(p.name for p in image_fp32.iterdir()) == ["edgetl.json", "model.tflite"]
    manifest = read_json(image_fp32 / "edgetl.json")
    assert (manifest["format"], manifest["precision"], manifest["model_file"]) == ("tflite", "fp32", "model.tflite")
    assert manifest["spec"]["layout"] == "NHWC" and manifest["spec"]["labels"] == list(LABELS)
    assert manifest["inputs"] == [{"name": "input", "shape": ["batch", 64, 64, 3], "dtype": "float32",
                                   "layout": "NHWC"}]
    v = manifest["verification"]
    assert v["n"] >= 3 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    assert v["limits"] == {"max_abs_diff": 1e-4, "min_agreement": 0.999, "max_accuracy_drop": None,
                           "max_rel_diff": None}
    artifact = manifest["artifact"]
    assert artifact["route"] == "litert-torch" and artifact["batch"].startswith("fixed 1")
    assert artifact["weights"] == "float32" and artifact["litert_torch_version"]
    assert load_run(run_dir).spec.layout == "NCHW"  # the run itself is untouched


@pytest.mark.slow
def test_image_fp16_is_smaller_and_agrees(image_fp16: Path, image_fp32: Path) -> None:
    manifest = read_json(image_fp16 / "edgetl.json")
    v = manifest["verification"]
    assert manifest["precision"] == "fp16" and v["max_abs_diff"] <= 1e-2 and v["top1_agreement"] >= 0.995
    assert v["limits"] == {"max_abs_diff": 1e-2, "min_agreement": 0.995, "max_accuracy_drop": None,
                           "max_rel_diff": None}
    assert manifest["artifact"]["weights"].startswith("float16") and manifest["artifact"]["compute"] == "float32"
    fp16 = manifest["artifact"]["fp16"]  # the earliest weights stay float32 where the parity target needs them
    assert 0 <= fp16["kept_fp32"] < fp16["weight_ops"] and fp16["bytes"] == (image_fp16 / "model.tflite").stat().st_size
    assert fp16["bytes"] < fp16["fp32_bytes"] == (image_fp32 / "model.tflite").stat().st_size


@pytest.mark.slow
def test_cast_fp16_keeps_the_first_weight_ops_float32(image_fp32: Path, tmp_path: Path) -> None:
    from edgetl.export.tflite import EXPORTER

    src = image_fp32 / "model.tflite"
    n = EXPORTER.fp16_weight_ops(src)
    sizes = {}
    for keep in (0, n // 2, n):
        EXPORTER.cast_fp16(src, tmp_path / f"{keep}.tflite", keep=keep)
        sizes[keep] = (tmp_path / f"{keep}.tflite").stat().st_size
    assert sizes[0] < 0.6 * src.stat().st_size  # every weight float16
    # (the first few ops' weights are too small to show: a cast adds a DEQUANTIZE op and tensor beside each)
    assert sizes[0] < sizes[n // 2] < sizes[n] and abs(sizes[n] - src.stat().st_size) < 0.02 * src.stat().st_size


@pytest.mark.slow
def test_image_predict_any_batch_matches_torch(image_fp32: Path, run_dir: Path) -> None:
    bundle = Bundle.load(image_fp32, threads=1)
    reference = torch_reference(load_run(run_dir).model(), bundle.spec)  # NHWC in, like the bundle
    paths = _images(run_dir)[::4]
    inputs = bundle.preprocess(paths)
    assert inputs.shape == (len(paths), 64, 64, 3) and len(paths) >= 5
    np.testing.assert_allclose(bundle.logits(inputs), reference(inputs), atol=1e-4)
    np.testing.assert_allclose(bundle.logits(inputs[:1]), reference(inputs[:1]), atol=1e-4)
    assert bundle.logits(inputs[:0]).shape == (0, len(LABELS))
    preds = bundle.predict(paths, top_k=2, batch_size=4)  # chunks of 4 and 2
    assert len(preds) == len(paths) and all(len(p) == 2 and p[0].label in LABELS for p in preds)
    assert [p[0].label for p in preds] == [LABELS[i] for i in reference(inputs).argmax(1)]
    assert bundle.predict(paths[0])[0].label == preds[0][0].label


@pytest.mark.slow
def test_image_engine_refuses_inputs_that_do_not_fit(image_fp32: Path) -> None:
    bundle = Bundle.load(image_fp32)
    with pytest.raises(DataError, match=r"input 'input' of shape \(2, 3, 64, 64\)"):
        bundle.logits(np.zeros((2, 3, 64, 64), np.float32))  # NCHW where NHWC is expected
    with pytest.raises(DataError, match="does not fit"):
        bundle.logits(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(DataError, match="missing"):
        bundle.logits({"pixels": np.zeros((1, 64, 64, 3), np.float32)})


@pytest.mark.slow
def test_corrupt_or_truncated_tflite_refused(image_fp32: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(image_fp32, tmp_path / "copy"))
    model = folder / "model.tflite"
    data = model.read_bytes()
    for broken in (data[: len(data) // 3], b"not a flatbuffer" * 64, b""):
        model.write_bytes(broken)
        with pytest.raises(RunFolderError, match="cannot load") as info:
            Bundle.load(folder)
        assert "re-export" in info.value.hint and "\n" not in info.value.one_line()
    model.unlink()
    with pytest.raises(RunFolderError, match="missing"):
        Bundle.load(folder)


@pytest.mark.slow
def test_text_bundle_has_one_signature_per_length_and_is_verified(text_fp32: Path, text_run) -> None:
    manifest = read_json(text_fp32 / "edgetl.json")
    assert manifest["format"] == "tflite" and manifest["spec"]["max_length"] == 48
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["artifact"]["sequence_lengths"] == [16, 32, 48]
    assert (text_fp32 / "tokenizer" / "tokenizer.json").is_file()
    v = manifest["verification"]
    assert v["n"] >= 20 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    assert v["artifact_accuracy"] == v["reference_accuracy"] == pytest.approx(text_run[1]["test"]["accuracy"])
    engine = Bundle.load(text_fp32).engine
    assert engine.sequence_lengths == [16, 32, 48] and [s.key for s in engine.signatures] == [
        "seq_16", "seq_32", "seq_48"]


@pytest.mark.slow
def test_text_predict_strings_of_any_length_matches_torch(text_fp32: Path, text_run) -> None:
    bundle = Bundle.load(text_fp32)
    run = load_run(text_run[0])
    reference = torch_reference(run.model(), run.spec)
    lengths = set()
    for texts in (REVIEWS, REVIEWS[2:], ["a quiet and lovely film that " * 4], [LONG_REVIEW, "ok"]):
        inputs = bundle.preprocess(texts)
        lengths.add(inputs["input_ids"].shape[1])
        np.testing.assert_allclose(bundle.logits(inputs), reference(inputs), atol=1e-4)  # padded to a signature
    assert min(lengths) < 16 and max(lengths) == 48 and any(16 < n < 32 for n in lengths)
    preds = bundle.predict([*REVIEWS, LONG_REVIEW], top_k=2)
    assert len(preds) == 4 and all({p.label for p in row} == set(run.spec.labels) for row in preds)


@pytest.mark.slow
def test_text_engine_refuses_what_does_not_fit(text_fp32: Path) -> None:
    engine = Bundle.load(text_fp32).engine
    ids = np.ones((2, 49), np.int64)
    with pytest.raises(DataError, match="49 tokens is longer than the model's longest signature") as info:
        engine.run({"input_ids": ids, "attention_mask": ids})
    assert "truncate" in info.value.hint
    with pytest.raises(DataError, match=r"'attention_mask' of shape .* does not match 'input_ids'"):
        engine.run({"input_ids": ids[:, :8], "attention_mask": ids[:, :7]})
    with pytest.raises(DataError, match=r"'input_ids' of shape \(8,\) does not fit"):
        engine.run({"input_ids": ids[0, :8], "attention_mask": ids[0, :8]})
    with pytest.raises(DataError, match="missing"):
        engine.run({"input_ids": ids[:, :8]})


@pytest.mark.slow
def test_text_fp16_meets_default_limits_and_is_smaller(text_fp16: Path, text_fp32: Path) -> None:
    manifest = read_json(text_fp16 / "edgetl.json")
    v = manifest["verification"]
    assert manifest["precision"] == "fp16" and v["top1_agreement"] >= 0.995
    assert v["max_abs_diff"] <= 1e-2  # MiniLM's fp16 weights move its logits by about 1e-3
    assert v["limits"] == {"max_abs_diff": 1e-2, "min_agreement": 0.995, "max_accuracy_drop": None,
                           "max_rel_diff": None}
    assert manifest["artifact"]["fp16"]["kept_fp32"] == 0  # every weight float16: already within the target
    assert (text_fp16 / "model.tflite").stat().st_size < 0.6 * (text_fp32 / "model.tflite").stat().st_size
    preds = Bundle.load(text_fp16).predict(REVIEWS)
    assert [p[0].label for p in preds] == [p[0].label for p in Bundle.load(text_fp32).predict(REVIEWS)]


@pytest.mark.slow
def test_runtime_needs_neither_torch_nor_tensorflow(image_fp32: Path, text_fp32: Path, run_dir: Path) -> None:
    image = predict_in_fresh_python(image_fp32, _images(run_dir)[:3])
    text = predict_in_fresh_python(text_fp32, REVIEWS)
    assert image["heavy"] == text["heavy"] == [] and len(image["preds"]) == 3 and len(text["preds"]) == 3


@pytest.mark.slow
def test_litert_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A model litert-torch cannot lower (its FFT lowering infers a wrong shape) fails with the first cause."""
    import torch

    from edgetl.export.tflite import EXPORTER
    from edgetl.spec import ModelSpec

    class Spectrum(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x.mean((2, 3))).abs()

    spec = EXPORTER.bundle_spec(ModelSpec(labels=LABELS, input_size=(8, 8)))
    with pytest.raises(ExportError, match="litert-torch failed: MLIRError") as info:  # the onnx2tf route: its own tests
        EXPORTER.with_route("litert-torch").convert(Spectrum(), spec, tmp_path / "model.tflite")
    assert "--tflite-route onnx2tf" in info.value.hint and "\n" not in info.value.one_line()
    assert not (tmp_path / "model.tflite").exists()


def test_static_int8_without_calibration_refused_before_any_work(image_run: Path, tmp_path: Path) -> None:
    from edgetl.export import export
    from edgetl.export.tflite import EXPORTER

    with pytest.raises(ConfigError, match="needs calibration data") as info:
        export(image_run, "tflite", tmp_path / "b", precision="int8", method="static")
    assert "--calib" in info.value.hint
    assert not (tmp_path / "b").exists()
    assert EXPORTER.precisions == ("fp32", "fp16", "int8")


def test_sequence_lengths_are_clipped_to_max_length() -> None:
    from edgetl.export.tflite import sequence_lengths

    assert sequence_lengths(48) == [16, 32, 48]
    assert sequence_lengths(128) == [16, 32, 64, 128]
    assert sequence_lengths(10) == [10]


def test_missing_model_file_refused_by_engine(tmp_path: Path) -> None:
    from edgetl.runtime.tflite_engine import TFLiteEngine

    with pytest.raises(RunFolderError, match="not found"):
        TFLiteEngine(tmp_path / "model.tflite")
    with pytest.raises(ConfigError, match="threads"):
        TFLiteEngine(tmp_path / "model.tflite", threads=0)


@pytest.mark.slow
def test_bench_rows_say_how_fixed_shapes_really_run(text_fp32: Path, image_fp32: Path) -> None:
    from edgetl.bench import bench_bundle
    from edgetl.bench.targets import TargetProfile

    tiny = TargetProfile(name="tiny", engines=("ai-edge-litert",), threads=(1,), batch_sizes=(1, 2),
                         text_batch_sizes=(1, 2), seq_lengths=(8, 16), warmup=1, min_runs=3, min_time_s=0.02)
    text = {(r["batch"], r["seq_len"]): r["note"] for r in bench_bundle(text_fp32, tiny, progress=False)["rows"]}
    assert text[1, 16] is None  # exactly a signature's length, one sample: runs as given
    assert text[1, 8] == "runs padded to 16 tokens (seq_16)"
    assert text[2, 8] == "runs padded to 16 tokens (seq_16); batch 2 runs as 2 calls of 1"
    image = {r["batch"]: r["note"] for r in bench_bundle(image_fp32, tiny, progress=False)["rows"]}
    assert image == {1: None, 2: "batch 2 runs as 2 calls of 1"}
