"""GPU bench engines: PyTorch on CUDA (fp32, fp16, bf16; eager, CUDA graphs, torch.compile), ONNX Runtime's
CUDA provider and OpenVINO's GPU plugin.

Every timed call is what an app pays: the input batch is copied host -> device, the model runs, the logits
are copied back, and ``torch.cuda.synchronize()`` returns before the clock stops (ONNX Runtime and OpenVINO
return host arrays, so their calls have finished when they return). fp32 means fp32: TF32 is turned off for
convolutions and matmuls.

Where there is no GPU, each engine raises :class:`~edgetl.bench.engines.EngineSkipped` with one clear line,
so the benchmark row says ``skipped: no CUDA GPU here: ...`` instead of failing. The NVIDIA driver is asked
through ``ctypes`` (``cuInit``/``cuDeviceGetCount``), so the skip costs no torch import. Each engine's
``host_check()`` asks what does not depend on the bundle (a GPU, the provider or plugin that drives it): the
benchmark calls it once per engine before spawning a process per row, and ``edgetl targets`` probes with it.
Heavy libraries are imported only in :meth:`import_backend`/:meth:`load` (``host_check`` of the ONNX Runtime
and OpenVINO engines imports their library, not torch).
"""

from __future__ import annotations

import ctypes
import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from edgetl.bench.engines import EngineSkipped, LoadedEngine, TorchBench
from edgetl.errors import ConfigError
from edgetl.runtime.bundle import Manifest
from edgetl.runtime.engines import Inputs, prepare_feeds

#: Precision name -> torch dtype name.
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: How the PyTorch model runs: as is, replayed from a captured CUDA graph, or compiled by torch.compile.
TORCH_MODES = ("eager", "graph", "compile")
_CUDA_NO_DEVICE = 100  # CUDA_ERROR_NO_DEVICE
_CUDA_LIBRARIES = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")


def cuda_device_count() -> int:
    """CUDA devices the NVIDIA driver reports, asked through the driver API (no torch import).

    Raises:
        EngineSkipped: No NVIDIA driver, no visible device, or the driver fails to initialise.
    """
    lib = None
    for name in _CUDA_LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise EngineSkipped("no CUDA GPU here: the NVIDIA driver (libcuda) is not installed")
    rc = lib.cuInit(0)
    if rc == _CUDA_NO_DEVICE:
        raise EngineSkipped("no CUDA GPU here: the NVIDIA driver sees no device (check CUDA_VISIBLE_DEVICES)")
    if rc != 0:
        raise EngineSkipped(f"no CUDA GPU here: the NVIDIA driver failed to initialise (cuInit error {rc})")
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        raise EngineSkipped("no CUDA GPU here: the NVIDIA driver reports no device")
    return count.value


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineSkipped(f"{package} is not installed ({exc})") from None


def _check_format(manifest: Manifest, fmt: str) -> None:
    if manifest.format != fmt:
        raise EngineSkipped(f"runs {fmt} bundles, not {manifest.format}")


def device_predictor(
    model: Any, spec: Any, *, device: str, precision: str = "fp32", mode: str = "eager"
) -> Callable[[Inputs], np.ndarray]:
    """Wrap an eval-mode torch model as a predictor that runs on ``device`` at ``precision``.

    Each call copies the inputs to the device (float inputs cast to the precision, token ids kept int64),
    runs the model under ``inference_mode``, copies the logits back as float32 and, on CUDA, synchronises
    the device before returning.

    Args:
        model: A ``torch.nn.Module`` (image: ``(N, 3, H, W)`` or the spec's layout; text: a dict of tensors).
        spec: The bundle's :class:`~edgetl.spec.ModelSpec` (its layout).
        device: A torch device string (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        precision: ``fp32``, ``fp16`` or ``bf16``: the dtype of the weights and float activations.
        mode: ``eager``; ``graph`` (one CUDA graph captured per input shape, then replayed; CUDA only);
            ``compile`` (``torch.compile(mode="reduce-overhead")``, compiled on the first call).

    Raises:
        ConfigError: Unknown precision or mode, or ``graph`` on a device that is not CUDA.
    """
    import torch

    from edgetl.verify import spec_layout_module

    if precision not in TORCH_DTYPES or mode not in TORCH_MODES:
        raise ConfigError(f"unknown precision {precision!r} or mode {mode!r}",
                          f"use one of {list(TORCH_DTYPES)} and one of {list(TORCH_MODES)}")
    cuda = torch.device(device).type == "cuda"
    if mode == "graph" and not cuda:
        raise ConfigError(f"CUDA graphs need a CUDA device, not {device!r}", "use mode='eager' off the GPU")
    dtype = getattr(torch, TORCH_DTYPES[precision])
    module = spec_layout_module(model, spec).eval().to(device=device, dtype=dtype)
    run: Callable[[Any], Any] = module
    if mode == "compile":
        run = torch.compile(module, mode="reduce-overhead" if cuda else "default")
    elif mode == "graph":
        run = _GraphReplay(module, torch)

    def to_device(array: np.ndarray) -> Any:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else torch.int64)

    def predict(inputs: Inputs) -> np.ndarray:
        with torch.inference_mode():
            if isinstance(inputs, dict):
                feeds: Any = {k: to_device(np.asarray(v, np.int64)) for k, v in inputs.items()}
            else:
                feeds = to_device(np.asarray(inputs, np.float32))
            logits = run(feeds).float().cpu()
        if cuda:
            torch.cuda.synchronize(device)
        return logits.numpy()

    return predict


class _GraphReplay:
    """One CUDA graph per input shape: captured after a warm-up on a side stream, then replayed on static
    input buffers (the new inputs are copied in first)."""

    def __init__(self, module: Any, torch: Any) -> None:
        self.module, self.torch = module, torch
        self.graphs: dict[Any, tuple[Any, Any, Any]] = {}

    def __call__(self, feeds: Any) -> Any:
        named = feeds if isinstance(feeds, dict) else {"": feeds}
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in named.items())
        if key not in self.graphs:
            self.graphs[key] = self._capture(named)
        static_in, static_out, graph = self.graphs[key]
        for name, tensor in named.items():
            static_in[name].copy_(tensor)
        graph.replay()
        return static_out

    def _capture(self, named: dict[str, Any]) -> tuple[Any, Any, Any]:
        torch = self.torch
        static_in = {k: v.clone() for k, v in named.items()}
        args = static_in.get("", static_in)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.module(args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(args)
        return static_in, static_out, graph


class TorchCudaBench:
    """The PyTorch model the bundle was exported from, on the first CUDA GPU.

    Args:
        name: The registered engine name.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        mode: ``eager``, ``graph`` or ``compile`` (see :func:`device_predictor`).
    """

    package = "torch"

    def __init__(self, name: str, precision: str = "fp32", mode: str = "eager") -> None:
        self.name, self.precision, self.mode = name, precision, mode
        self._source = TorchBench()  # same run folder check and imports as the CPU torch engine

    def host_check(self) -> None:
        """A CUDA GPU, asked of the driver (no torch import)."""
        cuda_device_count()

    def check(self, manifest: Manifest) -> None:
        """A CUDA GPU (asked of the driver) and the run folder named in the bundle's provenance."""
        self.host_check()
        self._source.check(manifest)

    def import_backend(self, manifest: Manifest) -> None:
        """Import torch and the model libraries."""
        self._source.import_backend(manifest)

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """Rebuild the model from the run folder and move it to the GPU at this engine's precision."""
        import torch

        from edgetl.runfolder import load_run

        name = _torch_cuda_device(torch, self.precision)
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = True  # conv algorithms tuned per shape during the warm-up
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        run = load_run(manifest.data["provenance"]["run_dir"])
        predict = device_predictor(run.model(), manifest.spec, device="cuda", precision=self.precision,
                                   mode=self.mode)
        return LoadedEngine(_skip_on_failure(predict, self.mode),
                            note=f"{self.precision} {self.mode} on {name}; host<->device copies included")


def _torch_cuda_device(torch: Any, precision: str) -> str:
    """The first CUDA device's name, or :class:`EngineSkipped` saying why torch cannot use it."""
    if torch.version.cuda is None:
        raise EngineSkipped(f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)")
    if not torch.cuda.is_available():
        raise EngineSkipped("no CUDA GPU here: torch.cuda.is_available() is False")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise EngineSkipped(f"{torch.cuda.get_device_name(0)} has no bfloat16 support")
    return torch.cuda.get_device_name(0)


def _skip_on_failure(predict: Callable[[Inputs], np.ndarray], mode: str) -> Callable[[Inputs], np.ndarray]:
    """Graph capture and torch.compile happen on the first call: their failure skips the row, saying why."""
    if mode == "eager":
        return predict
    state = {"ran": False}

    def guarded(inputs: Inputs) -> np.ndarray:
        if state["ran"]:
            return predict(inputs)
        try:
            logits = predict(inputs)
        except Exception as exc:  # torch raises many kinds (RuntimeError, BackendCompilerFailed...)
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EngineSkipped(f"{mode} mode failed on this model: {detail}") from None
        state["ran"] = True
        return logits

    return guarded


class OrtCudaBench:
    """The bundle's ONNX file in ONNX Runtime with the CUDA execution provider (package onnxruntime-gpu)."""

    name = "onnxruntime-cuda"
    package = "onnxruntime-gpu"
    format = "onnx"  # left out of sweeps over bundles of other formats

    def host_check(self) -> None:
        """A CUDA GPU, and an onnxruntime build with the CUDA execution provider."""
        cuda_device_count()
        _ort_with_cuda()

    def check(self, manifest: Manifest) -> None:
        """ONNX bundles, and a CUDA GPU."""
        _check_format(manifest, self.format)
        cuda_device_count()

    def import_backend(self, manifest: Manifest) -> None:
        """Import onnxruntime."""
        _require("onnxruntime", "onnxruntime-gpu")

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """An ONNX Runtime session whose first provider is CUDA (not a silent CPU fallback)."""
        ort = _ort_with_cuda()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        providers = [("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"}),
                     "CPUExecutionProvider"]
        session = ort.InferenceSession(str(manifest.model_path), options, providers=providers)
        if session.get_providers()[0] != "CUDAExecutionProvider":
            raise EngineSkipped("ONNX Runtime could not start its CUDA provider (CUDA or cuDNN libraries "
                                "missing or of another version)")
        expected = {i.name: (list(i.shape), np.int64 if "int64" in i.type else np.float32)
                    for i in session.get_inputs()}
        output = session.get_outputs()[0].name

        def predict(inputs: Inputs) -> np.ndarray:
            return session.run([output], prepare_feeds(inputs, expected))[0]

        return LoadedEngine(predict, note="CUDA provider; host<->device copies included")


def _ort_with_cuda() -> Any:
    """onnxruntime, or :class:`EngineSkipped` when it is missing or has no CUDA execution provider."""
    ort = _require("onnxruntime", "onnxruntime-gpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise EngineSkipped(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                            "(install onnxruntime-gpu in place of onnxruntime)")
    return ort


class OpenVINOGpuBench:
    """The bundle's OpenVINO IR on OpenVINO's GPU plugin (Intel GPUs), at the bundle's precision."""

    name = "openvino-gpu"
    package = "openvino"
    format = "openvino"

    def check(self, manifest: Manifest) -> None:
        """OpenVINO bundles only."""
        _check_format(manifest, self.format)

    def import_backend(self, manifest: Manifest) -> None:
        """Import openvino."""
        _require("openvino", "openvino")

    def host_check(self) -> None:
        """OpenVINO, and a GPU device it sees."""
        _openvino_gpu_core()

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """Compile the IR on ``GPU`` with the latency hint (f16 inference for fp16 bundles, else f32)."""
        core = _openvino_gpu_core()
        precision = "f16" if manifest.data["precision"] == "fp16" else "f32"
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        compiled = core.compile_model(core.read_model(str(manifest.model_path)), "GPU", config)
        expected = {p.get_any_name(): ([d.get_length() if d.is_static else "?" for d in p.get_partial_shape()],
                                       np.dtype(p.get_element_type().to_dtype())) for p in compiled.inputs}
        request = compiled.create_infer_request()

        def predict(inputs: Inputs) -> np.ndarray:
            request.infer(prepare_feeds(inputs, expected))
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)

        return LoadedEngine(predict, note=f"GPU plugin, {precision} inference")


def _openvino_gpu_core() -> Any:
    """An OpenVINO ``Core`` that sees a GPU, or :class:`EngineSkipped` when OpenVINO is missing or sees no GPU."""
    ov = _require("openvino", "openvino")
    core = ov.Core()
    if "GPU" not in core.available_devices:
        raise EngineSkipped("OpenVINO sees no GPU device (its GPU plugin drives Intel GPUs; "
                            f"devices here: {', '.join(core.available_devices) or 'none'})")
    return core


#: The GPU bench engines, registered in :data:`edgetl.bench.engines.BENCH_ENGINES`.
GPU_ENGINES = (
    TorchCudaBench("torch-cuda", "fp32"),
    TorchCudaBench("torch-cuda-fp16", "fp16"),
    TorchCudaBench("torch-cuda-bf16", "bf16"),
    TorchCudaBench("torch-cuda-graph-fp16", "fp16", "graph"),
    TorchCudaBench("torch-compile-fp16", "fp16", "compile"),
    OrtCudaBench(),
    OpenVINOGpuBench(),
)
