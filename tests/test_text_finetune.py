"""The text path through the shared trainer: packaged MiniLM on a Rotten Tomatoes subset, run folder reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.config import FinetuneConfig
from edgetl.runfolder import load_run
from edgetl.train.finetune import finetune
from edgetl.train.tasks import TASKS, class_weights


def text_config(**train) -> FinetuneConfig:
    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.max_length = "text", "rotten-tomatoes", 120, 48
    cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = 3, 32, 9
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg.validate()


@pytest.fixture(scope="module")
def feature_run(text_run) -> tuple[Path, dict]:
    return text_run  # conftest: MiniLM feature extraction on 240 sentences


@pytest.mark.slow
def test_feature_extract_on_cached_embeddings_beats_chance(feature_run) -> None:
    out, metrics = feature_run
    assert metrics["task"] == "text" and metrics["backbone"] == "minilm_l6"
    assert metrics["weights"]["source"] == "package"
    assert metrics["test"]["accuracy"] > 0.62  # two balanced-ish classes: chance is ~0.5-0.58
    assert all(h["trainable_blocks"] == 0 for h in metrics["history"])
    assert (out / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_text_run_folder_reloads_to_the_same_logits(feature_run) -> None:
    out, _ = feature_run
    run = load_run(out)
    assert run.task == "text" and run.spec.is_text and run.spec.max_length == 48
    model = run.model()
    data = run.data()
    built = TASKS.get("text").build(run.config, data.classes)  # fresh tokenizer, same recipe
    built.model.load_state_dict(model.state_dict())
    loader = TASKS.get("text").loader(data.test.subset(np.arange(8)), built, run.config, train=False,
                                      batch_size=8)
    batch, _ = next(iter(loader))
    with torch.inference_mode():
        assert torch.allclose(model(batch), built.model.eval()(batch), atol=1e-6)


@pytest.mark.slow
def test_fine_tune_last_layer_trains_only_that_layer(tmp_path: Path) -> None:
    metrics = finetune(text_config(mode="fine-tune", unfreeze=1, epochs=1, lr=1e-3), tmp_path / "run")
    assert metrics["history"][0]["trainable_blocks"] == 1
    assert 1_000_000 < metrics["history"][0]["trainable_params"] < 3_000_000  # one MiniLM layer + head


def test_class_weights_are_inverse_frequency() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[0] == pytest.approx(4 / 3 / 3) and w[1] == pytest.approx(4 / 3) and w[2] == 0
