"""TFLite INT8 with ai-edge-quantizer: dynamic range and full integer, on the shared image and text runs' FP32
TFLite bundles. Real models, no mocks: each quantized file runs in the ai-edge-litert engine beside its FP32
twin, on the same preprocessed inputs.

The image model is the tiny random-init MobileNetV3-Small (3 classes, 24 images, each also mirrored); the text
model is MiniLM-L6 (max length 48, so signatures ``seq_16``, ``seq_32``, ``seq_48``) on Rotten Tomatoes.
Agreement bounds are loose on purpose (the text model's logits are close: a tenth of its test texts have a
margin below 0.16), the figures are printed (``pytest -s``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgetl.errors import ConfigError, DataError, ExportError
from edgetl.fsutil import read_json
from edgetl.quantize.tflite_int8 import int8_tensor_share, quantize_dynamic, quantize_static
from edgetl.runfolder import load_run
from edgetl.runtime.text import load_tokenizer, tokenize
from edgetl.runtime.tflite_engine import TFLiteEngine
from edgetl.spec import ModelSpec
from edgetl.verify import _batch

CALIB_TEXTS = 64


@pytest.fixture(scope="module")
def image_fp32(exported) -> Path:
    return exported("image", "tflite", "fp32")


@pytest.fixture(scope="module")
def text_fp32(exported) -> Path:
    return exported("text", "tflite", "fp32")


@pytest.fixture(scope="module")
def images(image_fp32: Path, image_run: Path) -> dict[str, np.ndarray]:
    """NHWC inputs per the bundle's spec: ``calib`` (the train split and its mirror) and ``all`` (every split)."""
    spec = ModelSpec.from_dict(read_json(image_fp32 / "edgetl.json")["spec"])
    assert spec.layout == "NHWC"
    data = load_run(image_run).data()
    splits = {name: _batch(split, spec, range(len(split))) for name, split in data.splits().items()}
    train = splits["train"]
    everything = np.concatenate(list(splits.values()))
    return {
        "calib": np.concatenate([train, train[:, :, ::-1]]),
        "all": np.concatenate([everything, everything[:, :, ::-1]]),
    }


@pytest.fixture(scope="module")
def texts(text_fp32: Path, text_run) -> dict:
    """Token batches per the bundle's spec: ``calib`` (two batches of 32 train texts), ``each`` (every text not used
    for calibration, tokenized alone: it runs at its own length in the smallest signature that holds it) and
    their ``labels``."""
    spec = ModelSpec.from_dict(read_json(text_fp32 / "edgetl.json")["spec"])
    tokenizer = load_tokenizer(text_fp32 / "tokenizer")
    data = load_run(text_run[0]).data()
    train = data.train.texts
    calib = [tokenize(tokenizer, train[i : i + 32], spec.max_length)[0] for i in range(0, CALIB_TEXTS, 32)]
    rest = [*train[CALIB_TEXTS:], *data.val.texts, *data.test.texts]
    labels = np.concatenate([data.train.labels[CALIB_TEXTS:], data.val.labels, data.test.labels])
    each = [tokenize(tokenizer, [text], spec.max_length)[0] for text in rest]
    return {"calib": calib, "each": each, "labels": labels}


@pytest.fixture(scope="module")
def image_static(image_fp32: Path, images, tmp_path_factory) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("tflite-int8") / "image_static.tflite"
    started = time.perf_counter()
    facts = quantize_static(image_fp32 / "model.tflite", dst, [images["calib"][:20], images["calib"][20:]])
    print(f"\nimage static: {time.perf_counter() - started:.1f} s")
    return dst, facts


@pytest.fixture(scope="module")
def text_static(text_fp32: Path, texts, tmp_path_factory) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("tflite-int8") / "text_static.tflite"
    started = time.perf_counter()
    facts = quantize_static(text_fp32 / "model.tflite", dst, texts["calib"])
    print(f"\ntext static: {time.perf_counter() - started:.1f} s")
    return dst, facts


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    assert candidate.shape == reference.shape and np.isfinite(candidate).all()
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)))


def _size_ratio(dst: Path, src: Path) -> float:
    return dst.stat().st_size / src.stat().st_size


def _run_each(path: Path, each: list[dict[str, np.ndarray]]) -> np.ndarray:
    engine = TFLiteEngine(path, threads=1)
    return np.concatenate([engine.run(inputs) for inputs in each])


@pytest.mark.slow
def test_image_dynamic_is_smaller_and_agrees(image_fp32: Path, images, tmp_path: Path) -> None:
    src, dst = image_fp32 / "model.tflite", tmp_path / "dynamic.tflite"
    started = time.perf_counter()
    facts = quantize_dynamic(src, dst)
    seconds = time.perf_counter() - started
    assert facts["tool"].startswith("ai-edge-quantizer ") and facts["method"] == "dynamic"
    assert (facts["weights"], facts["activations"]) == ("int8", "float32")
    assert facts["int8_share"] == pytest.approx(int8_tensor_share(dst), abs=1e-4) and facts["int8_share"] > 0.9
    assert int8_tensor_share(src) == 0.0
    engine = TFLiteEngine(dst)
    assert engine.signatures[0].inputs == TFLiteEngine(src).signatures[0].inputs  # float32 NHWC, batch 1
    agreement = _agreement(TFLiteEngine(src).run(images["all"]), engine.run(images["all"]))
    ratio = _size_ratio(dst, src)
    print(
        f"\nimage dynamic: {seconds:.1f} s, size {ratio:.2f}x, top-1 agreement {agreement:.1%} on {len(images['all'])}"
    )
    assert ratio < 0.4 and agreement >= 0.8


@pytest.mark.slow
def test_image_static_is_int8_inside_float_outside(image_static, image_fp32: Path, images) -> None:
    dst, facts = image_static
    src = image_fp32 / "model.tflite"
    assert facts["method"] == "static" and (facts["weights"], facts["activations"]) == ("int8", "int8")
    assert facts["calibration_samples"] == len(images["calib"]) and facts["signatures"] == ["serving_default"]
    assert facts["float_ops"] == 0 and facts["excluded"] == [] and facts["int8_share"] > 0.9
    engine = TFLiteEngine(dst)
    details = engine.interpreter.get_tensor_details()
    int8_tensors = sum(d["dtype"] == np.int8 for d in details)
    assert int8_tensors > len(details) / 2  # activations too, not only weights
    signature = engine.signatures[0]
    assert signature.inputs == {"input": ((1, 64, 64, 3), np.float32)}
    assert signature.runner.get_output_details()["logits"]["dtype"] == np.float32
    agreement = _agreement(TFLiteEngine(src).run(images["all"]), engine.run(images["all"]))
    ratio = _size_ratio(dst, src)
    print(
        f"\nimage static: size {ratio:.2f}x, int8 tensors {int8_tensors}/{len(details)}, "
        f"top-1 agreement {agreement:.1%} on {len(images['all'])}"
    )
    assert ratio < 0.4 and agreement >= 0.8


@pytest.mark.slow
def test_image_static_int16_activations(image_fp32: Path, images, tmp_path: Path) -> None:
    src, dst = image_fp32 / "model.tflite", tmp_path / "a16w8.tflite"
    facts = quantize_static(src, dst, [images["calib"]], activations="int16")
    assert facts["activations"] == "int16" and facts["int8_share"] > 0.9
    details = TFLiteEngine(dst).interpreter.get_tensor_details()
    assert any(d["dtype"] == np.int16 for d in details)
    agreement = _agreement(TFLiteEngine(src).run(images["all"]), TFLiteEngine(dst).run(images["all"]))
    print(f"\nimage a16w8: size {_size_ratio(dst, src):.2f}x, top-1 agreement {agreement:.1%}")
    assert agreement >= 0.9


@pytest.mark.slow
def test_image_static_exclude_ops_keeps_those_ops_float(image_fp32: Path, images, image_static, tmp_path: Path):
    src, dst = image_fp32 / "model.tflite", tmp_path / "head_float.tflite"
    # compact=False: the check below finds the head's tensors by their litert-torch names
    facts = quantize_static(src, dst, [images["calib"]], exclude_ops=["ClassifierHead_head"], compact=False)
    assert facts["excluded"] == ["ClassifierHead_head"] and facts["float_ops"] >= 1
    float_weights = [
        d
        for d in TFLiteEngine(dst).interpreter.get_tensor_details()
        if "ClassifierHead_head" in d["name"] and d["dtype"] == np.float32 and len(d["shape"]) == 2
    ]
    assert float_weights  # the head's fully connected weights stayed float32
    assert facts["int8_share"] < image_static[1]["int8_share"]
    agreement = _agreement(TFLiteEngine(src).run(images["all"]), TFLiteEngine(dst).run(images["all"]))
    assert agreement >= 0.8


@pytest.mark.slow
def test_image_static_refuses_calibration_that_does_not_fit(image_fp32: Path, images, tmp_path: Path) -> None:
    nchw = images["calib"][:4].transpose(0, 3, 1, 2)
    with pytest.raises(DataError, match=r"does not fit input 'input'") as info:
        quantize_static(image_fp32 / "model.tflite", tmp_path / "x.tflite", [nchw])
    assert "NHWC" in info.value.hint
    with pytest.raises(DataError, match="lack input"):
        quantize_static(image_fp32 / "model.tflite", tmp_path / "x.tflite", [{"pixels": images["calib"][:2]}])


@pytest.mark.slow
def test_text_static_calibrates_and_runs_every_signature(text_static, text_fp32: Path, texts) -> None:
    dst, facts = text_static
    src = text_fp32 / "model.tflite"
    assert facts["signatures"] == ["seq_16", "seq_32", "seq_48"] and facts["calibration_samples"] == CALIB_TEXTS
    assert facts["float_ops"] > 0  # the attention-mask arithmetic stays float (see the module notes)
    assert facts["int8_share"] > 0.9
    engine = TFLiteEngine(dst)
    assert [s.key for s in engine.signatures] == ["seq_16", "seq_32", "seq_48"]
    for signature in engine.signatures:  # int32 tokens in, float32 logits out, as in the FP32 file
        assert {name: dtype for name, (_, dtype) in signature.inputs.items()} == {
            "input_ids": np.int32,
            "attention_mask": np.int32,
        }
        assert signature.runner.get_output_details()["logits"]["dtype"] == np.float32
    # every signature, on every text that fits it padded to its length (the fp32 file pads the same way)
    fp32_engine, per_signature = TFLiteEngine(src, threads=1), {}
    for signature in engine.signatures:
        length = int(signature.length)
        fitting = [x for x in texts["each"] if x["input_ids"].shape[1] <= length]
        padded = [{k: np.pad(v, ((0, 0), (0, length - v.shape[1]))) for k, v in x.items()} for x in fitting]
        fp32 = np.concatenate([fp32_engine.run(x) for x in padded])
        int8 = np.concatenate([engine.run(x) for x in padded])
        per_signature[signature.key] = (len(padded), _agreement(fp32, int8), float(np.abs(fp32 - int8).mean()))
    print("\ntext static per signature (texts, top-1 agreement, mean |logit diff|):", per_signature)
    assert all(n >= 20 and agreement >= 0.8 and diff < 0.5 for n, agreement, diff in per_signature.values())
    # every other text at its own length: each signature is used
    used = {min(n for n in (16, 32, 48) if n >= x["input_ids"].shape[1]) for x in texts["each"]}
    assert used == {16, 32, 48}
    fp32, int8 = _run_each(src, texts["each"]), _run_each(dst, texts["each"])
    agreement = _agreement(fp32, int8)
    accuracy = (float(np.mean(fp32.argmax(1) == texts["labels"])), float(np.mean(int8.argmax(1) == texts["labels"])))
    ratio = _size_ratio(dst, src)
    print(
        f"\ntext static: size {ratio:.2f}x, top-1 agreement {agreement:.1%} on {len(fp32)}, "
        f"accuracy fp32 {accuracy[0]:.1%} int8 {accuracy[1]:.1%}"
    )
    # full-int8 BERT flips texts near the boundary (module notes: 82-89% agreement); this fixture's model is
    # trained for seconds, so many of its 176 texts are near it: the drop moved from 3.5 to 6.3 points (one
    # text is 0.57) with the training order alone. Agreement is the real check; accuracy guards a collapse.
    assert ratio < 0.4 and agreement >= 0.8 and accuracy[1] >= accuracy[0] - 0.1


@pytest.mark.slow
def test_text_dynamic_is_smaller_and_agrees(text_fp32: Path, texts, tmp_path: Path) -> None:
    src, dst = text_fp32 / "model.tflite", tmp_path / "dynamic.tflite"
    started = time.perf_counter()
    facts = quantize_dynamic(src, dst)
    seconds = time.perf_counter() - started
    assert facts["method"] == "dynamic" and facts["int8_share"] > 0.9
    assert [s.key for s in TFLiteEngine(dst).signatures] == ["seq_16", "seq_32", "seq_48"]
    agreement = _agreement(_run_each(src, texts["each"]), _run_each(dst, texts["each"]))
    ratio = _size_ratio(dst, src)
    print(f"\ntext dynamic: {seconds:.1f} s, size {ratio:.2f}x, top-1 agreement {agreement:.1%}")
    assert ratio < 0.4 and agreement >= 0.9


@pytest.mark.slow
def test_broken_or_truncated_src_is_an_export_error(image_fp32: Path, images, tmp_path: Path) -> None:
    data = (image_fp32 / "model.tflite").read_bytes()
    calib = [images["calib"][:2]]
    for name, content in (("truncated", data[: len(data) // 3]), ("garbage", b"not a flatbuffer" * 64), ("empty", b"")):
        src = tmp_path / f"{name}.tflite"
        src.write_bytes(content)
        for quantize in (
            lambda s: quantize_dynamic(s, tmp_path / "out.tflite"),
            lambda s: quantize_static(s, tmp_path / "out.tflite", calib),
        ):
            with pytest.raises(ExportError) as info:
                quantize(src)
            assert info.value.hint and "\n" not in info.value.one_line()
    with pytest.raises(ExportError, match="not found"):
        quantize_dynamic(tmp_path / "missing.tflite", tmp_path / "out.tflite")


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    src, dst = tmp_path / "missing.tflite", tmp_path / "out.tflite"
    calib = [np.zeros((1, 8, 8, 3), np.float32)]
    with pytest.raises(ConfigError, match="activation type 'int4'"):
        quantize_static(src, dst, calib, activations="int4")
    with pytest.raises(ConfigError, match="not a regular expression"):
        quantize_static(src, dst, calib, exclude_ops=["Linear_("])
    with pytest.raises(ConfigError, match="list of regular expressions"):
        quantize_static(src, dst, calib, exclude_ops="Linear")
    with pytest.raises(ExportError, match="needs calibration data") as info:
        quantize_static(src, dst, [])
    assert "edgetl calibrate" in info.value.hint
    with pytest.raises(ExportError, match="not found"):
        quantize_static(src, dst, calib)
