"""The torch-free runtime: load a bundle, predict from paths, PIL images and arrays; refuse bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import LABELS, make_run, predict_in_fresh_python  # shared tiny run folder (see test_export.py)
from PIL import Image

from edgetl.errors import ConfigError, DataError, RunFolderError
from edgetl.runtime import Bundle, Prediction, preprocess_batch

pytestmark = pytest.mark.slow  # every test but the last needs an exported bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("runtime")
    return export(make_run(root), "onnx", root / "bundle", progress=False)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return Bundle.load(bundle_dir)


@pytest.fixture
def image_path(bundle_dir: Path) -> Path:
    return bundle_dir.parent / "images" / "dog" / "0.png"


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def _edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "edgetl.json").read_text())
    manifest.update(changes)
    (folder / "edgetl.json").write_text(json.dumps(manifest))


def test_predict_single_items(bundle: Bundle, image_path: Path) -> None:
    pil = Image.open(image_path).convert("RGB")
    from_path = bundle.predict(image_path)
    assert len(from_path) == 1 and isinstance(from_path[0], Prediction)
    assert from_path[0].label in LABELS and 0 < from_path[0].score <= 1
    assert bundle.predict(str(image_path)) == from_path
    assert bundle.predict(pil) == from_path
    assert bundle.predict(np.asarray(pil)) == from_path
    assert bundle.predict(np.asarray(pil.convert("L")))[0].label in LABELS  # grey HxW array


def test_predict_top_k_and_lists(bundle: Bundle, image_path: Path) -> None:
    top = bundle.predict(image_path, top_k=3)
    assert sorted(p.label for p in top) == sorted(LABELS)
    assert [p.score for p in top] == sorted((p.score for p in top), reverse=True)
    assert sum(p.score for p in top) == pytest.approx(1.0)
    items = [image_path, Image.open(image_path), np.zeros((30, 20, 3), np.uint8)]
    many = bundle.predict(items, top_k=2, batch_size=2)
    assert len(many) == 3 and all(len(preds) == 2 for preds in many)
    assert many[0] == many[1] == bundle.predict(image_path, top_k=2)
    assert bundle.predict([]) == []


def test_logits_match_predict(bundle: Bundle, image_path: Path) -> None:
    logits = bundle.logits(preprocess_batch([image_path], bundle.spec))
    assert logits.shape == (1, len(LABELS))
    assert bundle.predict(image_path)[0].label == LABELS[int(logits.argmax())]
    assert bundle.spec.labels == LABELS and bundle.manifest["format"] == "onnx"


def test_bad_arguments(bundle: Bundle, bundle_dir: Path, image_path: Path) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        bundle.predict(image_path, top_k=4)
    with pytest.raises(DataError, match=r"does not fit the model input"):
        bundle.logits(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match="image not found"):
        bundle.predict(bundle_dir / "missing.png")
    with pytest.raises(ConfigError, match="threads"):
        Bundle.load(bundle_dir, threads=0)
    assert Bundle.load(bundle_dir, threads=1).predict(image_path) == bundle.predict(image_path)


def test_runtime_does_not_import_torch(bundle_dir: Path, image_path: Path) -> None:
    out = predict_in_fresh_python(bundle_dir, [image_path])
    assert out["first"] in LABELS and out["heavy"] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"format": "onnx"}', r"schema_version is missing \(and 3 more problems\)"),
    ],
)
def test_nonsense_manifest_refused(bundle_dir: Path, tmp_path: Path, text: str, expected: str) -> None:
    folder = _copy(bundle_dir, tmp_path)
    (folder / "edgetl.json").write_text(text)
    with pytest.raises(RunFolderError, match=expected) as info:
        Bundle.load(folder)
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"format": "caffe"}, 'format must be one of "onnx", "openvino", "tflite", got "caffe"'),
        ({"schema_version": 99}, "schema_version 99"),
        ({"schema_version": "1"}, 'schema_version must be integer, got "1"'),
        ({"spec": {"labels": ["a"], "layout": "CHW"}}, 'spec.layout must be one of "NCHW", "NHWC"'),
        ({"spec": {"labels": []}}, "spec.labels needs at least 1 items"),
        ({"inputs": [{"name": "input", "shape": [1, 3], "dtype": "float"}]}, r"inputs\[0\].dtype must be one of"),
        ({"verification": {"n": 3, "top1_agreement": 1.5, "reference_accuracy": 1, "artifact_accuracy": 1}},
         "verification.top1_agreement must be <= 1"),
        ({"extra_key": 1}, "extra_key is not a known key"),
        ({"model_file": "weights.onnx"}, "is missing"),
    ],
)
def test_invalid_manifest_values_refused(bundle_dir: Path, tmp_path: Path, changes: dict,
                                         expected: str) -> None:
    folder = _copy(bundle_dir, tmp_path)
    _edit_manifest(folder, **changes)
    with pytest.raises(RunFolderError, match=expected):
        Bundle.load(folder)


ESCAPING = ["../model.onnx", "/etc/hostname", "sub/../../copy/model.onnx", "C:\\m.onnx"]


@pytest.mark.parametrize("model_file", ESCAPING)
def test_model_file_escaping_bundle_refused(bundle_dir: Path, tmp_path: Path, model_file: str) -> None:
    folder = _copy(bundle_dir, tmp_path)
    shutil.copy(folder / "model.onnx", tmp_path / "model.onnx")  # a real model does exist out there
    _edit_manifest(folder, model_file=model_file)
    with pytest.raises(RunFolderError, match="points outside the bundle folder"):
        Bundle.load(folder)


def test_truncated_model_refused(bundle_dir: Path, tmp_path: Path) -> None:
    folder = _copy(bundle_dir, tmp_path)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(RunFolderError, match="cannot load") as info:
        Bundle.load(folder)
    assert "re-export" in info.value.hint and "\n" not in info.value.one_line()


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"no edgetl\.json"):
        Bundle.load(tmp_path)
