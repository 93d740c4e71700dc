"""A benchmark report: ``edgetl bench --json`` results rendered to Markdown, a Pareto PNG and JSON.

Every bench row is one configuration (engine x threads x batch x sequence length) of one artifact on one
target. Accuracy is not measured here: it is read from the bundle each row points to (``edgetl.json``'s
verification, the artifact's own accuracy on the test split; the PyTorch engines run the source model, whose
fp32 accuracy is the verification's reference; fp16/bf16 PyTorch was not verified, so it has none).

For the plot and the choice of the best artifact, each (target, artifact, engine) is summed up by one
point: its fastest thread count at the report's batch size (the smallest timed, unless given), at the
longest sequence length for text. The best artifact of a target is the fastest point whose accuracy meets
the constraint: at least ``min_accuracy`` percent and within ``max_accuracy_drop`` points of the most
accurate point on that target.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetl.errors import ConfigError, DataError
from edgetl.fsutil import read_json, staged_dir, write_json, write_text
from edgetl.report.plots import plot_pareto

_FORMAT_NAMES = {"onnx", "openvino", "tflite", "fp32", "fp16", "int8", "bundle"}
_HINT = "write results with `edgetl bench BUNDLE --target TARGET --json bench.json`"


@dataclass(frozen=True)
class Entry:
    """One bench row with what the report needs: the artifact, its accuracy and size, and its timings."""

    target: str
    bundle: str
    format: str
    precision: str
    engine: str
    threads: int
    batch: int
    seq_len: int | None
    status: str
    size_mb: float | None
    accuracy: float | None
    accuracy_source: str
    p50_ms: float | None
    p99_ms: float | None
    throughput_ips: float | None
    identity: str  # what actually ran: the bundle's model file, or the run folder for PyTorch engines

    @property
    def label(self) -> str:
        """A short name for the plot: format, precision and engine."""
        return f"{self.format} {self.precision} / {self.engine}"


@dataclass(frozen=True)
class Constraint:
    """The accuracy an artifact must reach to be chosen (percent and points, as the CLI takes them)."""

    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 100:
            raise ConfigError(f"--min-accuracy is a percentage, got {self.min_accuracy}", "e.g. --min-accuracy 85")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise ConfigError(f"--max-accuracy-drop is in points (0-100), got {self.max_accuracy_drop}",
                              "e.g. --max-accuracy-drop 1.0")

    def threshold(self, best_accuracy: float) -> float:
        """The lowest accepted accuracy (fraction) on a target whose most accurate point has ``best_accuracy``."""
        low = 0.0 if self.min_accuracy is None else self.min_accuracy / 100
        if self.max_accuracy_drop is not None:
            low = max(low, best_accuracy - self.max_accuracy_drop / 100)
        return low

    def describe(self) -> str:
        """The constraint in words."""
        parts = []
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:g}%")
        if self.max_accuracy_drop is not None:
            drop = self.max_accuracy_drop
            parts.append(f"at most {drop:g} point{'' if drop == 1 else 's'} below the most accurate on the target")
        return " and ".join(parts) or "none (the fastest artifact with a known accuracy)"


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Bench results from JSON files: one result each, or ``{"results": [...]}``, or a list of results.

    Raises:
        DataError: A file is missing, is not JSON, or holds no bench results.
    """
    results: list[dict[str, Any]] = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"bench results not found: {path}", _HINT)
        try:
            data = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not a JSON file ({exc})", _HINT) from None
        items = data.get("results", data) if isinstance(data, dict) else data
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list) or not items or not all(_is_result(r) for r in items):
            raise DataError(f"{path} holds no edgetl bench results (each needs 'bundle', 'target', 'rows')",
                            _HINT)
        results.extend(items)
    return results


def _is_result(item: Any) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("rows"), list) and isinstance(item.get("bundle"), dict)
            and "target" in item)


def collect_entries(results: list[dict[str, Any]]) -> list[Entry]:
    """One :class:`Entry` per bench row, with accuracy and size read from the row's bundle.

    Raises:
        DataError: A result lacks a field the report needs (named).
    """
    entries = []
    for result in results:
        try:
            bundle = result["bundle"]
            manifest = _read_manifest(Path(bundle["path"]))
            target = result["target"]["name"] if isinstance(result["target"], dict) else str(result["target"])
            entries.extend(_entry(target, bundle, manifest, row) for row in result["rows"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"bench results lack a field the report needs ({type(exc).__name__}: {exc})",
                            "use results written by this edgetl's `edgetl bench --json`") from None
    return entries


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json(folder / "edgetl.json")
    except (OSError, json.JSONDecodeError):
        return None


def _entry(target: str, bundle: dict[str, Any], manifest: dict[str, Any] | None, row: dict[str, Any]) -> Entry:
    source_precision = _source_model_precision(row["engine"])
    accuracy, source = _accuracy(manifest, source_precision)
    if source_precision is None:
        fmt, precision, identity = bundle["format"], bundle["precision"], bundle["model_sha256"]
        # the whole bundle (an OpenVINO row's file_size_bytes counts model.xml alone, not model.bin)
        size_mb: float | None = bundle.get("bundle_size_bytes", bundle["file_size_bytes"]) / 1e6
    else:
        run_dir = ((manifest or {}).get("provenance") or {}).get("run_dir") or bundle["path"]
        fmt, precision, identity = "pytorch", source_precision, f"run:{run_dir}"
        weights = Path(run_dir) / "weights.safetensors"
        size_mb = weights.stat().st_size / 1e6 if weights.is_file() else None
    ok = row.get("status") == "ok"
    lat = row.get("latency_ms") or {}
    return Entry(
        target=target, bundle=_bundle_name(bundle["path"]), format=fmt, precision=precision,
        engine=row["engine"], threads=row["threads"], batch=row["batch"], seq_len=row.get("seq_len"),
        status=row.get("status") or f"error: {row.get('error')}", size_mb=size_mb, accuracy=accuracy,
        accuracy_source=source, p50_ms=lat.get("p50_ms") if ok else None, p99_ms=lat.get("p99_ms") if ok else None,
        throughput_ips=row.get("throughput_ips") if ok else None, identity=f"{identity}:{row['engine']}",
    )


def _source_model_precision(engine_name: str) -> str | None:
    """The precision at which a PyTorch engine runs the source model; None for engines running the bundle."""
    from edgetl.bench.engines import BENCH_ENGINES, TorchBench
    from edgetl.bench.gpu import TorchCudaBench
    from edgetl.errors import UnknownNameError

    try:
        engine = BENCH_ENGINES.get(engine_name)
    except UnknownNameError:
        return None
    if isinstance(engine, TorchCudaBench):
        return engine.precision
    return "fp32" if isinstance(engine, TorchBench) else None


def _accuracy(manifest: dict[str, Any] | None, source_precision: str | None) -> tuple[float | None, str]:
    if manifest is None:
        return None, "bundle not found"
    verification = manifest.get("verification")
    if not verification:
        return None, "bundle not verified"
    n = verification.get("n")
    if source_precision is None:
        return verification.get("artifact_accuracy"), f"artifact on {n} test samples"
    if source_precision == "fp32":
        return verification.get("reference_accuracy"), f"PyTorch fp32 on {n} test samples"
    return None, f"PyTorch {source_precision} not verified"


def _bundle_name(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name in _FORMAT_NAMES and p.parent.name else p.name


def summary_points(entries: list[Entry], batch: int | None = None) -> dict[str, list[Entry]]:
    """Per target, one entry per artifact x engine: the fastest ok row at ``batch`` (default: the target's
    smallest timed batch), at the longest sequence length for text."""
    points: dict[str, list[Entry]] = {}
    for target in dict.fromkeys(e.target for e in entries):
        ok = [e for e in entries if e.target == target and e.p50_ms is not None]
        wanted = batch if batch is not None else min((e.batch for e in ok), default=None)
        at_batch = [e for e in ok if e.batch == wanted]
        best: dict[str, Entry] = {}
        for e in at_batch:
            longest = max((x.seq_len or 0) for x in at_batch if x.identity == e.identity)
            if (e.seq_len or 0) == longest and (e.identity not in best or e.p50_ms < best[e.identity].p50_ms):
                best[e.identity] = e
        points[target] = list(best.values())
    return points


def choose_best(points: list[Entry], constraint: Constraint) -> tuple[Entry | None, float | None]:
    """The fastest point meeting the constraint (ties: the smaller file), and the accuracy threshold used."""
    known = [p for p in points if p.accuracy is not None]
    if not known:
        return None, None
    low = constraint.threshold(max(p.accuracy for p in known))
    eligible = [p for p in known if p.accuracy >= low - 1e-12]
    best = min(eligible, key=lambda p: (p.p50_ms, p.size_mb or 0.0), default=None)
    return best, low


def write_bench_report(
    bench_files: list[Path], out: Path, *, constraint: Constraint | None = None, batch: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render ``report.md``, ``pareto.png`` and ``report.json`` into ``out`` (written whole or not at all).

    Args:
        bench_files: ``edgetl bench --json`` outputs.
        out: The report folder.
        constraint: Accuracy the best artifact must reach (default: none).
        batch: Batch size of the plotted points and of the choice (default: each target's smallest).
        overwrite: Replace an existing non-empty ``out``.

    Returns:
        The report's JSON: ``constraint``, ``batch``, ``best`` (per target) and every ``entry``.

    Raises:
        DataError: A bench file is missing, not JSON, or not bench results.
        ConfigError: The constraint or batch is invalid.
        OutputExistsError: ``out`` exists and is not empty, without ``overwrite``.
    """
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    constraint = constraint or Constraint()
    entries = collect_entries(load_results(bench_files))
    points = summary_points(entries, batch)
    best = {target: choose_best(pts, constraint) for target, pts in points.items()}
    no_best = {t: why_no_best([e for e in entries if e.target == t], points[t], batch)
               for t, (b, _) in best.items() if b is None}
    summary = {
        "constraint": asdict(constraint), "constraint_text": constraint.describe(), "batch": batch,
        "best": {t: (asdict(b) | {"threshold": low} if b else None) for t, (b, low) in best.items()},
        "no_best": no_best,
        "entries": [asdict(e) for e in entries], "sources": [str(p) for p in bench_files],
    }
    with staged_dir(out, overwrite=overwrite) as tmp:
        plotted = {t: [_plot_point(p, best[t][0]) for p in pts if p.accuracy is not None] for t, pts in points.items()}
        plotted = {t: pts for t, pts in plotted.items() if pts}
        if plotted:
            plot_pareto(plotted, tmp / "pareto.png")
        write_text(tmp / "report.md", render_markdown(entries, points, best, no_best, constraint, bool(plotted)))
        write_json(tmp / "report.json", summary)
    return summary


def why_no_best(entries: list[Entry], points: list[Entry], batch: int | None) -> str:
    """Why a target has no best artifact, in a few words."""
    if not any(e.p50_ms is not None for e in entries):
        statuses = sorted({e.status for e in entries})
        return "nothing was timed" + (f" ({'; '.join(statuses)})" if statuses else "")
    if not points:
        return f"no timed row at batch {batch}"
    if all(p.accuracy is None for p in points):
        return "no timed artifact has a known accuracy"
    top = max(p.accuracy for p in points if p.accuracy is not None)
    return f"no artifact meets the constraint (the most accurate: {_pct(top)})"


def _plot_point(p: Entry, best: Entry | None) -> dict[str, Any]:
    return {"label": p.label, "latency_ms": p.p50_ms, "accuracy": p.accuracy, "size_mb": p.size_mb,
            "format": p.format, "precision": p.precision, "best": p == best}


def render_markdown(
    entries: list[Entry], points: dict[str, list[Entry]], best: dict[str, tuple[Entry | None, float | None]],
    no_best: dict[str, str], constraint: Constraint, with_plot: bool,
) -> str:
    """The report's Markdown: the best artifact per target, the Pareto plot, then every row per target."""
    lines = ["# edgetl benchmark report", "", f"Constraint: {constraint.describe()}.", "",
             "## Best artifact per target", "",
             "| target | bundle | format | precision | engine | threads | batch | accuracy | p50 ms | size MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for target, (b, low) in best.items():
        if b is None:
            lines.append(f"| {target} | {no_best[target].replace('|', '/')} | | | | | | | | |")
        else:
            lines.append(f"| {target} | {b.bundle} | {b.format} | {b.precision} | {b.engine} | {b.threads} |"
                         f" {b.batch} | {_pct(b.accuracy)} (>= {_pct(low)}) | {_ms(b.p50_ms)} | {_mb(b.size_mb)} |")
    lines += ["", "Each point is an artifact x engine at its fastest thread count; accuracy is the artifact's own "
              "test accuracy from its bundle (edgetl.json); size is the bundle's (PyTorch: the run's weights)."]
    if with_plot:
        lines += ["", "![accuracy vs latency vs size](pareto.png)"]
    unplotted = sorted({f"{p.label} ({p.accuracy_source})" for pts in points.values() for p in pts
                        if p.accuracy is None})
    if unplotted:
        lines += ["", "Not plotted (no accuracy): " + "; ".join(unplotted) + "."]
    for target in dict.fromkeys(e.target for e in entries):
        lines += ["", *_target_table(target, [e for e in entries if e.target == target])]
    return "\n".join(lines) + "\n"


def _target_table(target: str, entries: list[Entry]) -> list[str]:
    text = any(e.seq_len for e in entries)
    seq_head, seq_rule = (" seq |", "---|") if text else ("", "")
    lines = [f"## `{target}`: every configuration", "",
             f"| bundle | format | precision | engine | threads | batch |{seq_head} status | size MB | accuracy |"
             " p50 ms | p99 ms | throughput /s |",
             f"|---|---|---|---|---|---|{seq_rule}---|---|---|---|---|---|"]
    for e in entries:
        seq = f" {e.seq_len or '-'} |" if text else ""
        status = "ok" if e.p50_ms is not None else e.status.replace("|", "/")
        lines.append(f"| {e.bundle} | {e.format} | {e.precision} | {e.engine} | {e.threads} | {e.batch} |{seq}"
                     f" {status} | {_mb(e.size_mb)} | {_pct(e.accuracy)} | {_ms(e.p50_ms)} | {_ms(e.p99_ms)} |"
                     f" {_ms(e.throughput_ips)} |")
    return lines


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ms(x: float | None) -> str:
    """About three significant digits: 1234, 45.1, 0.923."""
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.3g}"
