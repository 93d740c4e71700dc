"""Benchmark: the timing loop, target profiles, and a tiny real run of both engines on an exported bundle.

Timings on a shared 2-core machine are noisy, so nothing here asserts a duration; only that figures
are present, positive and consistent with each other.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest
from builders import make_run  # shared tiny run folder (see tests/test_export.py)
from rich.console import Console

from edgetl.bench import bench_bundle, load_target, measure, render_table
from edgetl.bench.targets import TargetProfile, available_cores, list_targets
from edgetl.errors import ConfigError, UnknownNameError

TINY = TargetProfile(name="tiny", engines=("onnxruntime", "torch"), threads=(1,), batch_sizes=(1, 2),
                     warmup=1, min_runs=3, min_time_s=0.05, max_time_s=5.0)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("bench")
    return export(make_run(root), "onnx", root / "bundle", progress=False)


def test_measure_reaches_both_minimums() -> None:
    stats = measure(lambda: sum(range(1000)), warmup=2, min_runs=7, min_time_s=0.02)
    assert stats.runs >= 7 and stats.warmup == 2 and stats.total_s >= 0.02
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.std_ms >= 0 and not stats.hit_time_limit
    assert set(stats.to_dict()) >= {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "runs"}


def test_measure_stops_at_max_time() -> None:
    stats = measure(lambda: time.sleep(0.002), warmup=0, min_runs=10**6, min_time_s=0.0, max_time_s=0.03)
    assert 1 <= stats.runs < 10**6 and stats.hit_time_limit


def test_measure_refuses_bad_limits() -> None:
    with pytest.raises(ConfigError, match="min_runs=0"):
        measure(lambda: None, min_runs=0)


def test_local_cpu_target_defaults() -> None:
    profile = load_target("local-cpu")
    assert profile.kind == "local" and profile.engines == ("onnxruntime", "openvino", "ai-edge-litert", "torch")
    assert profile.threads == (1, "all") and profile.batch_sizes == (1, 32)
    assert "local-cpu" in list_targets() and json.dumps(profile.to_dict())


def test_target_typo_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "typo.yaml").write_text("kind: local\nmin_run: 3\n")
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="min_run") as info:
        load_target("typo")
    assert "min_runs" in info.value.hint


def test_target_bad_values_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    (tmp_path / "bad.yaml").write_text("threads: [1, many]\n")
    with pytest.raises(ConfigError, match="'many'"):
        load_target("bad")
    (tmp_path / "phone.yaml").write_text("kind: adb\n")
    with pytest.raises(ConfigError, match="'adb' is not supported yet"):
        load_target("phone")


def test_env_target_dir_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.yaml").write_text("threads: [all]\nbatch_sizes: [4]\nenv: {OMP_WAIT_POLICY: PASSIVE}\n")
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    profile = load_target("mine")
    assert profile.name == "mine" and profile.batch_sizes == (4,) and profile.threads == ("all",)
    assert profile.env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert available_cores() >= 1


def test_unknown_target_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="no-such-device") as info:
        load_target("no-such-device")
    assert "local-cpu" in info.value.hint


@pytest.mark.slow
def test_bench_both_engines(bundle_dir: Path) -> None:
    result = bench_bundle(bundle_dir, TINY, progress=False)
    json.loads(json.dumps(result))  # JSON-ready
    rows = result["rows"]
    assert [(r["engine"], r["threads"], r["batch"]) for r in rows] == [
        ("onnxruntime", 1, 1), ("onnxruntime", 1, 2), ("torch", 1, 1), ("torch", 1, 2)]
    for row in rows:
        _check_row(row)
    assert result["bundle"]["file_size_bytes"] == (bundle_dir / "model.onnx").stat().st_size
    assert result["input"]["source"] == "run's test split"
    assert result["machine"]["cpu"] and result["machine"]["logical_cores"] >= 1
    assert set(result["engines"]) == {"onnxruntime", "torch"}
    console = Console(file=io.StringIO(), width=200)
    console.print(render_table(result))
    assert "onnxruntime" in console.file.getvalue()


def _check_row(row: dict) -> None:
    lat = row["latency_ms"]
    assert row["status"] == "ok" and lat["runs"] >= 3
    assert 0 < lat["p50_ms"] <= lat["p99_ms"]
    assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / lat["p50_ms"])
    assert row["cold_start_ms"] == pytest.approx(row["load_ms"] + row["first_run_ms"])
    assert row["import_ms"] >= 0 and row["load_ms"] > 0
    assert 0 < row["baseline_rss_mb"] <= row["peak_rss_mb"]
    assert (row["end_to_end_ms"] is not None) == (row["batch"] == 1)
    if row["end_to_end_ms"]:
        assert row["end_to_end_ms"]["p50_ms"] > 0


@pytest.mark.slow
def test_bench_without_run_folder_skips_torch(bundle_dir: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    manifest = json.loads((moved / "edgetl.json").read_text())
    manifest["provenance"]["run_dir"] = str(tmp_path / "deleted-run")
    (moved / "edgetl.json").write_text(json.dumps(manifest))
    result = bench_bundle(moved, TINY, batch_sizes=[1], progress=False)
    ort_row, torch_row = result["rows"]
    assert ort_row["status"] == "ok" and torch_row["status"] == "skipped: run folder not found"
    assert torch_row["latency_ms"] is None
    assert result["input"]["source"] == "synthetic"
    render_table(result)


def test_unknown_engine_lists_known(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="tensorrt") as info:
        bench_bundle(tmp_path, TINY, engines=["tensorrt"], progress=False)
    assert "onnxruntime" in info.value.hint and "torch" in info.value.hint
