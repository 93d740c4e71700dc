"""`edgetl report`: render bench results (JSON) to Markdown, a Pareto PNG and the best artifact per target."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("bench_files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report folder to write.")
@click.option("--min-accuracy", type=float, help="Best artifact: test accuracy at least this, in percent (e.g. 85).")
@click.option("--max-accuracy-drop", type=float,
              help="Best artifact: at most this many points below the most accurate on its target (e.g. 1.0).")
@click.option("--batch", type=int, help="Batch size to compare and plot (default: each target's smallest).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def command(bench_files: tuple[Path, ...], out: Path, min_accuracy: float | None, max_accuracy_drop: float | None,
            batch: int | None, overwrite: bool) -> None:
    """Render BENCH_FILES (`edgetl bench --json` outputs) to OUT/report.md, pareto.png and report.json."""
    from edgetl.report.bench_report import Constraint, write_bench_report

    constraint = Constraint(min_accuracy=min_accuracy, max_accuracy_drop=max_accuracy_drop)
    summary = write_bench_report(list(bench_files), out, constraint=constraint, batch=batch, overwrite=overwrite)
    for target, best in summary["best"].items():
        if best is None:
            click.echo(f"{target}: no best artifact: {summary['no_best'][target]}")
        else:
            click.echo(f"{target}: best {best['bundle']} ({best['format']} {best['precision']}, {best['engine']}, "
                       f"threads {best['threads']}, batch {best['batch']}): {best['p50_ms']:.3g} ms p50, "
                       f"accuracy {100 * best['accuracy']:.2f}%")
    click.echo(f"wrote {out / 'report.md'}")
