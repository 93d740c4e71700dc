"""Fine-tuning modes on a tiny real task: feature extraction on a cache, progressive unfreezing, baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cli import shapes_folder

from edgetl.config import FinetuneConfig
from edgetl.data import load_image_data
from edgetl.data.torch_data import TorchImageDataset, eval_transform
from edgetl.fsutil import read_json
from edgetl.models import build_classifier, default_spec
from edgetl.runfolder import load_run
from edgetl.train import feature_cache
from edgetl.train.finetune import finetune


def config(data: Path, **train) -> FinetuneConfig:
    cfg = FinetuneConfig()
    cfg.data.data, cfg.data.image_size = str(data), 32
    cfg.model.backbone, cfg.model.pretrained = "mobilenet_v3_small", False
    cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = 3, 8, 9
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return shapes_folder(tmp_path_factory.mktemp("shapes") / "data", per_class=12)


@pytest.mark.slow
def test_feature_extract_trains_only_the_head(shapes: Path, tmp_path: Path) -> None:
    metrics = finetune(config(shapes, mode="feature-extract", lr=0.01), tmp_path / "run")
    head = sum(p.numel() for p in load_run(tmp_path / "run").model().head.parameters())
    assert all(h["trainable_params"] == head for h in metrics["history"])
    assert all(h["trainable_blocks"] == 0 for h in metrics["history"])


@pytest.mark.slow
def test_progressive_unfreezes_one_more_block_each_epoch(shapes: Path, tmp_path: Path) -> None:
    metrics = finetune(config(shapes, mode="progressive"), tmp_path / "run")
    assert [h["trainable_blocks"] for h in metrics["history"]] == [1, 2, 3]
    params = [h["trainable_params"] for h in metrics["history"]]
    assert params[0] < params[1] < params[2]


def test_prefix_cache_is_computed_once_and_matches_the_model(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path))
    data = load_image_data(shapes)
    torch.manual_seed(0)
    model, _ = build_classifier("mobilenet_v3_small", len(data.classes), pretrained=False)
    model.eval()
    spec = default_spec("mobilenet_v3_small", data.classes, input_size=(32, 32))
    loader = torch.utils.data.DataLoader(TorchImageDataset(data.val, eval_transform(spec)), batch_size=4)
    for cut in (len(model.backbone.units), 5):
        prefix = feature_cache.Prefix(model, cut)
        key = feature_cache.cache_key(prefix, spec, data.fingerprint, "val")
        first, labels, hit1 = feature_cache.cached_outputs(prefix, loader, key, "val")
        second, _, hit2 = feature_cache.cached_outputs(prefix, loader, key, "val")
        assert (hit1, hit2) == (False, True)
        assert (first == second).all()
        x = torch.stack([eval_transform(spec)(data.val.image(i)) for i in range(len(data.val))])
        with torch.inference_mode():
            tail = feature_cache.Tail(model, cut).eval()
            assert torch.allclose(tail(torch.from_numpy(first)), model(x), atol=1e-5)
    assert labels.tolist() == data.val.labels.tolist()


@pytest.mark.slow
def test_baseline_reports_three_models_side_by_side(shapes: Path, tmp_path: Path) -> None:
    finetune(config(shapes, epochs=2, baseline=True), tmp_path / "run")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    base = metrics["baseline"]
    assert set(base) == {"random_init", "linear"}
    assert base["linear"]["accuracy"] > 0.8  # shapes are easy from pixels
    assert 0 <= base["random_init"]["accuracy"] <= 1
