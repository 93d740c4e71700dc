"""Text INT8 bundle vs PyTorch FP32 eager (and ONNX Runtime FP32), batch 1, same threads, side by side.

The torch model is rebuilt from the run folder named in the bundle's provenance; an FP32 ONNX twin is
exported to a temporary file with edgetl's exporter. At each sequence length (synthetic token ids of
exactly that length, no padding) and thread count, the three engines are timed in alternating rounds
on the same input, and the median of the rounds' p50 latencies is reported with the ratios. The CPU's
int8 instruction support is recorded: dynamic INT8 pays on CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX)
and little on AVX2 alone. ``--plain`` also times plain ``quantize_dynamic`` (float embedding tables, no
attention fusion), built here from the same FP32 export. The load average is recorded.

    python benchmarks/text_int8_vs_eager.py runs/rotten_tomatoes/bundle-onnx \\
        --json benchmarks/results/text_int8_vs_eager.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from edgetl.bench.runner import cpu_model
from edgetl.bench.timing import measure
from edgetl.export.onnx import OnnxExporter
from edgetl.fsutil import write_json
from edgetl.quantize.onnx_dynamic import quantize_onnx_dynamic
from edgetl.runfolder import load_run
from edgetl.runtime import Bundle, synthetic_tokens
from edgetl.runtime.engines import OrtEngine
from edgetl.verify import torch_reference

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of the int8-relevant instruction sets this CPU reports."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in INT8_FLAGS if f in flags]


def time_round(predictors: dict, inputs: dict, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each predictor's p50 (ms), the predictors alternating within each round."""
    p50s: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, predict in predictors.items():
            p50s[name].append(measure(lambda p=predict: p(inputs), warmup=3, min_runs=10, min_time_s=1.0).p50_ms)
    return {name: float(np.median(v)) for name, v in p50s.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an INT8 text bundle from `edgetl export --precision int8`")
    parser.add_argument("--seq", type=int, action="append", help="sequence lengths (default 16 64 128)")
    parser.add_argument("--threads", type=int, action="append", help="thread counts (default 1 and all cores)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", action="store_true",
                        help="also time plain quantize_dynamic (no int8 embeddings, no attention fusion)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    bundle = Bundle.load(args.bundle)
    if not bundle.spec.is_text or bundle.manifest["precision"] != "int8":
        raise SystemExit(f"{args.bundle} is not an INT8 text bundle")
    run = load_run(bundle.manifest["provenance"]["run_dir"])
    model = run.model()
    eager = torch_reference(model, run.spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        OnnxExporter().convert(model, run.spec, fp32_path)
        plain_path = Path(tmp) / "int8-plain.onnx"
        if args.plain:
            quantize_onnx_dynamic(fp32_path, plain_path, fuse_attention=False, int8_embeddings=False)
        for threads in args.threads or sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            predictors = {
                "torch_fp32_eager": eager,
                "onnxruntime_fp32": OrtEngine(fp32_path, threads=threads).run,
                "onnxruntime_int8": OrtEngine(bundle.model_path, threads=threads).run,
            }
            if args.plain:
                predictors["onnxruntime_int8_plain"] = OrtEngine(plain_path, threads=threads).run
            for seq in args.seq or (16, 64, 128):
                inputs = synthetic_tokens(bundle.tokenizer, 1, seq)
                p50 = time_round(predictors, inputs, args.rounds)
                row = {"threads": threads, "batch": 1, "seq_len": seq, **{f"{k}_p50_ms": v for k, v in p50.items()},
                       "int8_speedup_vs_eager": p50["torch_fp32_eager"] / p50["onnxruntime_int8"],
                       "int8_speedup_vs_ort_fp32": p50["onnxruntime_fp32"] / p50["onnxruntime_int8"]}
                if args.plain:
                    row["plain_int8_speedup_vs_eager"] = p50["torch_fp32_eager"] / p50["onnxruntime_int8_plain"]
                rows.append(row)
                print(f"threads {threads} seq {seq:>3}: eager {row['torch_fp32_eager_p50_ms']:.1f} ms, "
                      f"ORT fp32 {row['onnxruntime_fp32_p50_ms']:.1f} ms, ORT int8 {row['onnxruntime_int8_p50_ms']:.1f}"
                      f" ms -> int8 {row['int8_speedup_vs_eager']:.2f}x eager, "
                      f"{row['int8_speedup_vs_ort_fp32']:.2f}x ORT fp32", flush=True)
        fp32_mb = fp32_path.stat().st_size / 1e6
        plain_mb = plain_path.stat().st_size / 1e6 if args.plain else None
    verification = bundle.manifest["verification"] or {}
    write_json(args.json, {
        "benchmark": "text_int8_vs_eager",
        "bundle": str(args.bundle),
        "backbone": run.spec.backbone,
        "cpu": cpu_model(),
        "cpu_int8_flags": cpu_flags(),
        "onnx_fp32_mb": fp32_mb,
        "onnx_int8_mb": bundle.model_path.stat().st_size / 1e6,
        "onnx_int8_plain_mb": plain_mb,
        "int8_ops": sorted({node.op_type for node in onnx.load(str(bundle.model_path)).graph.node}),
        "load_average": list(os.getloadavg()),
        "accuracy": {"torch_fp32": verification.get("reference_accuracy"),
                     "onnx_int8": verification.get("artifact_accuracy"),
                     "top1_agreement": verification.get("top1_agreement"), "n": verification.get("n")},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
