"""Text backbones, on the packaged all-MiniLM-L6-v2 and a tiny random DistilBERT (no mocks)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, DistilBertConfig, DistilBertModel

from edgetl.errors import ConfigError, UnknownNameError, WeightsError
from edgetl.models.text import (
    POOLINGS,
    TEXT_BACKBONES,
    TextClassifier,
    build_text_classifier,
    describe_text_backbones,
    resolve_text_model,
    text_backbone_info,
)
from edgetl.runtime.text import load_tokenizer, tokenize

EXPECTED = {"minilm_l6", "distilbert_base_uncased", "bert_base_uncased"}
SENTENCES = ["A gripping, beautifully shot film.", "Dull."]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="module")
def empty_hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No downloads and an empty hub cache, so the sources seen are the same on every machine."""
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGETL_OFFLINE", "1")
        mp.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
        yield


@pytest.fixture(scope="module")
def minilm(empty_hf_cache: None) -> tuple[TextClassifier, Path]:
    """The packaged MiniLM with a 3-class head, in eval mode."""
    torch.manual_seed(0)
    model, info, folder = build_text_classifier("minilm_l6", 3)
    assert info.source == "package" and info.pretrained
    return model.eval(), folder


def as_batch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy arrays from :func:`tokenize` to torch tensors."""
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def tiny_distilbert_folder(root: Path, minilm_folder: Path, *, weights: bool = True) -> Path:
    """A random 2-layer DistilBERT (dim 32) saved with the MiniLM tokenizer files."""
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    folder = root / "tiny-distilbert"
    model = DistilBertModel(config)
    if weights:
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_folder / name, folder / name)
    return folder


def test_registry_names_and_defs() -> None:
    assert set(TEXT_BACKBONES.names()) == EXPECTED
    for name in EXPECTED:
        defn = TEXT_BACKBONES.get(name)
        assert defn.name == name and defn.hub_id and defn.pooling in POOLINGS and defn.max_length == 128
    assert TEXT_BACKBONES.get("minilm_l6").pooling == "mean"


def test_minilm_resolves_offline_to_the_package(empty_hf_cache: None) -> None:
    folder, defn, info = resolve_text_model("minilm_l6")
    assert info.source == "package" and info.pretrained and Path(info.path) == folder
    assert (folder / "tokenizer.json").is_file() and defn.pooling == "mean" and defn.max_length == 128


def test_hub_cache_wins_over_the_package(empty_hf_cache: None) -> None:
    from huggingface_hub import constants

    package_folder, _, _ = resolve_text_model("minilm_l6")
    repo = Path(constants.HF_HUB_CACHE) / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    try:
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            (snapshot / name).symlink_to(package_folder / name)
        folder, defn, info = resolve_text_model("minilm_l6")
        assert info.source == "cache" and folder == snapshot and defn.pooling == "mean"
    finally:
        shutil.rmtree(repo)
    assert resolve_text_model("minilm_l6")[2].source == "package"


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        resolve_text_model("roberta_giant")
    line = err.value.one_line()
    assert "\n" not in line and all(name in line for name in EXPECTED)


def test_bad_folders_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="text model folder") as err:
        resolve_text_model(tmp_path / "missing")
    assert "\n" not in err.value.one_line()
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"config\.json"):
        resolve_text_model(str(tmp_path / "empty"))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (odd / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="gpt2") as err:
        resolve_text_model(str(odd))
    assert "bert" in err.value.one_line()


def test_distilbert_offline_needs_a_download_or_folder(empty_hf_cache: None) -> None:
    with pytest.raises(WeightsError) as err:
        build_text_classifier("distilbert_base_uncased", 2)
    line = err.value.one_line()
    assert "download" in line and "local folder" in line and "distilbert-base-uncased" in line
    info = text_backbone_info("distilbert_base_uncased")
    assert info["source"] == "none" and info["params"] is None and info["pooling"] == "cls"


def test_backbone_equals_automodel_mean_pooled(minilm: tuple[TextClassifier, Path]) -> None:
    model, folder = minilm
    arrays, truncated = tokenize(load_tokenizer(folder), SENTENCES, 128)
    batch = as_batch(arrays)
    assert truncated == 0 and int(batch["attention_mask"].sum(1).min()) < batch["input_ids"].shape[1]
    reference = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(model.backbone(batch), expected, rtol=0, atol=1e-5)
        assert model(batch).shape == (2, 3)
        states = model.backbone.hidden_states(batch)
        torch.testing.assert_close(states[-1], hidden, rtol=0, atol=1e-4)


def test_units_split_and_resume(minilm: tuple[TextClassifier, Path]) -> None:
    model, folder = minilm
    backbone = model.backbone
    assert len(backbone.units) == 1 + 6 and backbone.num_features == 384
    batch = as_batch(tokenize(load_tokenizer(folder), SENTENCES, 128)[0])
    with torch.no_grad():
        full = backbone.forward_units(batch)
        prefix = backbone.forward_units(batch, 0, 4)
        torch.testing.assert_close(backbone.forward_units(batch, 4, hidden=prefix), full)
        zeros = dict(batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
        torch.testing.assert_close(backbone(zeros), backbone(batch))
    assert len(backbone.hidden_states(batch)) == len(backbone.units)
    with pytest.raises(ValueError, match="hidden"):
        backbone.forward_units(batch, 2)


def test_tokenize_pads_dynamically_and_counts_truncation(minilm: tuple[TextClassifier, Path]) -> None:
    tokenizer = load_tokenizer(minilm[1])
    arrays, truncated = tokenize(tokenizer, ["short", "a somewhat longer sentence here"], 64)
    assert truncated == 0 and set(arrays) == {"input_ids", "attention_mask"}
    assert arrays["input_ids"].dtype == np.int64 and arrays["input_ids"].shape == (2, 7)
    assert arrays["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0, 0]
    arrays, truncated = tokenize(tokenizer, ["one two three four five six", "one", "seven eight"], 5)
    assert truncated == 1 and arrays["input_ids"].shape == (3, 5) and arrays["input_ids"][0, -1] == 102
    exact, truncated = tokenize(tokenizer, ["one two three"], 5, token_type_ids=True)
    assert truncated == 0 and exact["token_type_ids"].tolist() == [[0] * 5]
    assert tokenize(tokenizer, [], 8)[0]["input_ids"].shape == (0, 0)
    with pytest.raises(ConfigError, match="max_length"):
        tokenize(tokenizer, ["x"], 1)


def test_distilbert_folder_builds_and_matches(minilm: tuple[TextClassifier, Path], tmp_path: Path) -> None:
    folder = tiny_distilbert_folder(tmp_path, minilm[1])
    resolved, defn, info = resolve_text_model(str(folder))
    assert resolved == folder and info.source == "explicit" and info.pretrained
    assert defn.pooling == "cls" and defn.max_length == 64
    model, _, _ = build_text_classifier(str(folder), 2, hidden=16)
    model.eval()
    assert len(model.backbone.units) == 3 and not model.backbone.uses_token_type_ids
    batch = as_batch(tokenize(load_tokenizer(folder), SENTENCES, defn.max_length)[0])
    with torch.no_grad():
        expected = DistilBertModel.from_pretrained(folder).eval()(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(model.backbone(batch), expected, rtol=0, atol=1e-5)
        assert model(batch).shape == (2, 2)
    row = text_backbone_info(str(folder))
    assert row["arch"] == "distilbert" and row["params"] == sum(p.numel() for p in model.backbone.parameters())


def test_random_init_and_config_only_folder(minilm: tuple[TextClassifier, Path], tmp_path: Path) -> None:
    folder = tiny_distilbert_folder(tmp_path, minilm[1], weights=False)
    _, _, info = resolve_text_model(str(folder))
    assert info.source == "explicit" and not info.pretrained
    with pytest.raises(WeightsError, match=r"no model\.safetensors") as err:
        build_text_classifier(str(folder), 2)
    assert "pretrained=False" in err.value.one_line()
    model, info, _ = build_text_classifier(str(folder), 2, pretrained=False)
    assert info.source == "random" and model.training


def test_minilm_info_counts_params(empty_hf_cache: None) -> None:
    info = text_backbone_info("minilm_l6")
    assert info["source"] == "package" and info["family"] == "transformers" and info["arch"] == "bert"
    assert 22_000_000 < info["params"] < 23_000_000
    assert [row["name"] for row in describe_text_backbones()] == TEXT_BACKBONES.names()


class _Positional(torch.nn.Module):
    """``forward(input_ids, attention_mask)`` around a text classifier, for the ONNX exporter."""

    def __init__(self, model: TextClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_dynamic_batch_and_sequence(minilm: tuple[TextClassifier, Path], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model, folder = minilm
    tokenizer = load_tokenizer(folder)
    sample = tokenize(tokenizer, SENTENCES, 128)[0]
    path = tmp_path / "minilm.onnx"
    names = ["input_ids", "attention_mask"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    # eval(): the legacy exporter restores the wrapper's train mode on the whole tree after exporting
    torch.onnx.export(_Positional(model).eval(), tuple(as_batch(sample).values()), str(path), input_names=names,
                      output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    texts = ["Fine.", "An utterly forgettable sequel that drags on and on.", "Loved every minute of it."]
    for arrays in (tokenize(tokenizer, texts, 128)[0], tokenize(tokenizer, texts[:1], 128)[0]):
        with torch.no_grad():
            expected = model(as_batch(arrays)).numpy()
        got = session.run(None, {name: arrays[name] for name in names})[0]
        assert np.abs(got - expected).max() <= 1e-4
