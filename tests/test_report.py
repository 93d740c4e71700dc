"""`edgetl report`: bench JSON -> Markdown table, Pareto PNG and the best artifact per target.

The end-to-end tests bench a tiny real bundle (ONNX Runtime and PyTorch eager) and report it; the choice of
the best artifact under an accuracy constraint is checked on entries with chosen accuracies and latencies,
since the tiny random-init models all have the same accuracy.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from builders import make_run
from PIL import Image

from edgetl.bench import bench_bundle
from edgetl.bench.targets import TargetProfile
from edgetl.errors import ConfigError, DataError, OutputExistsError
from edgetl.fsutil import read_json, write_json
from edgetl.report.bench_report import Constraint, Entry, choose_best, summary_points, write_bench_report
from edgetl.report.plots import pareto_front

TINY = TargetProfile(name="tiny-cpu", engines=("onnxruntime", "torch"), threads=(1,), batch_sizes=(1, 2),
                     warmup=1, min_runs=3, min_time_s=0.05, max_time_s=5.0)


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> Path:
    """A real bench of a tiny ONNX bundle on this CPU, plus the real cuda-gpu run (skipped rows without a GPU)."""
    from edgetl.export import export

    root = tmp_path_factory.mktemp("report")
    bundle = export(make_run(root), "onnx", root / "bundles" / "onnx", progress=False)
    cpu = bench_bundle(bundle, TINY, progress=False)
    gpu = bench_bundle(bundle, "cuda-gpu", batch_sizes=[1], progress=False)
    write_json(root / "cpu.json", cpu)
    write_json(root / "both.json", {"results": [cpu, gpu]})
    return root


def _entry(label: str, accuracy: float | None, p50: float, size: float = 1.0, target: str = "t") -> Entry:
    return Entry(target=target, bundle=label, format="onnx", precision="fp32", engine=label, threads=1, batch=1,
                 seq_len=None, status="ok", size_mb=size, accuracy=accuracy, accuracy_source="test",
                 p50_ms=p50, p99_ms=p50 * 2, throughput_ips=1000 / p50, identity=label)


def test_best_meets_the_accuracy_constraint() -> None:
    points = [_entry("fp32", 0.90, 10.0, 4.0), _entry("int8", 0.885, 6.0, 1.2), _entry("tiny", 0.80, 2.0, 0.5),
              _entry("fp16-torch", None, 1.0)]
    assert choose_best(points, Constraint())[0].bundle == "tiny"  # fastest with a known accuracy
    best, low = choose_best(points, Constraint(max_accuracy_drop=2.0))
    assert best.bundle == "int8" and low == pytest.approx(0.88)
    assert choose_best(points, Constraint(max_accuracy_drop=1.0))[0].bundle == "fp32"
    assert choose_best(points, Constraint(min_accuracy=85))[0].bundle == "int8"
    assert choose_best(points, Constraint(min_accuracy=95))[0] is None
    assert choose_best([_entry("x", None, 1.0)], Constraint()) == (None, None)


def test_constraint_refuses_bad_values() -> None:
    with pytest.raises(ConfigError, match="percentage"):
        Constraint(min_accuracy=150)
    with pytest.raises(ConfigError, match="points"):
        Constraint(max_accuracy_drop=-1)


def test_summary_point_is_fastest_thread_count_at_the_batch() -> None:
    slow, fast = _entry("a", 0.9, 5.0), replace(_entry("a", 0.9, 3.0), threads=2)
    big = replace(_entry("a", 0.9, 1.0), batch=8)
    assert summary_points([slow, fast, big]) == {"t": [fast]}
    assert summary_points([slow, fast, big], batch=8) == {"t": [big]}


def test_pareto_front() -> None:
    points = [{"latency_ms": 1, "accuracy": 0.7}, {"latency_ms": 2, "accuracy": 0.9},
              {"latency_ms": 3, "accuracy": 0.8}, {"latency_ms": 4, "accuracy": 0.95}]
    assert [p["latency_ms"] for p in pareto_front(points)] == [1, 2, 4]


def test_pareto_labels_do_not_overlap() -> None:
    """Six artifacts at the same accuracy a few tenths of a ms apart (the demo's case): every label readable."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from edgetl.report.plots import pareto_figure

    same = [{"label": f"{fmt} {prec} / engine-{fmt}", "latency_ms": ms, "accuracy": 0.9135, "size_mb": mb,
             "format": fmt, "precision": prec}
            for fmt, prec, ms, mb in [("tflite", "fp16", 2.16, 7.0), ("tflite", "fp32", 2.21, 13.6),
                                      ("openvino", "fp32", 2.68, 14.1), ("openvino", "fp16", 2.75, 7.5),
                                      ("onnx", "fp32", 3.36, 13.6), ("onnx", "fp16", 4.98, 6.9)]]
    others = [{"label": "openvino int8 / openvino", "latency_ms": 1.63, "accuracy": 0.916, "size_mb": 5.3,
               "format": "openvino", "precision": "int8", "best": True},
              {"label": "pytorch fp32 / torch", "latency_ms": 18.1, "accuracy": 0.9135, "size_mb": 13.6,
               "format": "pytorch", "precision": "fp32"}]
    fig = pareto_figure({"local-cpu": same + others, "pi": same[:3]})
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        assert sorted(t.get_text() for t in ax.texts) == sorted(p["label"] for p in
                                                              (same + others if len(boxes) > 3 else same[:3]))
        for i, box in enumerate(boxes):
            assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), ax.texts[i].get_text()
            assert not any(box.overlaps(other) for other in boxes[i + 1:]), ax.texts[i].get_text()
    plt.close(fig)


@pytest.mark.slow
def test_report_of_a_real_bench(bench_json: Path, tmp_path: Path) -> None:
    bench = read_json(bench_json / "cpu.json")
    manifest = read_json(Path(bench["bundle"]["path"]) / "edgetl.json")
    summary = write_bench_report([bench_json / "cpu.json"], tmp_path / "rep", constraint=Constraint(min_accuracy=0))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| bundle | format | precision | engine | threads | batch | status | size MB | accuracy |" in md
    for row in bench["rows"]:
        assert f"| {row['engine']} | 1 | {row['batch']} | ok |" in md
    accuracy = manifest["verification"]["artifact_accuracy"]
    assert f"{100 * accuracy:.2f}%" in md and "![accuracy vs latency vs size](pareto.png)" in md
    with Image.open(tmp_path / "rep" / "pareto.png") as png:
        assert png.format == "PNG" and png.width > 300
    batch1 = [r for r in bench["rows"] if r["batch"] == 1]
    fastest = min(batch1, key=lambda r: r["latency_ms"]["p50_ms"])
    best = summary["best"]["tiny-cpu"]
    assert best["engine"] == fastest["engine"] and best["p50_ms"] == fastest["latency_ms"]["p50_ms"]
    assert best["format"] == ("pytorch" if fastest["engine"] == "torch" else "onnx")
    assert read_json(tmp_path / "rep" / "report.json")["best"] == summary["best"]


@pytest.mark.slow
def test_cli_report_of_two_targets(bench_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    proc = _cli("report", str(bench_json / "both.json"), "--out", str(out), "--max-accuracy-drop", "1")
    assert proc.returncode == 0, proc.stderr
    assert "tiny-cpu: best bundles/onnx" in proc.stdout
    assert "cuda-gpu: no best artifact: nothing was timed (skipped: no CUDA GPU here" in proc.stdout or \
        _has_cuda()
    md = (out / "report.md").read_text()
    assert "## `tiny-cpu`: every configuration" in md and "## `cuda-gpu`: every configuration" in md
    assert (out / "pareto.png").is_file()
    again = _cli("report", str(bench_json / "both.json"), "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("content, message", [
    (None, "bench results not found"),
    ("{not json", "is not a JSON file"),
    ('{"format": "onnx"}', "holds no edgetl bench results"),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    proc = _cli("report", str(path), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "rep").exists()


def test_library_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        write_bench_report([tmp_path / "missing.json"], tmp_path / "rep")
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "keep.txt").write_text("mine")
    bundle = {"path": str(tmp_path), "format": "onnx", "precision": "fp32", "model_sha256": "0", "file_size_bytes": 1}
    write_json(tmp_path / "empty.json", {"bundle": bundle, "target": {"name": "x"}, "rows": []})
    write_json(tmp_path / "old.json", {"bundle": {"format": "onnx"}, "target": "x", "rows": [{"engine": "x"}]})
    with pytest.raises(DataError, match="lack a field"):
        write_bench_report([tmp_path / "old.json"], tmp_path / "new")
    with pytest.raises(OutputExistsError):
        write_bench_report([tmp_path / "empty.json"], tmp_path / "rep")
    assert (tmp_path / "rep" / "keep.txt").read_text() == "mine"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetl", *args], capture_output=True, text=True, check=False)


def _has_cuda() -> bool:
    from edgetl.bench.engines import EngineSkipped
    from edgetl.bench.gpu import cuda_device_count

    try:
        return cuda_device_count() > 0
    except EngineSkipped:
        return False
