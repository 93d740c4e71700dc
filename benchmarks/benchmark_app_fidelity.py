"""Fidelity of `edgetl bench`: its OpenVINO latency against OpenVINO's own benchmark_app on the same IR.

For each thread count x batch size, `edgetl bench` (engine ``openvino``: a fresh process, the bundle's IR
compiled with ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_PRECISION_HINT=f32`` and ``INFERENCE_NUM_THREADS``)
and ``benchmark_app`` (sync API, one infer request, the same three properties given with ``-load_config``,
``-data_shape`` at the batch, ``-ip f32``: float32 input as edgetl feeds it, not benchmark_app's default u8
image input; random inputs refilled every iteration as the model's batch axis is dynamic)
each time the model for ``--seconds``; both report the median per-call latency. The two tools alternate
(which one goes first flips every repeat), so a noisy neighbour hurts both alike. The compiled models'
properties (streams, threads, precision, pinning) are read back from both and recorded.

Goals: the medians of the repeats agree within 10%, and each tool's repeats have a coefficient of
variation (std / mean of the per-repeat medians) under 5%.

    python benchmarks/benchmark_app_fidelity.py bundles/mnv3s-224-openvino --threads 1 2 --batch 1 8 \\
        --repeats 3 --json benchmarks/results/benchmark_app_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.bench.runner import bench_bundle, machine_info
from edgetl.bench.targets import TargetProfile
from edgetl.fsutil import read_json, write_json
from edgetl.runtime.bundle import read_manifest

#: The compiled-model properties compared between the two tools.
PROPERTIES = ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT",
              "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING")
GOAL_DIFF, GOAL_CV = 0.10, 0.05


def benchmark_app_command() -> list[str]:
    """The benchmark_app the installed openvino wheel ships (console script beside this Python, else module)."""
    script = Path(sys.executable).with_name("benchmark_app")
    if script.is_file():
        return [str(script)]
    if found := shutil.which("benchmark_app"):
        return [found]
    return [sys.executable, "-c", "from openvino.tools.benchmark.main import main; main()"]


def run_benchmark_app(xml: Path, shape: list[int], threads: int, seconds: int, tmp: Path) -> dict[str, Any]:
    """One benchmark_app run: median/mean latency (ms), iterations and the compiled model's properties."""
    config = tmp / f"config-{threads}.json"
    config.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                          "INFERENCE_NUM_THREADS": str(threads)}}))
    report = tmp / "report"
    shutil.rmtree(report, ignore_errors=True)
    report.mkdir()
    cmd = [*benchmark_app_command(), "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
           "-nireq", "1", "-load_config", str(config), "-data_shape", str(shape).replace(" ", ""), "-ip", "f32",
           "-t", str(seconds), "-report_type", "no_counters", "-json_stats", "-report_folder", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark_app failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    results = read_json(report / "benchmark_report.json")["execution_results"]
    found = dict(re.findall(r"\[ INFO \]\s+([A-Z_]+): (.+)", proc.stdout))
    return {"p50_ms": float(results["latency (ms)"]), "mean_ms": float(results["avg latency"]),
            "iterations": int(results["total number of iterations"]),
            "properties": {k: _normalise(found.get(k)) for k in PROPERTIES}}


def run_edgetl(bundle: Path, threads: int, batch: int, seconds: float) -> dict[str, Any]:
    """One `edgetl bench` row (engine openvino): median latency (ms) and iterations."""
    profile = TargetProfile(name="fidelity", engines=("openvino",), threads=(threads,), batch_sizes=(batch,),
                            warmup=10, min_runs=20, min_time_s=seconds, max_time_s=4 * seconds)
    row = bench_bundle(bundle, profile, progress=False)["rows"][0]
    if row["status"] != "ok":
        raise SystemExit(f"edgetl bench: {row['status']}")
    lat = row["latency_ms"]
    return {"p50_ms": lat["p50_ms"], "mean_ms": lat["mean_ms"], "iterations": lat["runs"]}


def edgetl_properties(xml: Path, threads: int) -> dict[str, str | None]:
    """The properties of the model as edgetl's OpenVINO engine compiles it."""
    from edgetl.runtime.openvino_engine import OpenVINOEngine

    compiled = OpenVINOEngine(xml, threads=threads).compiled
    return {k: _normalise(str(compiled.get_property(k))) for k in PROPERTIES}


def _normalise(value: str | None) -> str | None:
    """``<Type: 'float32'>`` and ``f32`` alike, ``PerformanceMode.LATENCY`` and ``LATENCY`` alike."""
    if value is None:
        return None
    value = value.strip().split(".")[-1]
    return {"<Type: 'float32'>": "f32", "float32": "f32"}.get(value, value)


def summarise(edgetl: list[float], app: list[float]) -> dict[str, Any]:
    """Medians, their relative difference and each tool's coefficient of variation."""
    e, a = float(np.median(edgetl)), float(np.median(app))
    cv_e, cv_a = float(np.std(edgetl) / np.mean(edgetl)), float(np.std(app) / np.mean(app))
    return {"edgetl_p50_ms": e, "benchmark_app_p50_ms": a, "diff": e / a - 1, "edgetl_cv": cv_e,
            "benchmark_app_cv": cv_a, "meets_diff_goal": abs(e / a - 1) <= GOAL_DIFF,
            "meets_cv_goal": cv_e < GOAL_CV and cv_a < GOAL_CV}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an OpenVINO bundle (edgetl export --format openvino)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="timed seconds per tool and run")
    parser.add_argument("--json", required=True, type=Path)
    args = parser.parse_args()
    manifest = read_manifest(args.bundle)
    if manifest.format != "openvino" or manifest.spec.is_text:
        raise SystemExit("give an OpenVINO image bundle (edgetl export RUN --format openvino)")
    height, width = manifest.spec.input_size
    machine = machine_info()
    configs = [(t, b) for t in args.threads for b in args.batch]
    runs: dict[tuple[int, int], dict[str, list]] = {c: {"edgetl": [], "benchmark_app": []} for c in configs}
    properties: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        for rep in range(args.repeats):
            for threads, batch in configs:
                shape = [batch, 3, height, width]
                order = ("edgetl", "benchmark_app") if rep % 2 == 0 else ("benchmark_app", "edgetl")
                for tool in order:
                    if tool == "edgetl":
                        result = run_edgetl(args.bundle, threads, batch, args.seconds)
                    else:
                        result = run_benchmark_app(manifest.model_path, shape, threads, args.seconds, Path(tmp))
                        properties[f"benchmark_app threads={threads}"] = result.pop("properties")
                    runs[threads, batch][tool].append(result)
                    print(f"repeat {rep + 1} threads={threads} batch={batch} {tool:<13} p50 "
                          f"{result['p50_ms']:.3f} ms ({result['iterations']} calls)", flush=True)
    for threads in args.threads:
        properties[f"edgetl threads={threads}"] = edgetl_properties(manifest.model_path, threads)
    rows = []
    for (threads, batch), by_tool in runs.items():
        summary = summarise([r["p50_ms"] for r in by_tool["edgetl"]], [r["p50_ms"] for r in by_tool["benchmark_app"]])
        rows.append({"threads": threads, "batch": batch, **summary, "runs": by_tool})
    print("\n| threads | batch | edgetl p50 ms | benchmark_app p50 ms | diff | CV edgetl | CV benchmark_app |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['batch']} | {r['edgetl_p50_ms']:.3f} | {r['benchmark_app_p50_ms']:.3f} |"
              f" {100 * r['diff']:+.1f}% | {100 * r['edgetl_cv']:.1f}% | {100 * r['benchmark_app_cv']:.1f}% |")
    write_json(args.json, {
        "benchmark": "benchmark_app_fidelity", "bundle": str(args.bundle), "model": manifest.spec.backbone,
        "input_size": [height, width], "repeats": args.repeats, "seconds": args.seconds,
        "goals": {"max_median_diff": GOAL_DIFF, "max_cv": GOAL_CV}, "machine": machine,
        "openvino": _version("openvino"), "python": platform.python_version(),
        "benchmark_app": benchmark_app_command(), "properties": properties, "rows": rows,
    })


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
