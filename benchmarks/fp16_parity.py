"""The fp16 parity table of docs/benchmarks.md, read from fp16 bundles' ``edgetl.json``.

For each bundle: format, weight ops kept float32 (of all), the selection's max |logit diff| on held-in samples
against its target, the export's verification on the test split (max and relative logit diff, top-1
agreement, accuracy against PyTorch) and the file size against the FP32 artifact it was cast from.

    edgetl export runs/fashion_mnist/run --format all --precision fp16 --out bundles/demo-fp16
    python benchmarks/fp16_parity.py bundles/demo-fp16/* --json benchmarks/results/fp16_parity_lite0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def row(bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "edgetl.json").read_text())
    if manifest["precision"] != "fp16":
        raise SystemExit(f"{bundle}: not an fp16 bundle ({manifest['precision']})")
    fp16, v = manifest["artifact"]["fp16"], manifest["verification"]
    return {
        "bundle": str(bundle), "format": manifest["format"], "kept_fp32": fp16["kept_fp32"],
        "weight_ops": fp16["weight_ops"], "selection_max_abs_diff": fp16.get("max_abs_diff"),
        "selection_samples": fp16.get("samples"), "target": fp16.get("target"), "test_n": v["n"],
        "test_max_abs_diff": v["max_abs_diff"], "test_max_rel_diff": v["max_rel_diff"],
        "top1_agreement": v["top1_agreement"], "accuracy": v["artifact_accuracy"],
        "torch_accuracy": v["reference_accuracy"], "bytes": fp16.get("bytes"), "fp32_bytes": fp16.get("fp32_bytes"),
        "size_vs_fp32": fp16["bytes"] / fp16["fp32_bytes"] if fp16.get("bytes") else None,
        "weights": manifest["artifact"].get("weights"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [row(b) for b in args.bundles]
    print("| format | kept float32 | selection max diff (n) | test max diff | rel | agreement | accuracy (torch) "
          "| size vs FP32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sel = "-" if r["selection_max_abs_diff"] is None else f"{r['selection_max_abs_diff']:.1e}"
        print(f"| {r['format']} | {r['kept_fp32']} of {r['weight_ops']} | {sel} ({r['selection_samples']}) | "
              f"{r['test_max_abs_diff']:.1e} ({r['test_n']}) | {r['test_max_rel_diff']:.1e} | "
              f"{100 * r['top1_agreement']:.2f}% | {100 * r['accuracy']:.2f}% ({100 * r['torch_accuracy']:.2f}%) | "
              f"{r['size_vs_fp32']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
