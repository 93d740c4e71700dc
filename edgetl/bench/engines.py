"""Bench engines: what the benchmark can run a bundle's model on, registered by name.

``onnxruntime``, ``openvino`` and ``ai-edge-litert`` time the bundle's own model file through the runtime
engine of the same name (:mod:`edgetl.runtime.engines`), each on the bundle format it runs.
``torch`` times the PyTorch model the bundle was exported from (eager, ``inference_mode``): it loads
the run folder named in the bundle's provenance, so it is skipped, not failed, when that folder is gone.
Each engine imports its library only in :meth:`import_backend`/:meth:`load`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgetl.errors import BenchmarkError
from edgetl.registry import Registry
from edgetl.runtime.bundle import Manifest
from edgetl.verify import Predictor


class EngineSkipped(BenchmarkError):
    """This engine cannot run this bundle here; the result row says why instead of failing the benchmark."""


@dataclass
class LoadedEngine:
    """A ready predictor, an optional note for the result row, and an optional ``explain(inputs)`` saying
    how given inputs really run (e.g. padded to a fixed length) when that differs from their shape."""

    predict: Predictor
    note: str | None = None
    explain: Callable[[Any], str | None] | None = None


class BenchEngine(Protocol):
    """The contract of a bench engine."""

    name: str
    package: str

    def check(self, manifest: Manifest) -> None:
        """Raise :class:`EngineSkipped` early (before imports) when this engine cannot run the bundle."""
        ...

    def import_backend(self, manifest: Manifest) -> None:
        """Import the engine's library for this bundle (timed separately from loading the model)."""
        ...

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """Load the model with ``threads`` intra-op threads; raise :class:`EngineSkipped` if impossible."""
        ...


def package_version(package: str) -> str:
    """Installed version of ``package``, or ``"not installed"``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _import(package: str) -> None:
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise EngineSkipped(f"{package} is not installed ({exc})") from None


class RuntimeBench:
    """The bundle's own model file in one of the runtime's engines (what an app would run).

    Args:
        name: The runtime engine's registered name (also this bench engine's name).
        fmt: The bundle format it runs.
        package: The pip package providing it (reported with its version).
        module: The module imported to time the library's import.
    """

    def __init__(self, name: str, fmt: str, package: str, module: str) -> None:
        self.name, self.format, self.package, self.module = name, fmt, package, module

    def check(self, manifest: Manifest) -> None:
        """Only bundles of this engine's format."""
        if manifest.format != self.format:
            raise EngineSkipped(f"runs {self.format} bundles, not {manifest.format}")

    def import_backend(self, manifest: Manifest) -> None:
        """Import the engine's library."""
        _import(self.module)

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """The runtime engine on the bundle's model file."""
        from edgetl.runtime.engines import create_engine

        engine = create_engine(self.name, manifest.model_path, threads=threads)
        return LoadedEngine(engine.run, explain=getattr(engine, "explain", None))


class TorchBench:
    """The PyTorch model the bundle was exported from, in eager mode."""

    name = "torch"
    package = "torch"

    def check(self, manifest: Manifest) -> None:
        """The run folder named in the bundle's provenance must still exist."""
        run_dir = (manifest.data.get("provenance") or {}).get("run_dir")
        if not run_dir or not Path(run_dir).is_dir():
            raise EngineSkipped("run folder not found")

    def import_backend(self, manifest: Manifest) -> None:
        """Import torch and the model libraries (torchvision and timm, or transformers): seconds on a small CPU."""
        libraries = ("transformers",) if manifest.spec.is_text else ("torchvision", "timm")
        for package in (self.package, *libraries, "edgetl.models"):
            _import(package)

    def load(self, manifest: Manifest, threads: int) -> LoadedEngine:
        """Rebuild the model from the run folder in the bundle's provenance, with ``threads`` threads."""
        import torch

        from edgetl.runfolder import load_run
        from edgetl.verify import torch_reference

        self.check(manifest)
        provenance = manifest.data["provenance"]
        torch.set_num_threads(threads)
        run = load_run(provenance["run_dir"])
        note = None
        if provenance.get("run_fingerprint") not in (None, run.fingerprint()):
            note = "run folder changed since export"
        return LoadedEngine(torch_reference(run.model(), manifest.spec), note)


#: Bench engines by name.
BENCH_ENGINES: Registry[BenchEngine] = Registry("bench engine")
for _engine in (
    RuntimeBench("onnxruntime", "onnx", "onnxruntime", "onnxruntime"),
    RuntimeBench("openvino", "openvino", "openvino", "openvino"),
    RuntimeBench("ai-edge-litert", "tflite", "ai-edge-litert", "ai_edge_litert.interpreter"),
    TorchBench(),
):
    BENCH_ENGINES.add(_engine.name, _engine)

from edgetl.bench.gpu import GPU_ENGINES  # noqa: E402 (gpu.py uses the classes above)

for _engine in GPU_ENGINES:
    BENCH_ENGINES.add(_engine.name, _engine)
