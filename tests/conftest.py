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


@pytest.fixture(scope="session")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-init MobileNetV3-Small run (``builders.make_run``) the format tests share."""
    from builders import make_run

    return make_run(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, image_run: Path, text_run: tuple[Path, dict]):
    """``exported(kind, fmt, precision)``: a bundle of the shared ``image`` or ``text`` run, made once."""
    from edgetl.export import export

    made: dict[tuple[str, str, str], Path] = {}

    def get(kind: str, fmt: str, precision: str = "fp32") -> Path:
        if (kind, fmt, precision) not in made:
            run = image_run if kind == "image" else text_run[0]
            out = tmp_path_factory.mktemp(f"{kind}-{fmt}") / precision
            made[kind, fmt, precision] = export(run, fmt, out, precision=precision, progress=False)
        return made[kind, fmt, precision]

    return get
