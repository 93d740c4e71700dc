"""OpenVINO IR bundles: export (fp32 and fp16) of the tiny image run and the MiniLM text run, the OpenVINO
engine, and refusals of what it cannot load or do. Real models, real OpenVINO, no mocks.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from builders import LABELS, format_fixtures, predict_in_fresh_python

from edgetl.errors import ConfigError, DataError, RunFolderError
from edgetl.fsutil import read_json
from edgetl.runfolder import load_run
from edgetl.runtime import Bundle
from edgetl.verify import torch_reference

REVIEWS = ["A warm, funny and beautifully acted film.", "Dull, overlong and badly written.", "fine"]


@pytest.fixture(scope="module")
def run_dir(image_run: Path) -> Path:
    return image_run  # conftest: the tiny MobileNetV3-Small run


image_fp32, image_fp16, text_fp32, text_fp16 = format_fixtures("openvino")


def _image_paths(run_dir: Path) -> list[str]:
    return sorted(str(p) for p in (run_dir.parent / "images").rglob("*.png"))


def _constant_types(xml_path: Path) -> set[str]:
    """The element types of the IR's floating-point Constant layers (its stored weights)."""
    root = ET.parse(xml_path).getroot()
    types = {layer.find("data").get("element_type") for layer in root.iter("layer") if layer.get("type") == "Const"}
    return {t for t in types if t.startswith(("f", "bf"))}


@pytest.mark.slow
def test_image_fp32_bundle_is_verified_ir(image_fp32: Path) -> None:
    assert sorted(p.name for p in image_fp32.iterdir()) == ["edgetl.json", "model.bin", "model.xml"]
    manifest = read_json(image_fp32 / "edgetl.json")
    assert (manifest["format"], manifest["precision"], manifest["model_file"]) == ("openvino", "fp32", "model.xml")
    assert manifest["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    artifact = manifest["artifact"]
    assert artifact["route"] == "torch -> onnx -> openvino" and artifact["weights"] == "fp32"
    assert artifact["openvino_version"].startswith("20")
    v = manifest["verification"]
    assert v["n"] >= 3 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    assert v["limits"] == {"max_abs_diff": 1e-4, "min_agreement": 0.999, "max_accuracy_drop": None,
                           "max_rel_diff": None}
    assert set(manifest["provenance"]["files_sha256"]) == {"model.xml", "model.bin"}


@pytest.mark.slow
def test_fp32_weights_stay_float32_and_fp16_halves_them(image_fp32: Path, image_fp16: Path) -> None:
    assert _constant_types(image_fp32 / "model.xml") == {"f32"}
    assert "f16" in _constant_types(image_fp16 / "model.xml")
    # the bundle keeps the earliest weights float32 where the parity target needs them: smaller, not half
    fp16 = read_json(image_fp16 / "edgetl.json")["artifact"]["fp16"]
    assert 0 <= fp16["kept_fp32"] < fp16["weight_ops"] and fp16["bytes"] < fp16["fp32_bytes"]
    assert (image_fp16 / "model.bin").stat().st_size < (image_fp32 / "model.bin").stat().st_size


@pytest.mark.slow
def test_cast_fp16_keeps_exactly_the_first_weights_float32(image_fp32: Path, tmp_path: Path) -> None:
    import openvino as ov

    from edgetl.export.openvino import EXPORTER, weight_constants

    src = image_fp32 / "model.xml"
    n = EXPORTER.fp16_weight_ops(src)
    sizes = {}
    for keep in (0, 3, n):
        dst = tmp_path / f"keep{keep}" / "model.xml"
        dst.parent.mkdir()
        EXPORTER.cast_fp16(src, dst, keep=keep)
        sizes[keep] = dst.with_suffix(".bin").stat().st_size
        left = weight_constants(ov, ov.Core().read_model(str(dst)))  # the float32 weights still there
        assert len(left) == keep
    assert 1.8 < (image_fp32 / "model.bin").stat().st_size / sizes[0] < 2.1  # every weight float16: half
    assert sizes[0] < sizes[3] < sizes[n] and sizes[n] == (image_fp32 / "model.bin").stat().st_size


@pytest.mark.slow
def test_image_fp16_bundle_parity(image_fp16: Path) -> None:
    manifest = read_json(image_fp16 / "edgetl.json")
    assert manifest["precision"] == "fp16" and manifest["artifact"]["weights"].startswith("fp16")
    v = manifest["verification"]
    assert v["max_abs_diff"] <= 1e-2 and v["top1_agreement"] >= 0.995
    limits = v["limits"]
    assert (limits["max_rel_diff"], limits["min_agreement"], limits["max_abs_diff"]) == (None, 0.995, 1e-2)


@pytest.mark.slow
def test_image_bundle_predicts_paths_and_matches_torch_at_any_batch(image_fp32: Path, run_dir: Path) -> None:
    bundle = Bundle.load(image_fp32)
    paths = _image_paths(run_dir)
    one = bundle.predict(paths[0], top_k=3)
    assert {p.label for p in one} == set(LABELS) and one[0].score >= one[1].score >= one[2].score
    assert len(bundle.predict(paths[:5])) == 5
    run = load_run(run_dir)
    reference = torch_reference(run.model(), run.spec)
    for batch in (paths[:1], paths[:7]):
        inputs = bundle.preprocess(batch)
        logits = bundle.logits(inputs)
        assert logits.dtype == np.float32 and logits.shape == (len(batch), len(LABELS))
        np.testing.assert_allclose(logits, reference(inputs), atol=1e-4)


@pytest.mark.slow
def test_engine_with_one_thread_gives_the_same_logits(image_fp32: Path) -> None:
    from edgetl.runtime.openvino_engine import OpenVINOEngine

    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    one = OpenVINOEngine(image_fp32 / "model.xml", threads=1)
    np.testing.assert_allclose(one.run(x), Bundle.load(image_fp32).logits(x), atol=1e-5)
    assert one.run(x.astype(np.float64)).dtype == np.float32  # inputs are cast to the model's dtype
    assert OpenVINOEngine.version().startswith("20")
    with pytest.raises(ConfigError, match="threads"):
        OpenVINOEngine(image_fp32 / "model.xml", threads=0)


@pytest.mark.slow
def test_engine_names_a_misshapen_or_missing_input(image_fp32: Path) -> None:
    from edgetl.runtime.openvino_engine import OpenVINOEngine

    engine = OpenVINOEngine(image_fp32 / "model.xml")
    with pytest.raises(DataError, match="'input' of shape"):
        engine.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match="'input' of shape"):
        engine.run(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(DataError, match="missing"):
        engine.run({"pixels": np.zeros((1, 3, 64, 64), np.float32)})


@pytest.mark.slow
def test_corrupt_or_missing_ir_is_refused(image_fp32: Path, tmp_path: Path) -> None:
    from edgetl.runtime.openvino_engine import OpenVINOEngine

    copy = Path(shutil.copytree(image_fp32, tmp_path / "b"))
    weights = (copy / "model.bin").read_bytes()
    (copy / "model.bin").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(RunFolderError, match="OpenVINO cannot load") as caught:
        OpenVINOEngine(copy / "model.xml")
    assert "re-export" in caught.value.hint and "\n" not in caught.value.message
    with pytest.raises(RunFolderError, match="OpenVINO cannot load"):
        Bundle.load(copy)
    (copy / "model.bin").write_bytes(weights)
    (copy / "model.xml").write_text("<net><layers><garbage", encoding="utf-8")
    with pytest.raises(RunFolderError, match="OpenVINO cannot load") as caught:
        OpenVINOEngine(copy / "model.xml")
    assert "\n" not in caught.value.message
    (copy / "model.bin").unlink()
    with pytest.raises(RunFolderError, match="not found"):
        OpenVINOEngine(copy / "model.xml")
    with pytest.raises(RunFolderError, match="not found"):
        OpenVINOEngine(tmp_path / "none.xml")


def test_int8_without_calibration_and_bad_options_are_refused_before_any_work(image_run: Path, tmp_path: Path) -> None:
    from edgetl.export import export
    from edgetl.export.openvino import EXPORTER

    with pytest.raises(ConfigError, match="needs calibration data") as caught:  # NNCF INT8 is static only
        export(image_run, "openvino", tmp_path / "b", precision="int8")
    assert "edgetl calibrate" in caught.value.hint
    with pytest.raises(ConfigError, match="no dynamic INT8"):
        export(image_run, "openvino", tmp_path / "b", precision="int8", method="dynamic")
    with pytest.raises(ConfigError, match="opset 13"):
        export(tmp_path / "no-run", "openvino", tmp_path / "b", opset=13)
    assert not (tmp_path / "b").exists()
    precisions = ("fp32", "fp16", "int8")
    assert (EXPORTER.format, EXPORTER.model_file, EXPORTER.precisions) == ("openvino", "model.xml", precisions)


@pytest.mark.slow
def test_text_bundles_carry_tokenizer_and_pass_parity(text_fp32: Path, text_fp16: Path) -> None:
    for bundle, limits in ((text_fp32, (1e-4, 0.999)), (text_fp16, (1e-2, 0.995))):
        names = sorted(p.name for p in bundle.iterdir())
        assert names == ["edgetl.json", "model.bin", "model.xml", "tokenizer"]
        assert (bundle / "tokenizer" / "tokenizer.json").is_file()
        manifest = read_json(bundle / "edgetl.json")
        assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
        v = manifest["verification"]
        assert v["n"] >= 20 and v["max_abs_diff"] <= limits[0] and v["top1_agreement"] >= limits[1]
        assert (v["limits"]["max_abs_diff"], v["limits"]["min_agreement"]) == limits
    assert _constant_types(text_fp32 / "model.xml") == {"f32"}
    assert (text_fp16 / "model.bin").stat().st_size < 0.6 * (text_fp32 / "model.bin").stat().st_size


@pytest.mark.slow
def test_text_logits_match_torch_at_any_batch_and_length(text_fp32: Path, text_run) -> None:
    run = load_run(text_run[0])
    reference = torch_reference(run.model(), run.spec)
    bundle = Bundle.load(text_fp32)
    long_text = " ".join(["surprisingly tender"] * 60)  # truncated to 48 tokens
    for texts in (REVIEWS, REVIEWS[:1], [long_text, "ok"], ["a", "b", "c", "d", "e"]):
        inputs = bundle.preprocess(texts)
        np.testing.assert_allclose(bundle.logits(inputs), reference(inputs), atol=1e-4)
    with pytest.raises(DataError, match="missing"):
        bundle.logits({"input_ids": inputs["input_ids"]})
    with pytest.raises(DataError, match="'attention_mask' of shape"):
        bundle.logits({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"][0]})


@pytest.mark.slow
def test_text_predict_from_raw_strings_without_torch(text_fp16: Path, text_run) -> None:
    """A fresh interpreter loads the fp16 bundle and predicts; torch and transformers are never imported."""
    out = predict_in_fresh_python(text_fp16, REVIEWS, top_k=2, threads=1)
    assert out["heavy"] == []
    labels = load_run(text_run[0]).spec.labels
    assert all(len(row) == 2 and {row[0][0], row[1][0]} == set(labels) for row in out["preds"])
    assert all(row[0][1] >= row[1][1] and abs(row[0][1] + row[1][1] - 1) < 1e-6 for row in out["preds"])


@pytest.mark.slow
def test_compact_ir_is_smaller_and_computes_the_same(image_fp32: Path, tmp_path: Path) -> None:
    import openvino as ov

    from edgetl.export.openvino_ir import KEEP_DIMS, save_compact, share_constants

    core = ov.Core()
    model = core.read_model(str(image_fp32 / "model.xml"))
    ov.save_model(model, str(tmp_path / "plain.xml"), compress_to_fp16=False)  # indented, every port's dims
    ops = ov.opset13
    x_in = ops.parameter([1, 4], ov.Type.f32)
    limits = np.arange(4, dtype=np.float32)  # two equal constants, as FakeQuantize's input and output limits
    tiny = ov.Model([ops.multiply(ops.add(x_in, ops.constant(limits)), ops.constant(limits.copy()))], [x_in])
    assert share_constants(tiny) == 1
    assert sum(op.get_type_name() == "Constant" for op in tiny.get_ordered_ops()) == 1
    save_compact(ov, core.read_model(str(tmp_path / "plain.xml")), tmp_path / "compact.xml")
    assert (tmp_path / "compact.xml").stat().st_size < 0.8 * (tmp_path / "plain.xml").stat().st_size
    root = ET.parse(tmp_path / "compact.xml").getroot()
    for layer in root.iter("layer"):
        has_dims = layer.find(".//dim") is not None
        assert has_dims == (layer.get("type") in KEEP_DIMS), layer.get("type")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    outs = [core.compile_model(core.read_model(str(tmp_path / name)), "CPU")(x)[0] for name in ("plain.xml",
                                                                                             "compact.xml")]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_half_vectors_casts_only_quantization_vectors_float16_holds() -> None:
    """Scales of int8 weights, biases and FakeQuantize limits of at least HALF_MIN_ELEMENTS become float16
    (+ Convert); short vectors, vectors float16 cannot hold, and other float constants stay float32."""
    import openvino as ov

    from edgetl.export.openvino_ir import HALF_MIN_ELEMENTS, half_vectors

    ops, rng = ov.opset13, np.random.default_rng(0)
    n = HALF_MIN_ELEMENTS
    x = ops.parameter([2, 8], ov.Type.f32)

    def linear(inputs, width: int, scale: np.ndarray | None = None):
        q = rng.integers(-127, 128, (8, width)).astype(np.int8)
        if scale is None:
            scale = rng.uniform(1e-3, 1e-2, width).astype(np.float32)
        weights = ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(scale))
        return ops.add(ops.matmul(inputs, weights, False, False), ops.constant(rng.standard_normal(width, np.float32)))

    wide = linear(x, n)  # scale and bias: cast
    short = linear(x, n - 1)  # both stay float32
    huge = linear(x, n, np.full(n, 1e6, np.float32))  # scale beyond float16: stays; its bias is cast
    lo, hi = (ops.constant(v.astype(np.float32)) for v in (-np.linspace(1, 2, n), np.linspace(1, 2, n)))
    limited = ops.fake_quantize(wide, lo, hi, lo, hi, 256)  # both limits: cast
    gamma = ops.constant(rng.standard_normal(n, np.float32))
    scaled = ops.multiply(limited, gamma)  # a float op's vector (a norm's gamma), not a quantization vector
    model = ov.Model([limited, scaled, short, huge], [x])
    core, sample = ov.Core(), rng.standard_normal((2, 8), np.float32)

    def outputs() -> list[np.ndarray]:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [out.copy() for out in compiled(sample).values()]

    before = outputs()
    assert half_vectors(ov, model) == 5
    halves = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
              and op.get_element_type() == ov.Type.f16]
    assert len(halves) == 5 and all(op.get_data().size == n for op in halves)
    assert gamma.get_element_type() == ov.Type.f32 and scaled.input_value(1).get_node() is gamma
    after = outputs()
    step = 2 * 2.0 / 255  # one FakeQuantize level: a cast limit may move a value across one rounding boundary
    assert np.abs(after[0] - before[0]).max() <= step + 1e-6
    for old, new in zip(before[2:], after[2:], strict=True):
        np.testing.assert_allclose(new, old, rtol=2e-3, atol=2e-3 * np.abs(old).max())


@pytest.mark.slow
def test_default_attributes_dropped_only_where_the_graph_reads_back_the_same(image_fp32: Path) -> None:
    """The compact FP32 IR leaves out attributes equal to the reader's defaults and keeps the others."""
    root = ET.parse(image_fp32 / "model.xml").getroot()
    data = {(layer.get("type"), name): value for layer in root.iter("layer") for d in layer.findall("data")
            for name, value in d.attrib.items()}
    assert ("Add", "auto_broadcast") not in data and ("Convolution", "auto_pad") not in data
    strides = {d.get("strides") for layer in root.iter("layer") if layer.get("type") == "Convolution"
               for d in layer.findall("data")}
    assert "2, 2" in strides  # a non-default value stays
    assert all(("Const", key) in data for key in ("element_type", "shape", "offset", "size"))
