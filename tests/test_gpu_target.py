"""The cuda-gpu target: a clean skip where there is no GPU, and the GPU engines' code run as far as a CPU can.

On a machine with a CUDA GPU the skip tests are skipped and the probe test checks the driver and torch agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import make_run

from edgetl.bench import BENCH_ENGINES, load_target
from edgetl.bench.engines import EngineSkipped
from edgetl.bench.gpu import GPU_ENGINES, _skip_on_failure, cuda_device_count, device_predictor
from edgetl.errors import ConfigError
from edgetl.runtime.bundle import read_manifest


def _gpu_here() -> bool:
    try:
        return cuda_device_count() > 0
    except EngineSkipped:
        return False


NO_GPU = pytest.mark.skipif(_gpu_here(), reason="a CUDA GPU is present: the skip path does not apply")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("gpu")
    run = make_run(root, size=32)
    return {"run": run, **{fmt: export(run, fmt, root / fmt, progress=False) for fmt in ("onnx", "openvino")}}


def test_cuda_gpu_profile_sweeps_registered_engines() -> None:
    profile = load_target("cuda-gpu")
    assert profile.kind == "local" and len(profile.batch_sizes) >= 3
    assert {"torch-cuda", "torch-cuda-fp16", "torch-cuda-bf16", "onnxruntime-cuda"} <= set(profile.engines)
    assert set(profile.engines) == {engine.name for engine in GPU_ENGINES}
    for name in profile.engines:
        assert BENCH_ENGINES.get(name).name == name


def test_driver_probe_agrees_with_torch() -> None:
    import torch

    try:
        count = cuda_device_count()
    except EngineSkipped as exc:
        assert exc.message.startswith("no CUDA GPU here: ")
        assert not torch.cuda.is_available()
    else:
        assert count == torch.cuda.device_count() >= 1


@NO_GPU
@pytest.mark.slow
def test_cli_bench_on_cuda_gpu_skips_cleanly(bundles: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "edgetl", "bench", str(bundles["onnx"]), "--target", "cuda-gpu", "--batch", "1",
           "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "skipped: no CUDA GPU here" in proc.stdout
    result = json.loads(out.read_text())
    engines = [row["engine"] for row in result["rows"]]
    assert "onnxruntime-cuda" in engines and "torch-cuda-fp16" in engines and "openvino-gpu" not in engines
    for row in result["rows"]:
        assert row["status"].startswith("skipped: no CUDA GPU here: ") and row["latency_ms"] is None


def test_targets_probe_asks_the_gpu_not_the_package() -> None:
    """`edgetl targets` says cuda-gpu is available only where the driver sees a GPU (torch is always installed)."""
    from edgetl.bench.targets import describe_targets

    (row,) = describe_targets(["cuda-gpu"])
    assert row["available"] is _gpu_here()
    if not _gpu_here():
        assert "no CUDA GPU here: " in row["status"] and "(torch-cuda, torch-cuda-fp16" in row["status"]


@NO_GPU
def test_sweep_without_a_gpu_spawns_no_process(bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver is asked once per engine before any row's process; each row is what its process would say."""
    from edgetl.bench import runner

    def no_child(*args, **kwargs):
        raise AssertionError("a benchmark process was spawned")

    monkeypatch.setattr(runner, "_run_child", no_child)
    result = runner.bench_bundle(bundles["onnx"], "cuda-gpu", progress=False)
    profile = load_target("cuda-gpu")
    assert len(result["rows"]) == (len(profile.engines) - 1) * len(profile.batch_sizes)  # openvino-gpu left out
    jobs = {(job["engine"], job["batch"]): job for job in runner._jobs(read_manifest(bundles["onnx"]), profile, None)}
    for row in result["rows"]:
        in_child = runner.run_job(jobs[row["engine"], row["batch"]])  # the engine's own check, in this process
        assert {key: row[key] for key in in_child} == in_child
        assert row["status"].startswith("skipped: no CUDA GPU here: ") and row["engine_version"]


@NO_GPU
def test_engines_skip_with_the_reason_past_the_probe(bundles: dict[str, Path]) -> None:
    """Each engine's load (what runs after the driver probe on a GPU machine) says why it cannot run here."""
    onnx, openvino = read_manifest(bundles["onnx"]), read_manifest(bundles["openvino"])
    engines = {engine.name: engine for engine in GPU_ENGINES}
    with pytest.raises(EngineSkipped, match=r"torch.cuda.is_available\(\) is False|CPU-only build"):
        engines["torch-cuda-bf16"].load(onnx, 1)
    with pytest.raises(EngineSkipped, match=r"no CUDAExecutionProvider .*install onnxruntime-gpu"):
        engines["onnxruntime-cuda"].load(onnx, 1)
    with pytest.raises(EngineSkipped, match="OpenVINO sees no GPU device"):
        engines["openvino-gpu"].load(openvino, 1)
    with pytest.raises(EngineSkipped, match="runs onnx bundles, not openvino"):
        engines["onnxruntime-cuda"].check(openvino)


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 0.1), ("fp16", 0.02)])
def test_device_predictor_on_cpu_matches_torch(bundles: dict[str, Path], precision: str, tolerance: float) -> None:
    """The GPU engines' predictor (device copy, cast, inference, copy back) on the CPU device."""
    from edgetl.runfolder import load_run
    from edgetl.verify import torch_reference

    run = load_run(bundles["run"])
    batch = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    reference = torch_reference(run.model(), run.spec)(batch)
    logits = device_predictor(run.model(), run.spec, device="cpu", precision=precision)(batch)
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    scale = np.abs(reference).max()
    assert np.abs(logits - reference).max() <= tolerance * scale
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.75


def test_device_predictor_refuses_bad_settings(bundles: dict[str, Path]) -> None:
    from edgetl.runfolder import load_run

    run = load_run(bundles["run"])
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        device_predictor(run.model(), run.spec, device="cpu", mode="graph")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        device_predictor(run.model(), run.spec, device="cpu", precision="int4")


def test_first_call_failure_of_graph_or_compile_skips_the_row() -> None:
    calls = []

    def predict(x):
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("CUDA graph capture failed\ndetails")
        return x

    guarded = _skip_on_failure(predict, "graph")
    with pytest.raises(EngineSkipped, match=r"graph mode failed on this model: CUDA graph capture failed$"):
        guarded(1)
    assert guarded(2) == 2 and guarded(3) == 3  # once it ran, calls go straight through
    assert _skip_on_failure(predict, "eager") is predict
