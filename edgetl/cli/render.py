"""Terminal rendering of results (tables), shared by the commands."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


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
    rows = [
        (f"{metrics['backbone']} ({metrics['weights']['source']} weights)", metrics["test"]),
        (base["random_init"]["name"], base["random_init"]),
        (base["linear"]["name"], base["linear"]),
    ]
    table = Table(title="what transfer bought (same data, test split)")
    for col in ("model", "accuracy", "macro-F1"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, m in rows:
        table.add_row(name, f"{m['accuracy']:.2%}", f"{m['macro_f1']:.4f}")
    console.print(table)


def print_verification(bundle: Path) -> None:
    """The verification figures recorded in a bundle's edgetl.json."""
    from edgetl.fsutil import read_json

    manifest = read_json(Path(bundle) / "edgetl.json")
    v = manifest["verification"]
    table = Table(title=f"{manifest['format']} {manifest['precision']} vs PyTorch on {v['n']} test images")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_row("max |logit diff|", f"{v['max_abs_diff']:.2e}")
    table.add_row("mean |logit diff|", f"{v['mean_abs_diff']:.2e}")
    table.add_row("top-1 agreement", f"{v['top1_agreement']:.4%}")
    table.add_row("PyTorch test accuracy", f"{v['reference_accuracy']:.4%}")
    table.add_row("artifact test accuracy", f"{v['artifact_accuracy']:.4%}")
    console.print(table)
    console.print(f"bundle: [bold]{bundle}[/bold]")
