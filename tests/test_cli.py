"""The `edgetl` command end to end: real data, real models, and every bad input the spine promises to catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgetl.cli import main
from edgetl.fsutil import read_json

EDGETL = [sys.executable, "-m", "edgetl"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real command in a fresh process (exit code and stderr exactly as a user sees them)."""
    env = {**os.environ, "EDGETL_PROGRESS": "0", "EDGETL_OFFLINE": "1"}
    return subprocess.run([*EDGETL, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def invoke(*args: str):
    return CliRunner().invoke(main, list(map(str, args)))


def shapes_folder(root: Path, classes=("circle", "square", "cross"), per_class: int = 12) -> Path:
    """Grey shapes on noise, one folder per class: a small task a backbone can learn in seconds."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (48, 48)).astype(np.uint8)
            yy, xx = np.mgrid[:48, :48]
            if c == 0:
                img[(yy - 24) ** 2 + (xx - 24) ** 2 < 150] = 230
            elif c == 1:
                img[12:36, 12:36] = 230
            else:
                img[20:28, :] = 230
                img[:, 20:28] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def assert_one_line_error(result, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert pattern in lines[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "run"


def _finetune(data: Path | str, out: Path, *extra: str):
    return invoke("finetune", "--data", data, "--backbone", "mobilenet_v3_small", "--out", out, *extra)


def _check_bad(result, out: Path, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert pattern in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not any(p.name.endswith(".partial") for p in out.parent.iterdir())


def test_missing_path(tmp_path: Path, out: Path) -> None:
    _check_bad(_finetune(tmp_path / "nope", out), out, "not found")


def test_file_instead_of_folder(tmp_path: Path, out: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("x")
    _check_bad(_finetune(f, out), out, "folder")


def test_no_class_folders(tmp_path: Path, out: Path) -> None:
    (tmp_path / "data").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "loose.png")
    _check_bad(_finetune(tmp_path / "data", out), out, "class")


def test_single_class(tmp_path: Path, out: Path) -> None:
    data = shapes_folder(tmp_path / "data", classes=("only",), per_class=5)
    _check_bad(_finetune(data, out), out, "at least 2 classes")


def test_class_folder_without_images(tmp_path: Path, out: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=5)
    (data / "empty").mkdir()
    _check_bad(_finetune(data, out), out, "empty")


def test_unknown_backbone_lists_known(tmp_path: Path, out: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=5)
    result = invoke("finetune", "--data", data, "--backbone", "resnet9000", "--out", out)
    _check_bad(result, out, "mobilenet_v3_small")
    assert "resnet9000" in result.output


def test_existing_out_refused_without_overwrite(tmp_path: Path, out: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=5)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _finetune(data, out)
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_strict_fails_on_corrupt_image(tmp_path: Path, out: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=5)
    (data / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _check_bad(_finetune(data, out, "--strict"), out, "broken.png")


def test_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("finetune", "--data", tmp_path / "missing", "--out", tmp_path / "run")
    assert_one_line_error(result, "missing")


def test_bad_recipe_key_is_named(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nfinetune:\n  train:\n    epochz: 3\n")
    result = invoke("run", recipe)
    assert result.exit_code == 2
    assert "epochz" in result.output


# ---------------------------------------------------------------- the spine end to end on real data


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory) -> Path:
    """Pretrained EfficientNet-Lite0 fine-tuned on a small Fashion-MNIST subset, through the real CLI."""
    root = tmp_path_factory.mktemp("e2e")
    out = root / "run"
    result = run_cli("finetune", "--data", "fashion-mnist", "--limit-per-class", 60, "--backbone",
                     "efficientnet_lite0", "--image-size", 48, "--mode", "fine-tune", "--unfreeze", 2,
                     "--no-augment", "--epochs", 3, "--batch-size", 32, "--lr", 0.002, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_finetune_learns_fashion_mnist(fmnist_run: Path) -> None:
    metrics = read_json(fmnist_run / "metrics.json")
    assert metrics["weights"]["source"] == "package" and metrics["pretrained"]
    assert metrics["test"]["accuracy"] > 0.5  # chance is 0.1
    assert set(metrics["test"]["per_class_accuracy"]) == set(read_json(fmnist_run / "spec.json")["labels"])
    for name in ("weights.safetensors", "spec.json", "model.json", "config.yaml", "confusion_matrix.png",
                 "training_curves.png"):
        assert (fmnist_run / name).is_file(), name
    assert not (fmnist_run / "checkpoint.pt").exists()


@pytest.mark.slow
def test_export_and_bench_through_cli(fmnist_run: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    result = run_cli("export", fmnist_run, "--format", "onnx", "--out", bundle)
    assert result.returncode == 0, result.stderr
    manifest = read_json(bundle / "edgetl.json")
    v = manifest["verification"]
    assert v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] >= 0.999
    assert v["n"] == read_json(fmnist_run / "metrics.json")["data"]["test"]
    assert abs(v["artifact_accuracy"] - read_json(fmnist_run / "metrics.json")["test"]["accuracy"]) < 0.02
    target = tmp_path / "targets"
    target.mkdir()
    (target / "quick.yaml").write_text(
        "name: quick\nkind: local\nengines: [onnxruntime, torch]\nthreads: [1]\nbatch_sizes: [1, 4]\n"
        "warmup: 1\nmin_runs: 3\nmin_time_s: 0.05\nmax_time_s: 5\n")
    env_before = os.environ.get("EDGETL_TARGETS_DIR")
    os.environ["EDGETL_TARGETS_DIR"] = str(target)
    try:
        result = run_cli("bench", bundle, "--target", "quick", "--json", tmp_path / "bench.json")
    finally:
        os.environ.pop("EDGETL_TARGETS_DIR") if env_before is None else None
    assert result.returncode == 0, result.stderr
    rows = read_json(tmp_path / "bench.json")["rows"]
    assert {(r["engine"], r["batch"]) for r in rows} == {("onnxruntime", 1), ("onnxruntime", 4), ("torch", 1),
                                                          ("torch", 4)}
    assert all(r["status"] == "ok" and r["latency_ms"]["p50_ms"] > 0 for r in rows)


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(tmp_path: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    args = [*EDGETL, "finetune", "--data", str(data), "--backbone", "mobilenet_v3_small", "--no-pretrained",
            "--image-size", "32", "--epochs", "3", "--patience", "9", "--batch-size", "8", "--out", str(out)]
    env = {**os.environ, "EDGETL_PROGRESS": "0", "EDGETL_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / ".run.partial" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    assert not out.exists(), "an interrupted run must not look complete"
    result = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr
    history = read_json(out / "metrics.json")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.slow
def test_recipe_runs_then_skips_unchanged_stages(tmp_path: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=10)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "shapes", "workdir": str(tmp_path / "work"),
        "finetune": {"data": {"data": str(data), "image_size": 32},
                     "model": {"backbone": "mobilenet_v3_small", "pretrained": False},
                     "train": {"epochs": 2, "batch_size": 8}},
        "bench": {"engines": ["onnxruntime"], "threads": [1], "batch_sizes": [1]},
    }))
    first = run_cli("run", recipe)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "work" / "report" / "report.md").is_file()
    assert "Benchmark" in (tmp_path / "work" / "report" / "report.md").read_text()
    second = run_cli("run", recipe)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("skipped") == 4


def test_backbones_lists_every_registered_one() -> None:
    from edgetl.models import BACKBONES

    result = invoke("backbones", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # stderr may carry library warnings
    assert [r["name"] for r in rows if r["task"] == "image"] == BACKBONES.names()
    from edgetl.models import TEXT_BACKBONES

    assert [r["name"] for r in rows if r["task"] == "text"] == TEXT_BACKBONES.names()
    lite0 = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert "package" in str(lite0["pretrained"]) and lite0["params"] > 3_000_000


@pytest.mark.slow
def test_config_file_with_flag_overrides(tmp_path: Path) -> None:
    data = shapes_folder(tmp_path / "data", per_class=8)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"data:\n  data: {data}\n  image_size: 32\nmodel:\n  backbone: mobilenet_v3_small\n"
                   "  pretrained: false\ntrain:\n  epochs: 3\n  batch_size: 8\n")
    out = tmp_path / "run"
    result = invoke("finetune", "--config", cfg, "--epochs", 1, "--seed", 7, "--out", out)
    assert result.exit_code == 0, result.output
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["seed"] == 7
    assert saved["model"]["backbone"] == "mobilenet_v3_small" and saved["data"]["image_size"] == 32
    assert len(read_json(out / "metrics.json")["history"]) == 1
