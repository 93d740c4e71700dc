"""Text distillation: teacher vs student ONNX latency side by side (batch 1, fixed sequence length), and the
accuracy of teacher, KD student and no-KD student from the `edgetl distill --compare` run.

Both bundles (`edgetl export --format onnx`) run in one process on ONNX Runtime's CPU engine with the same
thread count, on the same synthetic input of exactly ``--seq`` tokens (no padding). Teacher and student
calls are interleaved one by one (see :func:`time_pair`); the p50 latencies are reported with the median of
the per-round student/teacher ratios and the ratio of the 10th-percentile calls. File sizes are the
``model.onnx`` bytes; parameters are counted from the ONNX initializers.

    python benchmarks/distill_text_latency.py bundles/teacher-onnx bundles/student-onnx \\
        --run runs/distill_rt --json benchmarks/results/distill_text.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgetl.bench.runner import cpu_model
from edgetl.fsutil import write_json
from edgetl.runtime import Bundle, synthetic_tokens
from edgetl.runtime.engines import OrtEngine


def onnx_params(path: Path) -> int:
    """Parameters stored in an ONNX file's initializers."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def time_pair(engines: dict, inputs: dict, rounds: int, min_time_s: float) -> dict:
    """Teacher and student calls interleaved one by one (the order flipped every pair), in ``rounds`` rounds.

    Interleaving call by call gives both models the same machine load, which matters on a shared CPU: each
    round's student/teacher ratio of p50s is a paired measurement, and the median over rounds is reported,
    with the ratio of the 10th-percentile calls (the fast end, less sensitive to load than the median).
    """
    names = list(engines)
    for name in names:
        for _ in range(5):
            engines[name].run(inputs)
    calls: dict[str, list[float]] = {name: [] for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        lat: dict[str, list[float]] = {name: [] for name in names}
        t_end, pair = time.perf_counter() + min_time_s * len(names), 0
        while time.perf_counter() < t_end or pair < 20:
            for name in names if pair % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                engines[name].run(inputs)
                lat[name].append((time.perf_counter() - t0) * 1e3)
            pair += 1
        for name in names:
            calls[name] += lat[name]
            per_round[name].append(float(np.median(lat[name])))
    ratios = [s / t for t, s in zip(per_round["teacher"], per_round["student"], strict=True)]
    p10 = {name: float(np.percentile(v, 10)) for name, v in calls.items()}
    return {"teacher_p50_ms": float(np.median(calls["teacher"])), "student_p50_ms": float(np.median(calls["student"])),
            "teacher_p10_ms": p10["teacher"], "student_p10_ms": p10["student"],
            "student_over_teacher": float(np.median(ratios)),
            "student_over_teacher_p10": p10["student"] / p10["teacher"],
            "calls_each": len(calls["teacher"]), "round_ratios": [round(x, 4) for x in ratios],
            "round_p50_ms": {k: [round(x, 3) for x in v] for k, v in per_round.items()}}


def run_figures(run_dir: Path) -> dict:
    """Teacher / KD student / no-KD student accuracy from a distill run's metrics.json."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    d = metrics["distill"]
    rows = d["comparison"]
    out = {key: {k: rows[key].get(k) for k in ("accuracy", "macro_f1", "params", "file_bytes")} for key in rows}
    teacher = rows["teacher"]["accuracy"]
    out["retention_kd"] = rows["student_kd"]["accuracy"] / teacher
    if "student_no_kd" in rows:
        out["retention_no_kd"] = rows["student_no_kd"]["accuracy"] / teacher
        out["kd_minus_no_kd_points"] = 100 * (rows["student_kd"]["accuracy"] - rows["student_no_kd"]["accuracy"])
    out.update(n_test=metrics["test"]["n"], terms=d["terms"], student_layers_from_teacher=d.get(
        "student_layers_from_teacher"), teacher_run=d["teacher"], epoch_seconds=d["epoch_seconds"],
        kd_val_accuracy=[h["val_accuracy"] for h in metrics.get("history", [])])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path, help="the teacher's ONNX bundle")
    parser.add_argument("student", type=Path, help="the student's ONNX bundle")
    parser.add_argument("--run", type=Path, help="the `edgetl distill --compare` run folder (accuracy figures)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, action="append", help="thread counts (default 1)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per engine per round")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    bundles = {"teacher": Bundle.load(args.teacher), "student": Bundle.load(args.student)}
    for name, b in bundles.items():
        if not b.spec.is_text or b.manifest["format"] != "onnx":
            raise SystemExit(f"the {name} {b.path} is not an ONNX text bundle")
    inputs = synthetic_tokens(bundles["teacher"].tokenizer, args.batch, args.seq)
    models = {name: {"bundle": str(path), "backbone": bundles[name].spec.backbone,
                     "precision": bundles[name].manifest.get("precision"),
                     "file_bytes": bundles[name].model_path.stat().st_size,
                     "params": onnx_params(bundles[name].model_path)}
              for name, path in (("teacher", args.teacher), ("student", args.student))}
    rows = []
    for threads in args.threads or [1]:
        engines = {name: OrtEngine(b.model_path, threads=threads) for name, b in bundles.items()}
        row = {"threads": threads, "batch": args.batch, "seq_len": args.seq,
               **time_pair(engines, inputs, args.rounds, args.min_time)}
        rows.append(row)
        print(f"threads {threads} batch {args.batch} seq {args.seq}: teacher {row['teacher_p50_ms']:.2f} ms, "
              f"student {row['student_p50_ms']:.2f} ms -> ratio {row['student_over_teacher']:.3f} "
              f"(p10 calls {row['student_over_teacher_p10']:.3f}, rounds {row['round_ratios']})", flush=True)
    result = {"benchmark": "distill_text_latency", "cpu": cpu_model(), "engine": "onnxruntime", "models": models,
              "size_ratio": models["student"]["file_bytes"] / models["teacher"]["file_bytes"],
              "params_ratio": models["student"]["params"] / models["teacher"]["params"], "rows": rows}
    if args.run:
        result["run"] = str(args.run)
        result["accuracy"] = run_figures(args.run)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
