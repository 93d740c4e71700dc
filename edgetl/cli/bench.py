"""`edgetl bench`: time a bundle on a target."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, default=["local-cpu"], show_default=True,
              help="Target profile name (targets/*.yaml); repeatable.")
@click.option("--engine", "engines", multiple=True, help="Only these engines (default: the target's).")
@click.option("--threads", "threads", multiple=True, type=int, help="Thread counts (default: the target's).")
@click.option("--batch", "batches", multiple=True, type=int, help="Batch sizes (default: the target's).")
@click.option("--image", type=click.Path(path_type=Path), help="Image for the end-to-end timing.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results as JSON.")
def command(bundles: tuple[Path, ...], targets: tuple[str, ...], engines: tuple[str, ...],
            threads: tuple[int, ...], batches: tuple[int, ...], image: Path | None, json_out: Path | None) -> None:
    """Benchmark BUNDLES (latency percentiles, throughput, cold start, memory, size, end-to-end)."""
    from rich.console import Console

    from edgetl.bench.runner import bench_bundle, render_table
    from edgetl.fsutil import write_json

    results = []
    for bundle in bundles:
        for target in targets:
            result = bench_bundle(bundle, target, engines=list(engines) or None, threads=list(threads) or None,
                                  batch_sizes=list(batches) or None, image=image)
            Console().print(render_table(result))
            results.append(result)
    if json_out:
        write_json(json_out, results[0] if len(results) == 1 else {"results": results})
        click.echo(f"wrote {json_out}")
