"""Terminal rendering of results (tables), shared by the commands."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: Output piped to a file or CI log is not cut to rich's 80-column default: tables stay readable there.
PIPED_WIDTH = 160


def make_console() -> Console:
    """A stdout console: the terminal's width, or :data:`PIPED_WIDTH` columns when output is piped."""
    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


console = make_console()


def print_finetune_summary(metrics: dict, out: Path) -> None:
    """Test metrics, per-class accuracy and the baseline comparison of a finished run."""
    test = metrics["test"]
    table = Table(title=f"{metrics['backbone']} ({metrics['mode']}): test split, n={test['n']}")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in test["per_class_accuracy"].items():
        table.add_row(name, f"{acc:.2%}")
    table.add_row("[bold]all[/bold]", f"[bold]{test['accuracy']:.2%}[/bold]")
    table.add_row("macro-F1", f"{test['macro_f1']:.4f}")
    console.print(table)
    if "baseline" in metrics:
        print_comparison(metrics)
    console.print(f"weights: {metrics['weights']['detail']}")
    console.print(f"run folder: [bold]{out}[/bold] (best epoch {metrics['best_epoch']}, {metrics['seconds']} s)")


def print_comparison(metrics: dict) -> None:
    """Pretrained model vs the same backbone from random init vs pixel logistic regression."""
    base = metrics["baseline"]
    rows = [(f"{metrics['backbone']} ({metrics['weights']['source']} weights)", metrics["test"])]
    rows += [(base[key]["name"], base[key]) for key in ("random_init", "linear") if key in base]
    table = Table(title="what transfer bought (same data, test split)")
    for col in ("model", "accuracy", "macro-F1"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, m in rows:
        table.add_row(name, f"{m['accuracy']:.2%}", f"{m['macro_f1']:.4f}")
    console.print(table)


def _limit(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_verification(bundle: Path) -> None:
    """The verification figures recorded in a bundle's edgetl.json."""
    from edgetl.fsutil import read_json

    manifest = read_json(Path(bundle) / "edgetl.json")
    if manifest.get("quantization"):
        print_quantization(manifest["quantization"])
    v = manifest["verification"]
    if v is None:
        console.print("[yellow]not verified[/yellow] (--no-verify)")
        console.print(f"bundle: [bold]{bundle}[/bold]")
        return
    what = "texts" if manifest["spec"].get("task") == "text-classification" else "images"
    limits = v.get("limits") or {}
    table = Table(title=f"{manifest['format']} {manifest['precision']} vs PyTorch on {v['n']} test {what}")
    for name in ("check", "value", "limit"):
        table.add_column(name, justify="left" if name == "check" else "right")
    drop = 100 * (v["reference_accuracy"] - v["artifact_accuracy"])
    table.add_row("max |logit diff|", f"{v['max_abs_diff']:.2e}", _limit(limits.get("max_abs_diff"), "<= {:.0e}"))
    if "max_rel_diff" in v:
        rel_limit = _limit(limits.get("max_rel_diff"), "<= {:.0e}")
        table.add_row("relative logit diff", f"{v['max_rel_diff']:.2e}", rel_limit)
    table.add_row("mean |logit diff|", f"{v['mean_abs_diff']:.2e}", "")
    table.add_row("top-1 agreement", f"{v['top1_agreement']:.2%}", _limit(limits.get("min_agreement"), ">= {:.2%}"))
    table.add_row("PyTorch test accuracy", f"{v['reference_accuracy']:.2%}", "")
    table.add_row("artifact test accuracy", f"{v['artifact_accuracy']:.2%}", "")
    table.add_row("accuracy drop (points)", f"{drop:.2f}", _limit(limits.get("max_accuracy_drop"), "<= {:g}"))
    console.print(table)
    console.print(f"bundle: [bold]{bundle}[/bold]")


def print_quantization(q: dict) -> None:
    """The INT8 ladder of a bundle: every rung with its validation accuracy, the one kept, and the speed check."""
    table = Table(title=f"INT8 ladder ({q['method']}): budget {q['budget_points']:g} points vs FP32 on "
                        f"{q['validation_samples']} validation samples")
    for name in ("rung", "accuracy", "drop", "result"):
        table.add_column(name, justify="left" if name in ("rung", "result") else "right")
    for a in q["attempts"]:
        acc = "-" if a["accuracy"] is None else f"{a['accuracy']:.2%}"
        drop = "-" if a["drop"] is None else f"{a['drop']:+.2f}"
        kept = a["step"] == q.get("chosen")
        result = "[green]kept[/green]" if kept else ("ok" if a["ok"] else f"[yellow]{a['note'] or 'failed'}[/yellow]")
        table.add_row(a["step"], acc, drop, result)
    console.print(table)
    if q.get("declined"):
        console.print(f"[yellow]INT8 declined[/yellow]: {q['declined']}")
    speed = q.get("speed")
    if speed:
        size = q["int8_bytes"] / q["fp32_bytes"]
        verdict = "[green]faster[/green]" if speed["faster"] else "[yellow]NOT faster than FP32 here[/yellow]"
        console.print(f"INT8 {speed['int8_ms']:.2f} ms vs FP32 {speed['fp32_ms']:.2f} ms at batch 1 "
                      f"({speed['speedup']:.2f}x, {verdict}); size {size:.2f}x FP32")


def print_export_summary(results: dict) -> None:
    """One line per format of ``edgetl export --format all``: bundle, size, parity, accuracy, or the error."""
    from edgetl.fsutil import read_json

    table = Table(title="export --format all")
    for name in ("format", "bundle", "MB", "max |diff|", "agreement", "accuracy", "status"):
        table.add_column(name, justify="right" if name in ("MB", "max |diff|", "agreement", "accuracy") else "left")
    for fmt, result in results.items():
        if not isinstance(result, Path):
            table.add_row(fmt, "-", "-", "-", "-", "-", f"[red]{result.one_line()}[/red]")
            continue
        manifest = read_json(result / "edgetl.json")
        v = manifest["verification"] or {}
        size = sum(p.stat().st_size for p in result.rglob("*") if p.is_file() and "tokenizer" not in p.parts)
        table.add_row(fmt, str(result), f"{size / 1e6:.2f}", f"{v.get('max_abs_diff', float('nan')):.1e}",
                      f"{v.get('top1_agreement', float('nan')):.2%}", f"{v.get('artifact_accuracy', float('nan')):.2%}",
                      "[green]verified[/green]" if v else "not verified")
    console.print(table)
