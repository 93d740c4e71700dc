"""ONNX Runtime vs PyTorch eager latency for every registered backbone, measured side by side.

Each backbone (10-class head, its default input size unless --image-size) is exported with edgetl's ONNX
exporter and both engines are timed on the same input, interleaved, at batch 1 with 1 thread and with all
cores. Reports p50 latencies and the eager/ORT ratio.

    python benchmarks/onnx_vs_eager.py --json benchmarks/results/onnx_vs_eager.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetl.bench.timing import measure
from edgetl.export.onnx import OnnxExporter
from edgetl.fsutil import write_json
from edgetl.models import BACKBONES, build_classifier, default_spec
from edgetl.runtime.engines import OrtEngine

LABELS = [str(i) for i in range(10)]


def time_pair(model, engine: OrtEngine, x: np.ndarray, threads: int) -> dict:
    """Median latency (ms) of eager torch and ORT on ``x``, alternating rounds."""
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    eager, ort = [], []
    with torch.inference_mode():
        for _ in range(3):
            eager.append(measure(lambda: model(xt), warmup=3, min_runs=10, min_time_s=0.5).p50_ms)
            ort.append(measure(lambda: engine.run(x), warmup=3, min_runs=10, min_time_s=0.5).p50_ms)
    e, o = float(np.median(eager)), float(np.median(ort))
    return {"threads": threads, "torch_eager_p50_ms": e, "onnxruntime_p50_ms": o, "speedup": e / o}


def bench_backbone(name: str, size: int | None, tmp: Path) -> dict:
    model, weights = build_classifier(name, len(LABELS))
    model.eval()
    spec = default_spec(name, LABELS, input_size=(size, size) if size else None)
    path = tmp / f"{name}.onnx"
    OnnxExporter().convert(model, spec, path)
    x = np.random.default_rng(0).standard_normal((1, 3, *spec.input_size)).astype(np.float32)
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        engine = OrtEngine(path, threads=threads)
        rows.append(time_pair(model, engine, x, threads))
        print(f"{name:<20} {threads} thr: eager {rows[-1]['torch_eager_p50_ms']:.2f} ms, "
              f"ORT {rows[-1]['onnxruntime_p50_ms']:.2f} ms ({rows[-1]['speedup']:.1f}x)", flush=True)
    return {"backbone": name, "input_size": list(spec.input_size), "weights": weights.source,
            "onnx_mb": path.stat().st_size / 1e6, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=None, help="square input (default: backbone's)")
    parser.add_argument("--backbone", action="append", help="only these (default: all registered)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_backbone(n, args.image_size, Path(tmp)) for n in args.backbone or BACKBONES.names()]
    write_json(args.json, {"benchmark": "onnx_vs_eager", "batch": 1, "results": results})


if __name__ == "__main__":
    main()
