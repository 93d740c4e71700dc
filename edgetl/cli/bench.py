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
@click.option("--seq-len", "seq_lengths", multiple=True, type=int,
              help="Text bundles: token sequence lengths (default: the target's, e.g. 16 64 128).")
@click.option("--image", type=click.Path(path_type=Path), help="Image for the end-to-end timing.")
@click.option("--text", help="Text bundles: the string for the end-to-end timing (default: a test text).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results as JSON.")
def command(bundles: tuple[Path, ...], targets: tuple[str, ...], engines: tuple[str, ...],
            threads: tuple[int, ...], batches: tuple[int, ...], seq_lengths: tuple[int, ...], image: Path | None,
            text: str | None, json_out: Path | None) -> None:
    """Benchmark BUNDLES (latency percentiles, throughput, cold start, memory, size, end-to-end)."""
    from edgetl.bench.runner import bench_bundle, render_table
    from edgetl.cli.render import make_console
    from edgetl.fsutil import write_json

    results = []
    for bundle in bundles:
        for target in targets:
            result = bench_bundle(bundle, target, engines=list(engines) or None, threads=list(threads) or None,
                                  batch_sizes=list(batches) or None, seq_lengths=list(seq_lengths) or None,
                                  image=image, text=text)
            make_console().print(render_table(result))
            results.append(result)
    if json_out:
        write_json(json_out, results[0] if len(results) == 1 else {"results": results})
        click.echo(f"wrote {json_out}")
