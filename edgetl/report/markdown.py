"""A Markdown + PNG report of one pipeline: training, verification and benchmark, rendered from JSON."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgetl.fsutil import read_json, staged_dir, write_json, write_text
from edgetl.report.plots import plot_bars


def write_report(run_dir: Path, bundle_dir: Path, bench_json: Path | None, out: Path) -> Path:
    """Render ``report.md`` (+ PNGs and ``report.json``) from a run folder, a bundle and bench results."""
    metrics = read_json(run_dir / "metrics.json")
    manifest = read_json(bundle_dir / "edgetl.json")
    bench = read_json(bench_json) if bench_json and Path(bench_json).is_file() else None
    with staged_dir(out, overwrite=True) as tmp:
        for png in ("confusion_matrix.png", "training_curves.png"):
            if (run_dir / png).is_file():
                shutil.copyfile(run_dir / png, tmp / png)
        sections = [_training_section(metrics), _verification_section(manifest)]
        if bench:
            sections.append(_bench_section(bench, tmp))
        title = f"# edgetl report: {metrics['backbone']} on {metrics['data']['source']}\n"
        write_text(tmp / "report.md", title + "\n".join(sections))
        write_json(tmp / "report.json", {"metrics": metrics, "bundle": manifest, "bench": bench})
    return out


def _training_section(m: dict[str, Any]) -> str:
    test = m["test"]
    text = m.get("task") == "text"
    size = m["input_size"]
    shape = f"up to {size[0]} tokens" if text else f"{size[0]}x{size[1]}"
    what = "texts" if text else "images"
    lines = [
        "## Training",
        f"- backbone `{m['backbone']}`, mode `{m['mode']}`, input {shape}",
        f"- weights: {m['weights']['detail']}",
        f"- data: train {m['data']['train']}, val {m['data']['val']}, test {m['data']['test']}"
        f" ({m['data']['skipped']} {'unusable rows' if text else 'unreadable images'} skipped)",
        f"- best epoch {m['best_epoch']} of {m['epochs_run']}, {m.get('seconds', '?')} s",
        "",
        f"**Test accuracy {test['accuracy']:.2%}**, macro-F1 {test['macro_f1']:.4f} on {test['n']} {what}.",
        "",
        "| class | accuracy |",
        "|---|---|",
        *[f"| {c} | {a:.2%} |" for c, a in test["per_class_accuracy"].items()],
        "",
    ]
    if m.get("baseline"):
        b = m["baseline"]
        lines += ["### What transfer bought", "", "| model | test accuracy | macro-F1 |", "|---|---|---|",
                  f"| {m['backbone']} ({m['weights']['source']} weights) | {test['accuracy']:.2%} |"
                  f" {test['macro_f1']:.4f} |"]
        lines += [f"| {r['name']} | {r['accuracy']:.2%} | {r['macro_f1']:.4f} |"
                  for r in (b.get("random_init"), b.get("linear")) if r]
        lines.append("")
    lines += ["![confusion matrix](confusion_matrix.png)", "", "![training curves](training_curves.png)", ""]
    return "\n".join(lines)


def _verification_section(manifest: dict[str, Any]) -> str:
    v = manifest["verification"]
    if v is None:
        return f"## Export: {manifest['format']} {manifest['precision']}\n\nNot verified.\n"
    what = "texts" if manifest["spec"].get("task") == "text-classification" else "images"
    return "\n".join([
        f"## Export: {manifest['format']} {manifest['precision']}",
        "",
        "| check | value |",
        "|---|---|",
        f"| {what} compared | {v['n']} |",
        f"| max abs logit diff | {v['max_abs_diff']:.2e} |",
        f"| top-1 agreement | {v['top1_agreement']:.4%} |",
        f"| PyTorch test accuracy | {v['reference_accuracy']:.4%} |",
        f"| artifact test accuracy | {v['artifact_accuracy']:.4%} |",
        "",
    ])


def _bench_section(bench: dict[str, Any], folder: Path) -> str:
    rows = [r for r in bench["rows"] if r.get("status") == "ok"]
    lines = [
        f"## Benchmark on `{bench['target']['name']}`",
        "",
        f"Machine: {bench['machine']['cpu']}, {bench['machine']['usable_cores']} usable cores. "
        f"Model file {bench['bundle']['file_size_bytes'] / 1e6:.2f} MB.",
        "",
        "| engine | threads | batch | seq | p50 ms | p90 ms | p99 ms | throughput /s | cold start ms |"
        " peak RSS MB | end-to-end ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat, e2e = r["latency_ms"], r.get("end_to_end_ms")
        e2e_cell = f"{e2e['p50_ms']:.2f}" if e2e else ""
        lines.append(
            f"| {r['engine']} | {r['threads']} | {r['batch']} | {r.get('seq_len') or '-'} | {lat['p50_ms']:.2f} |"
            f" {lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} | {r['throughput_ips']:.1f} | {r['cold_start_ms']:.0f} |"
            f" {r['peak_rss_mb']:.0f} | {e2e_cell} |")
    skipped = [r for r in bench["rows"] if r.get("status") != "ok"]
    lines += [f"- {r['engine']} threads={r['threads']} batch={r['batch']}: {r.get('status') or r.get('error')}"
              for r in skipped]
    if rows:
        item = "sequence" if any(r.get("seq_len") for r in rows) else "image"
        names = [f"{r['engine']} t{r['threads']} b{r['batch']}" + (f" s{r['seq_len']}" if r.get("seq_len") else "")
                 for r in rows]
        per_item = [r["latency_ms"]["p50_ms"] / r["batch"] for r in rows]
        plot_bars(names, per_item, folder / "latency.png", f"p50 ms per {item}", f"latency per {item}")
        lines += ["", f"![latency per {item}](latency.png)"]
    return "\n".join(lines) + "\n"
