"""Test-wide settings: offline (no hub downloads), no progress bars, a private feature cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("EDGETL_OFFLINE", "1")
os.environ.setdefault("EDGETL_PROGRESS", "0")
os.environ.setdefault("EDGETL_CACHE_DIR", tempfile.mkdtemp(prefix="edgetl-test-cache-"))


@pytest.fixture(scope="session")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A MiniLM feature-extraction run on a 240-sentence Rotten Tomatoes subset, max length 48.

    Shared by the text training, export and benchmark tests (the run takes about half a minute).
    """
    from edgetl.config import FinetuneConfig
    from edgetl.train.finetune import finetune

    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.max_length = "text", "rotten-tomatoes", 120, 48
    cfg.train.mode, cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = (
        "feature-extract", 0.01, 8, 32, 9)
    out = tmp_path_factory.mktemp("text") / "run"
    metrics = finetune(cfg.validate(), out)
    return out, metrics
