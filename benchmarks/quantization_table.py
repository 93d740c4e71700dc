"""The INT8 table of docs/benchmarks.md: each run x format, FP32 against INT8 (through the accuracy ladder).

For every format it exports the run at FP32 and at INT8 (calibration set made from the run's training
split with the default recipe), both verified on the test split, and records: test accuracy of each, the
drop in points, file sizes, batch-1 latency of both measured side by side (interleaved medians, one
thread), and the ladder rung kept (or why INT8 was declined). Writes JSON and prints a Markdown table.

    python benchmarks/quantization_table.py runs/fashion_mnist/run --budget 0.5 \\
        --json benchmarks/results/quantization_efficientnet_lite0.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path

from edgetl.errors import EdgetlError
from edgetl.export import EXPORTERS, export, get_exporter
from edgetl.fsutil import read_json, write_json
from edgetl.quantize.calibration import CalibrationRecipe, calibration_for_run
from edgetl.quantize.frontend import artifact_size, time_pair


def row(run_dir: Path, fmt: str, calib: Path, budget: float, verify_limit: int | None, tmp: Path) -> dict:
    exporter = get_exporter(fmt)
    options = {"overwrite": True, "progress": False, "verify_limit": verify_limit}
    fp32 = export(run_dir, fmt, tmp / f"{fmt}-fp32", **options)
    int8 = export(run_dir, fmt, tmp / f"{fmt}-int8", precision="int8", calib=calib, max_accuracy_drop=budget,
                  **options)
    m32, m8 = read_json(fp32 / "edgetl.json"), read_json(int8 / "edgetl.json")
    q = m8["quantization"]
    f32_file, i8_file = fp32 / exporter.model_file, int8 / exporter.model_file
    sample = _sample(run_dir, m8)
    speed = time_pair(exporter.predictor(f32_file, threads=1), exporter.predictor(i8_file, threads=1), sample,
                      rounds=50)
    acc32, acc8 = m32["verification"]["artifact_accuracy"], m8["verification"]["artifact_accuracy"]
    return {
        "format": fmt, "precision": m8["precision"], "test_samples": m8["verification"]["n"],
        "fp32_accuracy": acc32, "int8_accuracy": acc8, "drop_points": round(100 * (acc32 - acc8), 3),
        "agreement": m8["verification"]["top1_agreement"],
        "fp32_mb": round(artifact_size(f32_file) / 1e6, 3), "int8_mb": round(artifact_size(i8_file) / 1e6, 3),
        "size_ratio": round(artifact_size(i8_file) / artifact_size(f32_file), 3),
        "fp32_ms": speed["fp32_ms"], "int8_ms": speed["int8_ms"], "speedup": speed["speedup"],
        "rung": q["chosen"], "declined": q["declined"], "attempts": q["attempts"],
    }


def _sample(run_dir: Path, manifest: dict):
    """One preprocessed test input (batch 1) in the bundle's own layout."""
    from edgetl.runfolder import load_run
    from edgetl.spec import ModelSpec
    from edgetl.verify import _batch, _text_batch

    run = load_run(run_dir)
    spec = ModelSpec.from_dict(manifest["spec"])
    test = run.data().test
    if spec.is_text:
        from edgetl.runtime.text import load_tokenizer

        return _text_batch(test, spec, range(1), load_tokenizer(run.path / spec.tokenizer))
    return _batch(test, spec, range(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--formats", nargs="+", default=EXPORTERS.names())
    parser.add_argument("--budget", type=float, default=0.5, help="accuracy budget in points")
    parser.add_argument("--verify-limit", type=int, default=None, help="test samples (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the bundles in KEEP/<format>-fp32 and KEEP/<format>-int8 (default: deleted)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    calib = calibration_for_run(args.run_dir, CalibrationRecipe(), progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetl-qtable-") as tmp:
        where = args.keep or Path(tmp)
        for fmt in args.formats:
            try:
                rows.append(row(args.run_dir, fmt, calib.path, args.budget, args.verify_limit, where))
            except EdgetlError as exc:  # e.g. INT8 refused by the test-split check: a result, not a crash
                rows.append({"format": fmt, "error": exc.one_line()})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "attempts"}), flush=True)
    run = read_json(args.run_dir / "model.json") if (args.run_dir / "model.json").is_file() else {}
    result = {"run": str(args.run_dir), "backbone": run.get("backbone"), "budget_points": args.budget,
              "cpu": platform.processor() or platform.machine(), "rows": rows}
    if args.json:
        write_json(args.json, result)
    print("| format | FP32 acc | INT8 acc | drop | size | FP32 ms | INT8 ms | speedup | rung |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['format']} | refused: {r['error']} |")
            continue
        rung = r["rung"] or f"declined: {r['declined']}"
        print(f"| {r['format']} | {r['fp32_accuracy']:.2%} | {r['int8_accuracy']:.2%} | {r['drop_points']:+.2f} | "
              f"{r['size_ratio']:.2f}x | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | {r['speedup']:.2f}x | {rung} |")


if __name__ == "__main__":
    main()
