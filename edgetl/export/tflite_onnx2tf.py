"""The second TFLite route: torch -> fixed-shape ONNX -> onnx2tf (TensorFlow) -> one ``.tflite`` file.

:mod:`edgetl.export.tflite` uses it when litert-torch cannot convert a model, or when asked to
(``edgetl export RUN --format tflite --tflite-route onnx2tf``). It needs the ``tf`` extra (TensorFlow,
tf-keras, onnx-graphsurgeon, sng4onnx) and onnx2tf itself, installed without its dependencies because it
pins old numpy, onnx and protobuf: ``pip install -e '.[tf]' && pip install --no-deps onnx2tf==1.29.24``
(``make install`` does both).

The file follows the same contract as the litert-torch route's, so the engine runs it unchanged:

- Images: the ONNX file is written from the run's own NCHW model with a fixed ``(1, 3, H, W)`` input;
  onnx2tf transposes a 4-D image input to NHWC itself, so the ``.tflite`` input is ``(1, H, W, 3)``.
- Text: int64 ``input_ids`` and ``attention_mask`` of fixed shape ``(1, spec.max_length)``. onnx2tf writes
  one shape per file, so there is one signature, at ``spec.max_length``; the engine pads shorter batches to
  it with ``attention_mask`` 0, which leaves the logits unchanged (only slower than a shorter signature).
- Erf (the exact GELU of BERT-like models) is replaced by onnx2tf's pseudo-op; otherwise the file would
  carry ``FlexErf``, which ai-edge-litert cannot run.
- The float32 file is kept; FP16 and INT8 files are made from it as from the first route's.

onnx2tf runs in a child Python process whose working folder is a private temporary folder: onnx2tf looks
there for a sample-image file and otherwise downloads one from GitHub (impossible offline), so the folder
holds a deterministic one; TensorFlow's import (~5 s, ~1 GB) and threads stay out of the exporting
process; and onnx2tf overwrites its input ONNX file in place, which then harms nobody.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from edgetl.errors import ConfigError, ExportError
from edgetl.export.bundle import INPUT_NAME, OUTPUT_NAME, input_names
from edgetl.spec import ModelSpec

log = logging.getLogger("edgetl")

ROUTE = "onnx2tf"
#: Importable names the route needs (the ``tf`` extra, and onnx2tf installed with ``--no-deps``).
MODULES = ("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon", "sng4onnx")
INSTALL_HINT = "pip install -e '.[tf]' && pip install --no-deps onnx2tf==1.29.24 (make install does both)"
#: Longest a conversion may take (DistilBERT takes ~10 min on 2 cores).
TIMEOUT_S = 3600
#: onnx2tf's sample images, read from the working folder (else downloaded): 20 NHWC images, 128 px.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_ERROR_MARK = "edgetl-onnx2tf-error: "
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def missing_modules() -> list[str]:
    """The modules of :data:`MODULES` that cannot be imported (found without importing them)."""
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def check_available() -> None:
    """Raise ConfigError naming what is missing when the route cannot run."""
    missing = missing_modules()
    if missing:
        raise ConfigError(f"the onnx2tf TFLite route needs {', '.join(missing)}, which cannot be imported",
                          INSTALL_HINT)


def convert(model: Any, spec: ModelSpec, path: Path, *, opset: int) -> dict[str, Any]:
    """Write ``model`` to ``path`` as FP32 TFLite through a fixed-shape ONNX file and onnx2tf.

    Args:
        model: The run's torch model (NCHW for images).
        spec: The bundle spec (NHWC for images).
        path: The ``.tflite`` file to write.
        opset: The ONNX opset of the intermediate file.

    Returns:
        Facts for ``edgetl.json``'s ``artifact`` entry (route, versions, opset, sequence lengths for text).

    Raises:
        ConfigError: The route's packages are missing.
        ExportError: The ONNX export or onnx2tf failed (one line naming the first cause), or the file's
            inputs and outputs are not the expected ones.
    """
    check_available()
    with tempfile.TemporaryDirectory(prefix="edgetl-onnx2tf-") as tmp:
        work = Path(tmp)
        onnx_path = work / "model.onnx"
        exporter = _export_onnx(model, spec, onnx_path, opset)
        _fold_shape_computations(onnx_path)
        _write_sample_images(work / SAMPLE_FILE)
        _run_onnx2tf(work, onnx_path, work / "tf", pseudo_ops=_pseudo_ops(onnx_path))
        written = work / "tf" / "model_float32.tflite"
        _check_io(written, spec)  # before it reaches ``path``: a refused file is never left behind
        path.write_bytes(written.read_bytes())
    facts: dict[str, Any] = {
        "route": ROUTE,
        "onnx2tf_version": importlib.metadata.version("onnx2tf"),
        "tensorflow_version": importlib.metadata.version("tensorflow"),
        "onnx_exporter": exporter,
        "opset": opset,
    }
    if spec.is_text:
        facts["sequence_lengths"] = [int(spec.max_length)]
    return facts


def fixed_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The ONNX file's fixed input shapes: NCHW batch 1 for images, ``(1, max_length)`` for text."""
    if spec.is_text:
        return dict.fromkeys(input_names(spec), (1, int(spec.max_length)))
    height, width = spec.input_size
    return {INPUT_NAME: (1, 3, height, width)}


def _export_onnx(model: Any, spec: ModelSpec, path: Path, opset: int) -> str:
    """Write a fixed-shape ONNX file and return which exporter wrote it.

    Images: the TorchScript exporter (fast), else the dynamo one. Text: the dynamo exporter first, since
    onnx2tf's accuracy correction fails on the TorchScript graph of BERT-like attention (``Output tensors of
    a Functional model must be the output of a TensorFlow Layer`` at the scores' scaling ``Mul``).
    """
    import torch

    module, dummy = _module_and_inputs(model, spec)
    names = input_names(spec)
    exporters = ("dynamo", "torchscript") if spec.is_text else ("torchscript", "dynamo")
    errors = []
    for exporter in exporters:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
                warnings.filterwarnings("ignore", message=".*feature will be removed.*")
                options = {"do_constant_folding": True} if exporter == "torchscript" else {
                    "external_data": False, "verbose": False}
                torch.onnx.export(module, dummy, str(path), input_names=names, output_names=[OUTPUT_NAME],
                                  opset_version=opset, dynamo=exporter == "dynamo", **options)
            return f"torch.onnx ({exporter})"
        except Exception as exc:
            log.info("the %s ONNX exporter failed: %s", exporter, _one_line(exc))
            errors.append(exc)
    raise ExportError(f"ONNX export for onnx2tf failed: {_one_line(errors[0])}",
                      "the model uses an op ONNX cannot express") from errors[-1]


def _module_and_inputs(model: Any, spec: ModelSpec) -> tuple[Any, tuple[Any, ...]]:
    """The module to trace with positional inputs, and example inputs of the fixed shapes."""
    import torch

    shapes = fixed_shapes(spec)
    generator = torch.Generator().manual_seed(0)
    if spec.is_text:
        from edgetl.export.onnx import text_inputs_module

        (length,) = {shape[1] for shape in shapes.values()}
        ids = torch.randint(1000, 2000, (1, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[:, length - max(1, length // 4):] = 0  # a padded tail, so the mask's path is traced with real values
        return text_inputs_module(model).eval(), (ids, mask)
    return model.eval(), (torch.randn(*shapes[INPUT_NAME], generator=generator),)


def _fold_shape_computations(onnx_path: Path) -> None:
    """Fold a graph's shape arithmetic into constants with ONNX Runtime's basic (standard-op) optimizations.

    With fixed input shapes these computations are constants, but the TorchScript exporter keeps them (e.g.
    timm's TF-"same" padding of EfficientNet-Lite: ``Shape -> Ceil -> Sub -> Pad``), and onnx2tf fails on the
    dynamic ``Pad`` they feed. onnx2tf would use onnxsim for this; ONNX Runtime is already installed. Graphs
    without ``Shape`` ops are left as they are.
    """
    import onnx
    import onnxruntime as ort

    if not any(node.op_type == "Shape" for node in onnx.load(str(onnx_path), load_external_data=False).graph.node):
        return
    folded = onnx_path.with_name("folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    folded.replace(onnx_path)
    log.info("folded the ONNX graph's shape computations (ONNX Runtime basic optimizations)")


def _pseudo_ops(onnx_path: Path) -> list[str]:
    """onnx2tf pseudo-op replacements the graph needs (lowercase names: onnx2tf ignores ``"Erf"``)."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    return ["erf"] if "Erf" in ops else []


def _write_sample_images(path: Path) -> None:
    """onnx2tf's sample-image file, deterministic (standard normal, like normalized pixels)."""
    import numpy as np

    np.save(path, np.random.default_rng(0).standard_normal((20, 128, 128, 3), dtype=np.float32))


def _run_onnx2tf(work: Path, onnx_path: Path, out_dir: Path, *, pseudo_ops: list[str]) -> None:
    """Run onnx2tf in a child Python inside ``work``; raise ExportError with its first cause on failure."""
    job = {"input_onnx_file_path": str(onnx_path), "output_folder_path": str(out_dir),
           "copy_onnx_input_output_names_to_tflite": True, "output_signaturedefs": True,
           "not_use_onnxsim": True,  # onnxsim is not installed (and optional)
           "replace_to_pseudo_operators": pseudo_ops, "non_verbose": True}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "edgetl.export.tflite_onnx2tf", json.dumps(job)]
    try:
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"onnx2tf did not finish within {TIMEOUT_S} s", "export to onnx instead") from None
    log.debug("onnx2tf output:\n%s%s", proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise ExportError(f"onnx2tf failed: {_child_error(proc.stdout, proc.stderr)}",
                          "run with -v to see onnx2tf's log; export to onnx instead")


def _child_error(stdout: str, stderr: str) -> str:
    """The child's one-line error: its own mark, else the last exception or ERROR line it printed."""
    lines = [_ANSI.sub("", line).strip() for line in (stdout + "\n" + stderr).splitlines()]
    marked = [line[len(_ERROR_MARK):] for line in lines if line.startswith(_ERROR_MARK)]
    if marked:
        return marked[-1]
    exceptions = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    errors = [line for line in lines if line.startswith("ERROR:") and "trace log" not in line]
    found = exceptions or errors or [line for line in lines if line] or ["no output"]
    where = [line.split("onnx_op_name:", 1)[1].strip() for line in lines if line.startswith("ERROR: onnx_op_name:")]
    return _clip(found[-1] + (f" (at ONNX node {where[-1]})" if where else ""))


def _check_io(path: Path, spec: ModelSpec) -> None:
    """Confirm the file opens in ai-edge-litert with the expected input and output names."""
    from edgetl.errors import RunFolderError
    from edgetl.runtime.tflite_engine import TFLiteEngine

    try:
        engine = TFLiteEngine(path)
    except RunFolderError as exc:
        flex = sorted(set(re.findall(r"Flex\w+", exc.message)))
        what = (f"TensorFlow ops ({', '.join(flex)}) that ai-edge-litert cannot run" if flex
                else f"a file ai-edge-litert cannot load ({exc.message})")
        raise ExportError(f"onnx2tf wrote {what}", "export to onnx or openvino instead") from None
    names, output = engine.input_names, engine.signatures[0].output
    if sorted(names) != sorted(input_names(spec)) or output != OUTPUT_NAME:
        raise ExportError(f"onnx2tf wrote inputs {names} and output {output!r}, expected "
                          f"{input_names(spec)} and {OUTPUT_NAME!r}", "report the backbone")


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _child_main(job_json: str) -> int:
    """The child process: run ``onnx2tf.convert(**job)``; on failure print one marked line and return 1."""
    try:
        import onnx2tf

        onnx2tf.convert(**json.loads(job_json))
    except SystemExit as exc:  # onnx2tf prints an op's failure, then calls sys.exit(1)
        return int(exc.code) if isinstance(exc.code, int) and exc.code else 1
    except Exception as exc:
        print(f"{_ERROR_MARK}{_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
