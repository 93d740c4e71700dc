"""The TFLite INT8 compaction: short internal names and shared quantization vectors, the same model.

Real files: the shared MobileNetV3-Small test run exported to TFLite and quantized to full INT8 by
ai-edge-quantizer; the compacted copy must compute bit-identical logits with the same interface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.fsutil import read_json
from edgetl.quantize.tflite_compact import compact_tflite
from edgetl.quantize.tflite_int8 import quantize_static
from edgetl.runfolder import load_run
from edgetl.runtime.tflite_engine import TFLiteEngine
from edgetl.spec import ModelSpec
from edgetl.verify import _batch


@pytest.fixture(scope="module")
def image_fp32(exported) -> Path:
    return exported("image", "tflite", "fp32")


def _interface(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = {k: interpreter.get_signature_runner(k) for k in interpreter.get_signature_list()}
    return {k: (sorted(d["name"] for d in r.get_input_details().values()),
                sorted(d["name"] for d in r.get_output_details().values())) for k, r in runner.items()} | {
        "inputs": [d["name"] for d in interpreter.get_input_details()],
        "outputs": [d["name"] for d in interpreter.get_output_details()]}


def _all_inputs(image_fp32: Path, image_run: Path) -> np.ndarray:
    """Every image of the run's splits, preprocessed as the bundle's spec says."""
    spec = ModelSpec.from_dict(read_json(image_fp32 / "edgetl.json")["spec"])
    data = load_run(image_run).data()
    return np.concatenate([_batch(split, spec, range(len(split))) for split in data.splits().values()])


def _assert_same_logits(first: Path, second: Path, x: np.ndarray) -> None:
    a, b = TFLiteEngine(first), TFLiteEngine(second)
    for i in range(0, len(x), 8):
        np.testing.assert_array_equal(a.run(x[i:i + 8]), b.run(x[i:i + 8]))


@pytest.mark.slow
def test_compacted_int8_file_is_smaller_and_bit_identical(image_fp32: Path, image_run: Path,
                                                           tmp_path: Path) -> None:
    from ai_edge_litert.tools import flatbuffer_utils

    x = _all_inputs(image_fp32, image_run)
    plain = tmp_path / "plain.tflite"
    facts = quantize_static(image_fp32 / "model.tflite", plain, [x], compact=False)
    assert facts["compacted_bytes"] == 0
    small = tmp_path / "small.tflite"
    small.write_bytes(plain.read_bytes())
    sizes = compact_tflite(small)
    assert sizes["bytes_before"] == plain.stat().st_size
    assert sizes["bytes_after"] == small.stat().st_size < 0.9 * sizes["bytes_before"]
    print(f"\nTFLite INT8 compaction: {sizes['bytes_before']} -> {sizes['bytes_after']} bytes")
    assert _interface(small) == _interface(plain)
    before = flatbuffer_utils.convert_bytearray_to_object(plain.read_bytes())
    after = flatbuffer_utils.convert_bytearray_to_object(small.read_bytes())
    assert [bytes(b.data) if b.data is not None else b"" for b in before.buffers] == \
           [bytes(b.data) if b.data is not None else b"" for b in after.buffers]
    for t0, t1 in zip(before.subgraphs[0].tensors, after.subgraphs[0].tensors, strict=True):
        assert (t0.type, list(t0.shape), t0.buffer) == (t1.type, list(t1.shape), t1.buffer)
        if t0.quantization is not None and t0.quantization.scale is not None:
            np.testing.assert_array_equal(t0.quantization.scale, t1.quantization.scale)
            np.testing.assert_array_equal(t0.quantization.zeroPoint, t1.quantization.zeroPoint)
    _assert_same_logits(plain, small, x)
    # quantize_static compacts by default, to the same bytes
    default = tmp_path / "default.tflite"
    assert quantize_static(image_fp32 / "model.tflite", default, [x])["compacted_bytes"] > 0
    assert default.read_bytes() == small.read_bytes()


@pytest.mark.slow
def test_dynamic_range_int8_is_compacted_too_with_the_same_logits(image_fp32: Path, image_run: Path,
                                                                  tmp_path: Path) -> None:
    from edgetl.quantize.tflite_int8 import quantize_dynamic

    x = _all_inputs(image_fp32, image_run)
    plain, small = tmp_path / "plain.tflite", tmp_path / "small.tflite"
    assert quantize_dynamic(image_fp32 / "model.tflite", plain, compact=False)["compacted_bytes"] == 0
    facts = quantize_dynamic(image_fp32 / "model.tflite", small)
    assert facts["compacted_bytes"] == plain.stat().st_size - small.stat().st_size > 0.1 * plain.stat().st_size
    assert _interface(small) == _interface(plain)
    _assert_same_logits(plain, small, x)


@pytest.fixture(scope="module")
def text_fp32(exported) -> Path:
    return exported("text", "tflite", "fp32")


@pytest.mark.slow
def test_compacted_text_model_is_bit_identical_in_every_signature(text_fp32: Path, text_run, tmp_path: Path) -> None:
    """Three signatures (one subgraph each), shared weight buffers: every signature computes the same logits."""
    from edgetl.runtime.text import load_tokenizer, tokenize

    spec = ModelSpec.from_dict(read_json(text_fp32 / "edgetl.json")["spec"])
    tokenizer = load_tokenizer(text_fp32 / "tokenizer")
    texts = load_run(text_run[0]).data().train.texts
    calib = [tokenize(tokenizer, texts[:32], spec.max_length)[0]]
    plain, small = tmp_path / "plain.tflite", tmp_path / "small.tflite"
    quantize_static(text_fp32 / "model.tflite", plain, calib, compact=False)
    small.write_bytes(plain.read_bytes())
    sizes = compact_tflite(small)
    print(f"\nTFLite text INT8 compaction: {sizes['bytes_before']} -> {sizes['bytes_after']} bytes")
    assert sizes["bytes_after"] < sizes["bytes_before"]
    assert _interface(small) == _interface(plain)
    a, b = TFLiteEngine(plain), TFLiteEngine(small)
    for text in texts[32:64]:
        for length in (16, 32, 48):
            feed = tokenize(tokenizer, [text], length)[0]
            feed = {k: np.pad(v, ((0, 0), (0, length - v.shape[1]))) for k, v in feed.items()}
            np.testing.assert_array_equal(a.run(feed), b.run(feed))
