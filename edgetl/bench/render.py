"""Terminal tables of :func:`edgetl.bench.runner.bench_bundle` results (one line per configuration)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

_COLUMNS = ("engine", "thr", "batch", "seq", "p50", "p90", "p99", "mean±sd", "items/s", "cold", "RSS", "e2e",
            "note")


def render_table(result: dict[str, Any]) -> Table:
    """A terminal table of :func:`bench_bundle` results, one line per configuration."""
    from rich import box
    from rich.table import Table

    bundle, machine = result["bundle"], result["machine"]
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"{Path(bundle['path']).name} ({bundle['format']} {bundle['precision']}, "
        f"{bundle['file_size_bytes'] / 1e6:.2f} MB) on {_target_label(result['target'])}",
        caption=_caption(result, machine),
    )
    with_notes = any(row["status"] != "ok" or row["note"] for row in result["rows"])
    text = any(row.get("seq_len") for row in result["rows"])
    columns = [c for c in (_COLUMNS if with_notes else _COLUMNS[:-1]) if text or c != "seq"]
    for name in columns:
        numeric = name not in ("engine", "note")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=name != "note")
    for row in result["rows"]:
        cells = dict(zip(_COLUMNS, _cells(row), strict=True))
        table.add_row(*(cells[c] for c in columns))
    return table


def _target_label(target: dict[str, Any]) -> str:
    if target.get("kind") == "ssh" and target.get("host"):
        return f"{target['name']} ({target.get('user') or ''}{'@' if target.get('user') else ''}{target['host']})"
    return str(target["name"])


def _caption(result: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = [fit_line(result["fit"])] if result.get("fit") else []
    if result.get("status") in ("fit check only", "does not fit"):
        return "\n".join([*lines, f"not run: {result['status']}"])
    where = f"{machine['cpu']}, {machine['usable_cores']} cores"
    if machine.get("hostname"):
        where += f" ({machine['hostname']}, {machine.get('arch')})"
    if result["target"].get("kind") == "ssh":
        e2e = "(not measured: an SSH device times the model alone, on random inputs)"
    else:
        e2e = _e2e_caption(result["input"])
    lines.append(f"{where}. Latency percentiles in ms; cold = load + first inference (ms); RSS = peak MB; "
                 f"e2e = p50 ms {e2e}.")
    return "\n".join(lines)


def fit_line(fit: dict[str, Any]) -> str:
    """One line on a fit check: the verdict, the needs against the limits, and why it does not fit."""
    verdict = {True: "fits", False: "does NOT fit", None: "fit unknown"}[fit["fits"]]
    peak = "?" if fit["peak_activation_kb"] is None else f"{fit['peak_activation_kb']:,.0f}"
    needs = f"model {fit['model_kb']:,.0f} KB, peak activations {peak} KB (batch 1)"
    limits = ", ".join(f"{k.split('_')[0]} {fit[k]:,} KB" for k in ("flash_kb", "ram_kb") if fit[k] is not None)
    reasons = f": {'; '.join(fit['reasons'])}" if fit["reasons"] else ""
    return f"fit: {verdict} ({needs}; limits {limits}, weights in {fit['weights_in']}){reasons}"


def _e2e_caption(info: dict[str, Any]) -> str:
    if info.get("kind") == "text":
        return f"from a raw string ({info['source']}, {info['tokens']} tokens) through the tokenizer to logits"
    return f"from image file ({info['source']}) through preprocessing to logits"


def _cells(row: dict[str, Any]) -> list[str]:
    head = [row["engine"], _threads_label(row), str(row["batch"]), str(row.get("seq_len") or "-")]
    if row["status"] != "ok":
        return [*head, *(["-"] * (len(_COLUMNS) - 5)), row["status"]]
    lat, e2e = row["latency_ms"], row["end_to_end_ms"]
    return [
        *head, _num(lat["p50_ms"]), _num(lat["p90_ms"]), _num(lat["p99_ms"]),
        f"{_num(lat['mean_ms'])}±{_num(lat['std_ms'])}", _num(row["throughput_ips"]),
        _num(row["cold_start_ms"]), _num(row["peak_rss_mb"]), _num(e2e["p50_ms"]) if e2e else "-",
        row["note"] or "",
    ]


def _num(x: float) -> str:
    """About three significant digits, without exponent: 1234, 45.1, 0.92."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _threads_label(row: dict[str, Any]) -> str:
    return f"all={row['threads']}" if row["threads_spec"] == "all" else str(row["threads"])
