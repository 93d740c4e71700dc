"""OpenVINO INT8 with and without float16 vectors, side by side: size, accuracy and agreement.

NNCF's post-training quantization of the run's FP32 IR (performance preset, the same calibration set) is
written twice: with the weights' scales, the FakeQuantize limits and the biases stored as float16 where that
makes the file smaller (edgetl's default, ``edgetl.export.openvino_ir.half_vectors``) and with them float32
as NNCF leaves them. Both, and the FP32 IR, are scored on the run's whole validation and test splits.

    edgetl export RUN --format openvino --out bundles/ov-fp32
    edgetl calibrate --run RUN --out calib/run
    python benchmarks/openvino_half_vectors.py RUN bundles/ov-fp32 calib/run \\
        --json benchmarks/results/openvino_half_vectors_mobilenet_v3_small.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.fsutil import read_json, write_json
from edgetl.quantize.calibration import load_calibration
from edgetl.quantize.frontend import artifact_size
from edgetl.quantize.openvino_nncf import quantize_ptq
from edgetl.runfolder import load_run
from edgetl.runtime.openvino_engine import OpenVINOEngine
from edgetl.runtime.text import load_tokenizer
from edgetl.spec import ModelSpec
from edgetl.verify import labelled_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("fp32_bundle", type=Path, help="the run's FP32 OpenVINO bundle")
    parser.add_argument("calib", type=Path, help="calibration set folder (edgetl calibrate)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    spec = ModelSpec.from_dict(read_json(args.fp32_bundle / "edgetl.json")["spec"])
    tokenizer = load_tokenizer(run.path / spec.tokenizer) if spec.is_text else None
    calib = load_calibration(args.calib).batches(spec, tokenizer=tokenizer)
    fp32 = args.fp32_bundle / "model.xml"
    rows: dict[str, dict] = {"fp32": {"bytes": artifact_size(fp32)}}
    with tempfile.TemporaryDirectory(prefix="edgetl-half-") as tmp:
        for name, half in (("int8_float16_vectors", True), ("int8_float32_vectors", False)):
            dst = Path(tmp) / name / "model.xml"
            facts = quantize_ptq(fp32, dst, calib, text=spec.is_text, float16_vectors=half)
            rows[name] = {"bytes": artifact_size(dst), "float16_vectors": facts["float16_vectors"]}
            rows[name]["size_vs_fp32"] = round(rows[name]["bytes"] / rows["fp32"]["bytes"], 4)
        engines = {"fp32": OpenVINOEngine(fp32)} | {k: OpenVINOEngine(Path(tmp) / k / "model.xml") for k in rows
                                                      if k != "fp32"}
        data = run.data()
        agreement = {}
        for split_name, split in (("val", data.val), ("test", data.test)):
            top, labels = _top1(engines, split, spec, tokenizer)
            for name, pred in top.items():
                rows[name][f"{split_name}_accuracy"] = round(float(np.mean(pred == labels)), 5)
            agreement[split_name] = round(float(np.mean(top["int8_float16_vectors"] == top["int8_float32_vectors"])),
                                          5)
    result = {"run": str(args.run_dir), "rows": rows, "agreement_float16_vs_float32_vectors": agreement}
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result, indent=1))


def _top1(engines: dict[str, OpenVINOEngine], split: Any, spec: ModelSpec,
          tokenizer: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each engine's top-1 class and the labels, over the whole split."""
    top: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    labels = []
    for x, y in labelled_batches(split, spec, limit=None, batch_size=256, tokenizer=tokenizer):
        labels.append(np.asarray(y))
        for name, engine in engines.items():
            top[name].append(engine.run(x).argmax(1))
    return {k: np.concatenate(v) for k, v in top.items()}, np.concatenate(labels)


if __name__ == "__main__":
    main()
