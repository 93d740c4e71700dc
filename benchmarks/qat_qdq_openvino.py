"""Can OpenVINO run the QAT rung's QDQ ONNX file as an INT8 IR? Four engines on the same test images.

The ONNX QAT rung writes a QDQ graph (FX ``convert_fx`` + the TorchScript exporter); the OpenVINO QAT rung
reads that graph into an INT8 IR (:func:`edgetl.quantize.qat_openvino.qdq_to_ir`). This scores, on the
first ``--n`` Fashion-MNIST test images, each against the first row:

- ONNX Runtime with graph optimizations off: Q and DQ run as written (the QDQ graph's reference meaning);
- ONNX Runtime as bundles run it (fused int8 kernels);
- OpenVINO CPU on the IR edgetl writes (FP32 inference precision; the CPU plugin runs it as INT8);
- the same IR with the CPU plugin's low-precision transformations off (``LP_TRANSFORMS_MODE=NO``);
- OpenVINO CPU on the IR ``ov.convert_model`` makes of the same file (its MOC transformations applied).

    python benchmarks/qat_qdq_openvino.py runs/lite0 bundles/lite0-qat200g --n 2000 \\
        --json benchmarks/results/qat_qdq_openvino_efficientnet_lite0.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov

from edgetl.data import load_image_data
from edgetl.fsutil import write_json
from edgetl.quantize.qat_openvino import qdq_to_ir
from edgetl.runfolder import load_run
from edgetl.train.tasks import TASKS, Built


def test_batches(run_dir: Path, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``n`` official test images, preprocessed as the run's spec says, in batches of 100."""
    run = load_run(run_dir)
    test = load_image_data("fashion-mnist").test
    built = Built(run.model().eval(), run.spec, None, {})
    loader = TASKS.get("image").loader(test, built, run.config, train=False, batch_size=100)
    images, labels = [], []
    for x, y in loader:
        images.append(x.contiguous().numpy())
        labels.append(y.numpy())
        if sum(len(b) for b in labels) >= n:
            break
    return images, np.concatenate(labels)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder the bundle was exported from")
    parser.add_argument("bundle", type=Path, help="an ONNX INT8 bundle made by the QAT rung (--method qat)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    onnx_file = args.bundle / "model.onnx"
    images, labels = test_batches(args.run, args.n)

    def ort_engine(level: ort.GraphOptimizationLevel):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        xml, converted = Path(tmp) / "edgetl" / "model.xml", Path(tmp) / "convert_model" / "model.xml"
        qdq_to_ir(onnx_file, xml)
        converted.parent.mkdir()
        ov.save_model(ov.convert_model(str(onnx_file)), str(converted), compress_to_fp16=False)
        sizes = {path.parent.name: path.stat().st_size + path.with_suffix(".bin").stat().st_size
                 for path in (xml, converted)}

        def ov_engine(path: Path, **extra: str):
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                             "INFERENCE_NUM_THREADS": 1, **extra})
            return lambda x: compiled(x)[0]

        levels = ort.GraphOptimizationLevel
        engines = {"onnxruntime, no graph optimizations (reference)": ort_engine(levels.ORT_DISABLE_ALL),
                   "onnxruntime, as bundles run it": ort_engine(levels.ORT_ENABLE_ALL),
                   "openvino CPU, the IR edgetl writes": ov_engine(xml),
                   "openvino CPU, that IR, low-precision transformations off": ov_engine(xml, LP_TRANSFORMS_MODE="NO"),
                   "openvino CPU, the IR ov.convert_model writes": ov_engine(converted)}
        logits = {name: np.concatenate([run(x) for x in images])[:args.n] for name, run in engines.items()}
    reference = next(iter(logits.values()))
    rows = {name: {"accuracy": round(float((out.argmax(1) == labels).mean()), 4),
                   "agreement_with_reference": round(float((out.argmax(1) == reference.argmax(1)).mean()), 4),
                   "max_abs_diff": round(float(np.abs(out - reference).max()), 4)}
            for name, out in logits.items()}
    for name, row in rows.items():
        print(f"{name:58s} {row}")
    write_json(args.json, {"benchmark": "qat_qdq_openvino", "run": str(args.run), "bundle": str(args.bundle),
                           "n": len(labels), "onnx_bytes": onnx_file.stat().st_size, "ir_bytes": sizes,
                           "openvino": ov.__version__, "onnxruntime": ort.__version__, "rows": rows})


if __name__ == "__main__":
    main()
