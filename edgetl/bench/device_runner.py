"""edgetl's device runner: times a bundle's model on the machine it runs on. ONE FILE, standard library,
numpy and the engine only (no edgetl, no Pillow, no tokenizers), so it can be copied to a device as is.

``edgetl bench BUNDLE --target ssh://user@host`` copies this file, the bundle and ``plan.json`` into a
folder on the device and runs ``python device_runner.py RUN_DIR``; ``python - --probe`` (this file on
stdin) reports the device's Python, numpy and engines without copying anything.

The method is edgetl's (:mod:`edgetl.bench.timing` and :mod:`edgetl.bench.runner`): each configuration
in a fresh process; import, load and first inference timed once (cold start = load + first run); then
``warmup`` untimed calls and timed calls until both ``min_runs`` and ``min_time_s`` are reached (or
``max_time_s``); p50/p90/p99/mean/std/min/max; peak RSS from ``VmHWM``. Inputs are random, shaped from
the bundle's ``edgetl.json`` (image: ``input_size`` and ``layout``; text: token ids of exactly the row's
length from the tokenizer's vocabulary): model-only latency, as the device has no preprocessing
libraries. Progress goes to stdout as ``progress ...`` lines, the result as one ``result {json}`` line.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNNER_VERSION = 1
#: Engine name -> (module imported, pip package).
ENGINES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
           "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert")}
#: Engine name -> the bundle format it runs.
FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "ai-edge-litert": "tflite"}
MEASURED_KEYS = ("status", "latency_ms", "throughput_ips", "import_ms", "load_ms", "first_run_ms",
                 "cold_start_ms", "baseline_rss_mb", "peak_rss_mb", "end_to_end_ms", "note")
CHILD_OVERHEAD_S = 300


class Skip(Exception):
    """This engine cannot run this job here; the row says why."""


# ---------------------------------------------------------------- the device

def probe() -> dict[str, Any]:
    """This device: machine, Python, numpy and each engine's version (None: not importable)."""
    versions = {name: package_version(module, package) for name, (module, package) in ENGINES.items()}
    return {"runner_version": RUNNER_VERSION, "python_executable": sys.executable, "machine": machine_info(),
            "numpy": package_version("numpy", "numpy"), "engines": versions}


def package_version(module: str, package: str) -> str | None:
    """The installed version of ``package`` if ``module`` can be found, else None."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # importable without metadata (a source checkout): still usable
        return "unknown"


def machine_info() -> dict[str, Any]:
    """The same keys as ``edgetl.bench.runner.machine_info``, plus ``hostname``, ``arch`` and ``board``."""
    return {
        "cpu": cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": None,
        "usable_cores": usable_cores(), "memory_gb": memory_gb(), "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "hostname": socket.gethostname(), "arch": platform.machine(), "board": board(),
    }


def cpu_model() -> str:
    """``model name`` (x86), else ``Model``/``Hardware`` or the CPU part (ARM), else the architecture."""
    info = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def board() -> str | None:
    """The board's name from the device tree (e.g. ``Raspberry Pi 4 Model B Rev 1.4``), if any."""
    return _read("/proc/device-tree/model").strip("\x00\n ") or None


def memory_gb() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _status_mb(key: str) -> float | None:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    """Peak RSS in MB: ``VmHWM``, else ``ru_maxrss``."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else peak_rss_mb()


# ---------------------------------------------------------------- engines

class OrtModel:
    """ONNX Runtime, CPU provider, ``threads`` intra-op threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                 "tensor(float16)": np.float16}
        self.inputs = {i.name: ([d if isinstance(d, int) else -1 for d in i.shape], types.get(i.type, np.float32))
                       for i in self.session.get_inputs()}

    def select(self, seq_len: int | None) -> str | None:
        return None

    def run(self, feeds: dict[str, Any]) -> Any:
        return self.session.run(None, feeds)[0]


class OpenVINOModel:
    """OpenVINO on the CPU, float32, latency hint, ``threads`` inference threads (as edgetl's engine)."""

    def __init__(self, path: Path, threads: int) -> None:
        import numpy as np
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = {p.get_any_name(): ([d.get_length() if d.is_static else -1 for d in p.get_partial_shape()],
                                          np.dtype(p.get_element_type().to_dtype())) for p in self.compiled.inputs}

    def select(self, seq_len: int | None) -> str | None:
        return None

    def run(self, feeds: dict[str, Any]) -> Any:
        self.request.infer(feeds)
        return self.request.get_output_tensor(0).data


class TFLiteModel:
    """LiteRT's interpreter (XNNPACK), ``threads`` threads; text files have one signature per length."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.signatures = {}
        for key in self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner(key)
            inputs = {n: ([int(x) for x in d["shape_signature"]], d["dtype"])
                      for n, d in runner.get_input_details().items()}
            self.signatures[key] = (runner, inputs)
        if not self.signatures:
            raise Skip("the .tflite file has no signature")
        self.key = next(iter(self.signatures))
        self.inputs = self.signatures[self.key][1]

    def select(self, seq_len: int | None) -> str | None:
        """The smallest signature holding ``seq_len`` tokens (text); a note when it pads."""
        if seq_len is None or "input_ids" not in self.inputs:
            return None
        fitting = sorted((s[1]["input_ids"][0][1], k) for k, s in self.signatures.items()
                         if s[1]["input_ids"][0][1] < 0 or s[1]["input_ids"][0][1] >= seq_len)
        if not fitting:
            raise Skip(f"no signature holds {seq_len} tokens")
        length, self.key = fitting[0]
        self.inputs = self.signatures[self.key][1]
        return f"runs padded to {length} tokens ({self.key})" if length > seq_len else None

    def run(self, feeds: dict[str, Any]) -> Any:
        return self.signatures[self.key][0](**feeds)


MODELS = {"onnxruntime": OrtModel, "openvino": OpenVINOModel, "ai-edge-litert": TFLiteModel}


# ---------------------------------------------------------------- inputs

def make_inputs(manifest: dict[str, Any], bundle: Path, batch: int, seq_len: int | None) -> dict[str, Any]:
    """Random model inputs by name, as ``edgetl.bench.runner`` makes them (seed 0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    spec = manifest["spec"]
    if spec.get("task") == "text-classification":
        vocab = vocab_size(bundle / spec["tokenizer"] / "tokenizer.json")
        ids = rng.integers(min(1000, vocab // 2), vocab, (batch, seq_len), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    height, width = spec["input_size"]
    shape = (batch, 3, height, width) if spec.get("layout", "NCHW") == "NCHW" else (batch, height, width, 3)
    return {"input": rng.standard_normal(shape).astype(np.float32)}


def vocab_size(tokenizer_json: Path) -> int:
    """The vocabulary size of a ``tokenizers`` file (its model's vocab plus added tokens)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    ids += [t.get("id", 0) for t in data.get("added_tokens", [])]
    return max(ids) + 1 if ids else 30522


def plan_calls(model: Any, named: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The feeds of each call: the model's inputs (by name, first one for a single-input model) cast to
    its dtypes, padded to a fixed sequence length, split into its fixed batch; and a note when it differs."""
    import numpy as np

    names = list(model.inputs)
    if len(names) == 1 and names[0] not in named:
        named = {names[0]: next(iter(named.values()))}
    feeds, notes = {}, []
    for name, (shape, dtype) in model.inputs.items():
        if name not in named:
            raise Skip(f"the model input {name!r} is not one edgetl makes")
        array = named[name]
        if array.ndim == 2 and len(shape) == 2 and shape[1] > array.shape[1]:
            array = np.pad(array, ((0, 0), (0, shape[1] - array.shape[1])))
        feeds[name] = np.ascontiguousarray(array, dtype=dtype)
    rows, step = next(iter(feeds.values())).shape[0], next(iter(model.inputs.values()))[0][0]
    if step < 1 or step >= rows:
        return [feeds], None
    if rows % step:
        raise Skip(f"a batch of {rows} does not split into the model's fixed batch of {step}")
    notes.append(f"batch {rows} runs as {rows // step} calls of {step}")
    return [{n: a[i:i + step] for n, a in feeds.items()} for i in range(0, rows, step)], "; ".join(notes)


# ---------------------------------------------------------------- timing

def timed_calls(fn: Any, warmup: int, min_runs: int, min_time_s: float, max_time_s: float) -> list[int]:
    """The timing loop of every edgetl benchmark (``edgetl.bench.timing.measure`` calls it too): ``warmup``
    untimed calls, then timed calls until both ``min_runs`` and ``min_time_s`` are reached, or ``max_time_s``
    has passed (at least one call is always timed). Returns each call's nanoseconds."""
    for _ in range(warmup):
        fn()
    latencies: list[int] = []
    elapsed, min_ns, max_ns = 0, int(min_time_s * 1e9), int(max_time_s * 1e9)
    while len(latencies) < min_runs or elapsed < min_ns:
        if latencies and elapsed >= max_ns:
            break
        start = time.perf_counter_ns()
        fn()
        latencies.append(time.perf_counter_ns() - start)
        elapsed += latencies[-1]
    return latencies


def measure(fn: Any, warmup: int, min_runs: int, min_time_s: float, max_time_s: float) -> dict[str, Any]:
    """``edgetl.bench.timing.measure``'s loop and statistics (milliseconds)."""
    import numpy as np

    latencies = timed_calls(fn, warmup, min_runs, min_time_s, max_time_s)
    lat = np.asarray(latencies, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return {"runs": int(lat.size), "warmup": warmup, "total_s": float(lat.sum() / 1000), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(lat.mean()), "std_ms": float(lat.std()),
            "min_ms": float(lat.min()), "max_ms": float(lat.max()), "hit_time_limit": len(latencies) < min_runs}


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter_ns()
    value = fn()
    return value, (time.perf_counter_ns() - start) / 1e6


# ---------------------------------------------------------------- one job (child process)

def run_job(job: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """One configuration: a row with the same keys as ``edgetl.bench.runner.run_job``'s."""
    row = {key: job.get(key) for key in ("engine", "threads", "threads_spec", "batch", "seq_len")}
    row.update(dict.fromkeys(MEASURED_KEYS))
    threads = usable_cores() if job["threads_spec"] == "all" else int(job["threads_spec"])
    row.update(threads=threads, engine_version=package_version(*ENGINES[job["engine"]]))
    row["thread_settings"] = {"threads": threads, "spec": job["threads_spec"], "inter_op": 1,
                              "env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}}
    try:
        row.update(_measure(job, bundle, threads))
    except Skip as exc:
        row.update(status=f"skipped: {exc}")
    except Exception as exc:  # the engines raise their own classes; the row carries the first line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        row["error"] = f"{type(exc).__name__}: {detail}"
    return row


def _measure(job: dict[str, Any], bundle: Path, threads: int) -> dict[str, Any]:
    baseline = current_rss_mb()
    manifest = json.loads((bundle / "edgetl.json").read_text(encoding="utf-8"))
    if manifest.get("format") != FORMATS[job["engine"]]:
        raise Skip(f"runs {FORMATS[job['engine']]} bundles, not {manifest.get('format')}")
    module = ENGINES[job["engine"]][0]
    _, import_ms = timed(lambda: importlib.import_module(module))
    named = make_inputs(manifest, bundle, job["batch"], job.get("seq_len"))
    model, load_ms = timed(lambda: MODELS[job["engine"]](bundle / manifest["model_file"], threads))
    notes = [model.select(job.get("seq_len"))]
    calls, split_note = plan_calls(model, named)
    notes.append(split_note)

    def run_all() -> None:
        for feeds in calls:
            model.run(feeds)

    _, first_ms = timed(run_all)
    stats = measure(run_all, **job["timing"])
    return {"status": "ok", "latency_ms": stats, "throughput_ips": job["batch"] * 1000 / stats["p50_ms"],
            "import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms, "cold_start_ms": load_ms + first_ms,
            "baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb(), "end_to_end_ms": None,
            "note": "; ".join(n for n in notes if n)}


def child_main(job_file: Path) -> None:
    job = json.loads(job_file.read_text(encoding="utf-8"))
    row = run_job(job, Path(job["bundle"]))
    job_file.with_suffix(".out.json").write_text(json.dumps(row), encoding="utf-8")


# ---------------------------------------------------------------- the plan (parent process)

def run_plan(run_dir: Path) -> dict[str, Any]:
    """Every job of ``run_dir/plan.json``, each in a fresh interpreter; engines not installed are skipped."""
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    device = probe()
    if device["numpy"] is None:
        lacking = [ENGINES[e][1] for e in dict.fromkeys(j["engine"] for j in plan["jobs"])
                   if device["engines"].get(e) is None]
        return {**device, "error": "numpy is not installed", "missing": ["numpy", *lacking]}
    rows, bundle = [], (run_dir / plan["bundle"]).resolve()
    for i, job in enumerate(plan["jobs"]):
        label = f"{job['engine']} threads={job['threads_spec']} batch={job['batch']}"
        label += f" seq={job['seq_len']}" if job.get("seq_len") else ""
        if device["engines"].get(job["engine"]) is None:
            package = ENGINES[job["engine"]][1]
            row = {**{k: job.get(k) for k in ("engine", "threads", "threads_spec", "batch", "seq_len")},
                   **dict.fromkeys(MEASURED_KEYS), "status": f"skipped: {package} is not installed on the device"}
        else:
            row = _run_child({**job, "bundle": str(bundle)}, run_dir / f"job{i}.json")
        rows.append(row)
        print(f"progress {i + 1}/{len(plan['jobs'])} {label}", flush=True)
    return {**device, "rows": rows}


def _run_child(job: dict[str, Any], job_file: Path) -> dict[str, Any]:
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, **job.get("env", {})}
    timeout = 2 * job["timing"]["max_time_s"] + CHILD_OVERHEAD_S
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--job", str(job_file)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"engine": job["engine"], "error": f"no result after {timeout:.0f} s"}
    out = job_file.with_suffix(".out.json")
    if proc.returncode != 0 or not out.is_file():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
        return {"engine": job["engine"], "error": f"the benchmark process failed: {tail}"}
    return json.loads(out.read_text(encoding="utf-8"))


def _remove(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``--probe`` | ``--job JOB.json`` | ``RUN_DIR [--cleanup]``."""
    if argv[:1] == ["--probe"]:
        print("result " + json.dumps(probe()), flush=True)
        return 0
    if argv[:1] == ["--job"] and len(argv) == 2:
        child_main(Path(argv[1]))
        return 0
    if not argv or argv[0].startswith("-"):
        print("usage: device_runner.py --probe | RUN_DIR [--cleanup]", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    try:
        result = run_plan(run_dir)
    finally:
        if "--cleanup" in argv[1:]:
            _remove(run_dir)
    print("result " + json.dumps(result), flush=True)
    return 3 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
