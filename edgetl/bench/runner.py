"""Benchmark a bundle on a target: one row per engine x threads x batch size.

Every configuration runs in a fresh Python process (``subprocess``, not fork), so each row's figures
are its own:

* cold start = model load + first inference (the engine library's import is reported separately as
  ``import_ms``); no earlier configuration has warmed caches or allocators;
* peak RSS is the child's high-water mark (``VmHWM`` in ``/proc/self/status``, which starts fresh at
  ``exec``; ``ru_maxrss`` does not, as it inherits the parent's peak), so ONNX Runtime rows are not
  inflated by torch being loaded for other rows. ``baseline_rss_mb`` is the child's RSS before the
  engine library was imported (Python, numpy, Pillow, edgetl);
* end-to-end latency (batch 1 rows) is open image file -> bundle preprocessing -> inference, or for a
  text bundle raw string -> the bundle's tokenizer -> inference (on the longest sequence length's row).

Text bundles are timed at each of the target's sequence lengths on synthetic token ids of exactly that
length (no padding), so rows at different lengths compare compute, not tokenization.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgetl import __version__
from edgetl.bench.engines import BENCH_ENGINES, EngineSkipped, package_version
from edgetl.bench.fit import fit_check
from edgetl.bench.render import fit_line, render_table
from edgetl.bench.targets import (
    TargetProfile,
    available_cores,
    host_skip_reason,
    resolve_target,
    resolve_threads,
)
from edgetl.bench.timing import TimingStats, measure, time_once_ms
from edgetl.errors import BenchmarkError, EdgetlError
from edgetl.fsutil import read_json, sha256_file, write_json
from edgetl.progress import Ticker
from edgetl.runtime.bundle import Manifest, read_manifest
from edgetl.runtime.preprocess import open_image, preprocess
from edgetl.runtime.text import load_tokenizer, synthetic_tokens, tokenize
from edgetl.spec import ModelSpec

log = logging.getLogger("edgetl")
__all__ = ["bench_bundle", "fit_line", "machine_info", "render_table"]  # the tables live in edgetl.bench.render
SCHEMA_VERSION = 2  # 2: "image" became "input" (image or text); rows have "seq_len"
#: The end-to-end text when the run's test split is not available.
SYNTHETIC_TEXT = ("An engaging, well-acted film whose quiet second half never quite lives up to the promise of "
                  "its sharp, funny opening hour.")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the edgetl package
_CHILD_OVERHEAD_S = 300  # imports, model load, first run


def bench_bundle(
    bundle_dir: str | Path,
    target: str | Path | TargetProfile = "local-cpu",
    *,
    profile: str | Path | None = None,
    engines: list[str] | None = None,
    threads: list[int | str] | None = None,
    batch_sizes: list[int] | None = None,
    seq_lengths: list[int] | None = None,
    image: str | Path | None = None,
    text: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark a bundle on a target and return JSON-ready results.

    Args:
        bundle_dir: A bundle folder written by ``edgetl export``.
        target: Target profile name (``targets/<name>.yaml``), path, ``ssh://user@host[:port]``, or a
            loaded profile.
        profile: For ``ssh://`` targets: the profile to use (default ``generic-arm64-ssh``).
        engines: Only these bench engines (default: the target's engines that can run the bundle).
        threads: Thread counts, ints or ``"all"`` (default: the target's).
        batch_sizes: Batch sizes (default: the target's ``batch_sizes``, or ``text_batch_sizes`` for text).
        seq_lengths: Text bundles: token lengths (default: the target's), clipped to the model's max_length.
        image: Image file for the end-to-end timing; default: a test image of the run's dataset, or a
            synthetic PNG of the spec's input size when that is unavailable.
        text: Text bundles: the string for the end-to-end timing; default: a test text of the run's
            dataset, or a fixed review sentence.
        progress: Show a progress bar.

    Returns:
        ``{"schema_version", "created", "edgetl_version", "bundle", "target", "machine", "engines",
        "input", "rows", "status", "fit", "not_applicable"}``; each row holds ``engine``, ``threads``,
        ``batch``, ``seq_len`` (text; else None), ``status`` (``ok`` or
        ``skipped: ...``), ``latency_ms`` (p50/p90/p99/mean/std/min/max, runs), ``throughput_ips``,
        ``import_ms``, ``load_ms``, ``first_run_ms``, ``cold_start_ms``, ``baseline_rss_mb``,
        ``peak_rss_mb``, ``end_to_end_ms`` (batch 1 only; None on SSH devices), ``note``, and what it
        ran on: ``target``, ``machine``, ``engine_version`` and ``thread_settings``. ``status`` is
        ``ok``, ``does not fit`` (nothing was run, ``fit`` says why) or ``fit check only``; ``fit`` is
        :func:`edgetl.bench.fit.fit_check`'s result (None without limits); ``not_applicable`` names the
        target's engines left out because they cannot run the bundle's format, and why.

    Raises:
        UnknownNameError: Unknown target or engine (the known ones are listed).
        RunFolderError: The bundle is missing or malformed.
        BenchmarkError: A configuration failed, the device is unreachable or lacks the engine, or no
            engine of the target can run the bundle (why is said).
    """
    target_profile = _profile(resolve_target(target, profile), engines, threads, batch_sizes, seq_lengths)
    for name in target_profile.engines:
        BENCH_ENGINES.get(name)
    manifest = read_manifest(bundle_dir)
    fit = fit_check(manifest, target_profile)
    runnable, not_applicable = applicable_engines(manifest, target_profile, explicit=bool(engines))
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edgetl_version": __version__,
        "bundle": bundle_info(manifest),
        "target": target_profile.to_dict(),
        "fit": fit,
        "not_applicable": not_applicable,
    }
    if target_profile.kind == "fit-only" or (fit and fit["fits"] is False):
        status = "fit check only" if target_profile.kind == "fit-only" else "does not fit"
        return {**result, **_not_run(manifest, target_profile, status)}
    profile_ = replace(target_profile, engines=tuple(runnable))
    if profile_.kind == "ssh":
        run = _bench_ssh(manifest, profile_, progress)
    else:
        run = _bench_local(manifest, profile_, image, text, progress)
    for row in run["rows"]:
        _describe_row(row, profile_, run["machine"], run["engines"])
    return {**result, **run, "status": "ok"}


def _bench_local(manifest: Manifest, profile: TargetProfile, image: str | Path | None, text: str | None,
                 progress: bool) -> dict[str, Any]:
    machine = machine_info()  # before our own load shows in the load average
    with tempfile.TemporaryDirectory(prefix="edgetl-bench-") as tmp:
        if manifest.spec.is_text:
            e2e_input, input_info = bench_text(manifest, text)
        else:
            image_path, input_info = bench_image(manifest, image, Path(tmp))
            e2e_input = str(image_path)
        rows = _run_jobs(_jobs(manifest, profile, e2e_input), progress)
    versions = {name: package_version(BENCH_ENGINES.get(name).package) for name in profile.engines}
    return {"machine": machine, "engines": versions, "input": input_info, "rows": rows}


def _bench_ssh(manifest: Manifest, profile: TargetProfile, progress: bool) -> dict[str, Any]:
    """The jobs on the SSH device, model only on random inputs (threads ``all`` resolved there)."""
    from edgetl.bench.remote import bench_remote

    jobs = _jobs(manifest, profile, None, resolve=False)
    with Ticker(f"bench {profile.address}", total=len(jobs), enabled=progress) as ticker:
        device = bench_remote(profile, manifest.folder, jobs, on_progress=ticker.advance)
    versions = {name: device["engines"].get(name) or "not installed" for name in profile.engines}
    kind = "text" if manifest.spec.is_text else "image"
    input_info = {"kind": kind, "source": "random, on the device (model only, no preprocessing)", "path": None,
                  "tokens": None}
    return {"machine": {**device["machine"], "python_executable": device["python_executable"],
                        "numpy": device["numpy"]}, "engines": versions, "input": input_info, "rows": device["rows"]}


def _not_run(manifest: Manifest, profile: TargetProfile, status: str) -> dict[str, Any]:
    """The result fields of a target that was not run: fit-only, or the model does not fit."""
    machine = dict.fromkeys(("cpu", "logical_cores", "physical_cores", "usable_cores", "memory_gb", "python",
                             "platform", "load_average_1m"))
    machine["cpu"] = profile.description or profile.name
    return {"machine": machine, "engines": {}, "input": {"kind": "text" if manifest.spec.is_text else "image",
                                                         "source": "none (not run)", "path": None, "tokens": None},
            "rows": [], "status": status}


def applicable_engines(manifest: Manifest, profile: TargetProfile, explicit: bool = False
                       ) -> tuple[list[str], dict[str, str]]:
    """The profile's engines that can run ``manifest``'s format, and why the others cannot.

    An engine that runs one format (``format`` attribute) and not this one is left out of the sweep,
    unless ``explicit`` (asked for with ``--engine``: its rows then say it was skipped).

    Raises:
        BenchmarkError: None of them can run the bundle (each engine's reason is given).
    """
    runnable, reasons = [], {}
    for name in profile.engines:
        fmt = getattr(BENCH_ENGINES.get(name), "format", None)
        if fmt is not None and fmt != manifest.format and not explicit:
            reasons[name] = f"runs {fmt} bundles, not {manifest.format}"
        else:
            runnable.append(name)
    if not runnable:
        why = "; ".join(f"{name} {reason}" for name, reason in reasons.items())
        raise BenchmarkError(
            f"target {profile.name!r} cannot run this {manifest.format} bundle: {why}",
            f"export the bundle in a format the target runs, or choose a target whose engines run {manifest.format}",
        )
    return runnable, reasons


def _describe_row(row: dict[str, Any], profile: TargetProfile, machine: dict[str, Any],
                  versions: dict[str, str]) -> None:
    """What the row ran on: target, machine, engine version and thread settings (added, never renamed)."""
    row["target"] = profile.address or profile.name
    row["machine"] = machine
    row.setdefault("engine_version", versions.get(row["engine"]))
    env = {**{k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}, **profile.env}
    row.setdefault("thread_settings", {"threads": row["threads"], "spec": row["threads_spec"], "inter_op": 1,
                                       "env": env})


def _profile(
    target: TargetProfile,
    engines: list[str] | None,
    threads: list[int | str] | None,
    batch_sizes: list[int] | None,
    seq_lengths: list[int] | None,
) -> TargetProfile:
    changes = {"engines": engines, "threads": threads, "batch_sizes": batch_sizes, "text_batch_sizes": batch_sizes,
               "seq_lengths": seq_lengths}
    return replace(target, **{k: tuple(v) for k, v in changes.items() if v})


def _jobs(manifest: Manifest, profile: TargetProfile, e2e_input: str | None, resolve: bool = True
          ) -> list[dict[str, Any]]:
    """One job per engine x threads x batch (x sequence length for text); end-to-end on batch-1 rows."""
    timing = {k: getattr(profile, k) for k in ("warmup", "min_runs", "min_time_s", "max_time_s")}
    spec = manifest.spec
    if spec.is_text:
        seqs = sorted({min(n, spec.max_length) for n in profile.seq_lengths})
        combos = itertools.product(profile.engines, profile.threads, profile.text_batch_sizes, seqs)
        e2e_seq = seqs[-1]
    else:
        combos = ((e, t, b, None) for e, t, b in itertools.product(profile.engines, profile.threads,
                                                                    profile.batch_sizes))
        e2e_seq = None
    return [
        {"bundle": str(manifest.folder), "engine": engine, "threads": resolve_threads(threads) if resolve else None,
         "threads_spec": threads, "batch": batch, "seq_len": seq, "timing": timing, "env": profile.env,
         "e2e_input": e2e_input if batch == 1 and seq == e2e_seq else None}
        for engine, threads, batch, seq in combos
    ]


def _run_jobs(jobs: list[dict[str, Any]], progress: bool) -> list[dict[str, Any]]:
    """Each job in its own fresh Python process, one after the other.

    An engine that cannot run on this machine at all (no GPU: :func:`host_skip_reason`, asked once per
    engine) spawns no process: its rows are skipped with that reason.
    """
    cannot_run = {name: host_skip_reason(name) for name in dict.fromkeys(job["engine"] for job in jobs)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetl-jobs-") as tmp, \
            Ticker("bench", total=len(jobs), enabled=progress) as ticker:
        for i, job in enumerate(jobs):
            label = f"{job['engine']} threads={job['threads']} batch={job['batch']}"
            label += f" seq={job['seq_len']}" if job["seq_len"] else ""
            if reason := cannot_run[job["engine"]]:
                row = {**_blank_row(job), "status": f"skipped: {reason}"}
            else:
                row = _run_child(job, Path(tmp) / f"job{i}.json", label)
            if "error" in row:
                raise BenchmarkError(f"{label}: {row['error']}")
            rows.append(row)
            ticker.advance(label)
    return rows


def _run_child(job: dict[str, Any], job_file: Path, label: str) -> dict[str, Any]:
    """Run :func:`child_main` in a fresh interpreter (no fork, no re-import of the caller's ``__main__``)."""
    write_json(job_file, job)
    python_path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **job["env"], "PYTHONPATH": python_path}
    timeout = 2 * job["timing"]["max_time_s"] + _CHILD_OVERHEAD_S
    code = "from edgetl.bench.runner import child_main; child_main()"
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(job_file)], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"{label}: no result after {timeout:.0f} s", "lower max_time_s") from None
    result_file = job_file.with_suffix(".out.json")
    if proc.returncode != 0 or not result_file.is_file():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
        raise BenchmarkError(f"{label}: the benchmark process failed: {tail}",
                             "a negative exit code means it was killed (out of memory?)")
    return read_json(result_file)


def child_main() -> None:
    """Entry point of a benchmark child process: job file in ``argv[1]``, row to ``<job>.out.json``."""
    job_file = Path(sys.argv[1])
    write_json(job_file.with_suffix(".out.json"), run_job(read_json(job_file)))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration (in the child process); errors come back in the row."""
    row = _blank_row(job)
    try:
        row.update(_measure(job))
    except EngineSkipped as exc:
        row.update(status=f"skipped: {exc.message}")
    except EdgetlError as exc:
        row.update(error=exc.one_line())
    return row


def _blank_row(job: dict[str, Any]) -> dict[str, Any]:
    """The job's settings and every measured key set to None (skipped rows have the same keys)."""
    return {**{key: job[key] for key in ("engine", "threads", "threads_spec", "batch", "seq_len")},
            **dict.fromkeys(_MEASURED_KEYS)}


_MEASURED_KEYS = ("status", "latency_ms", "throughput_ips", "import_ms", "load_ms", "first_run_ms",
                  "cold_start_ms", "baseline_rss_mb", "peak_rss_mb", "end_to_end_ms", "note")


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    baseline = current_rss_mb()
    manifest = read_manifest(job["bundle"])
    engine = BENCH_ENGINES.get(job["engine"])
    engine.check(manifest)
    import_ms = time_once_ms(lambda: engine.import_backend(manifest))
    tokenizer = load_tokenizer(manifest.tokenizer_path) if manifest.tokenizer_path else None
    if tokenizer is not None:
        batch = synthetic_tokens(tokenizer, job["batch"], job["seq_len"])
    else:
        batch = _random_batch(manifest.spec, job["batch"])
    loaded, load_ms = _timed_load(engine, manifest, job["threads"])
    first_ms = time_once_ms(lambda: loaded.predict(batch))
    stats = measure(lambda: loaded.predict(batch), **job["timing"])
    e2e = None
    if job["e2e_input"] is not None:
        e2e = _end_to_end(loaded.predict, manifest.spec, job["e2e_input"], job["timing"], tokenizer)
    return {
        "status": "ok", "latency_ms": stats.to_dict(), "throughput_ips": job["batch"] * 1000 / stats.p50_ms,
        "import_ms": import_ms, "load_ms": load_ms, "first_run_ms": first_ms,
        "cold_start_ms": load_ms + first_ms,
        "baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb(),
        "end_to_end_ms": e2e.to_dict() if e2e else None, "note": _note(loaded, batch),
    }


def _note(loaded: Any, inputs: Any) -> str | None:
    notes = [loaded.note, loaded.explain(inputs) if loaded.explain else None]
    return "; ".join(n for n in notes if n) or None


def _timed_load(engine: Any, manifest: Manifest, threads: int) -> tuple[Any, float]:
    holder = []
    load_ms = time_once_ms(lambda: holder.append(engine.load(manifest, threads)))
    return holder[0], load_ms


def _random_batch(spec: ModelSpec, batch: int) -> np.ndarray:
    height, width = spec.input_size
    shape = (batch, 3, height, width) if spec.layout == "NCHW" else (batch, height, width, 3)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _end_to_end(predict: Any, spec: ModelSpec, item: str, timing: dict[str, Any], tokenizer: Any) -> TimingStats:
    """Batch 1 from the raw input: open and preprocess the image file, or tokenize the string."""
    if tokenizer is not None:
        return measure(lambda: predict(tokenize(tokenizer, [item], spec.max_length)[0]), **timing)
    return measure(lambda: predict(preprocess(Path(item), spec)[None]), **timing)


def current_rss_mb() -> float:
    """This process's resident set size now, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` on Linux, else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def bench_text(manifest: Manifest, text: str | None) -> tuple[str, dict[str, Any]]:
    """The string for end-to-end timing of a text bundle, and a description (source, characters, tokens)."""
    if text is not None:
        source = "given"
    else:
        try:
            text, source = _dataset_sample(manifest).texts[0], "run's test split"
        except (EdgetlError, OSError, KeyError) as exc:
            log.info("no dataset text for the end-to-end timing (%s); using a fixed sentence", exc)
            text, source = SYNTHETIC_TEXT, "synthetic"
    tokens = tokenize(load_tokenizer(manifest.tokenizer_path), [text], manifest.spec.max_length)[0]
    return text, {"kind": "text", "source": source, "chars": len(text), "tokens": int(tokens["input_ids"].shape[1])}


def bench_image(manifest: Manifest, image: str | Path | None, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The image file for end-to-end timing and a description of where it came from."""
    if image is not None:
        size = open_image(image).size  # raises DataError for a missing or unreadable file
        return Path(image), {"kind": "image", "source": "given", "path": str(image), "size": list(size)}
    path = tmp / "bench.png"
    try:
        img = _dataset_image(manifest)
        source = "run's test split"
    except (EdgetlError, OSError, KeyError) as exc:
        log.info("no dataset image for the end-to-end timing (%s); using a synthetic image", exc)
        height, width = manifest.spec.input_size
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        img, source = Image.fromarray(pixels), "synthetic"
    img.save(path)
    return path, {"kind": "image", "source": source, "path": None, "size": list(img.size)}


def _dataset_image(manifest: Manifest) -> Image.Image:
    return _dataset_sample(manifest).image(0)


def _dataset_sample(manifest: Manifest) -> Any:
    """The test split of the run named in the bundle's provenance (KeyError when absent or empty)."""
    from edgetl.runfolder import load_run

    run_dir = (manifest.data.get("provenance") or {}).get("run_dir")
    if not run_dir:
        raise KeyError("the bundle names no run folder")
    test = load_run(run_dir).data().test
    if len(test) == 0:
        raise KeyError("the test split is empty")
    return test


def bundle_info(manifest: Manifest) -> dict[str, Any]:
    """Path, format, precision, model file size and hash of the benchmarked bundle."""
    files = [p for p in manifest.folder.rglob("*") if p.is_file()]
    return {
        "path": str(manifest.folder.resolve()),
        "format": manifest.data["format"],
        "precision": manifest.data["precision"],
        "model_file": manifest.data["model_file"],
        "file_size_bytes": manifest.model_path.stat().st_size,
        "bundle_size_bytes": sum(p.stat().st_size for p in files),
        "model_sha256": sha256_file(manifest.model_path),
    }


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory, Python, OS and load (other work skews timings) of this machine."""
    import psutil

    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": available_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
