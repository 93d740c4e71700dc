"""`edgetl bench`: time bundles on one or more targets (this machine, SSH devices, fit checks)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, default=["local-cpu"], show_default=True,
              help="Target: a profile name (`edgetl targets` lists them), a .yaml path, or ssh://user@host[:port]; "
                   "repeatable.")
@click.option("--profile", help="Profile for ssh:// targets (engines, threads, python, limits); default "
                                "generic-arm64-ssh.")
@click.option("--engine", "engines", multiple=True, help="Only these engines (default: the target's).")
@click.option("--threads", "threads", multiple=True, type=int, help="Thread counts (default: the target's).")
@click.option("--batch", "batches", multiple=True, type=int, help="Batch sizes (default: the target's).")
@click.option("--seq-len", "seq_lengths", multiple=True, type=int,
              help="Text bundles: token sequence lengths (default: the target's, e.g. 16 64 128).")
@click.option("--image", type=click.Path(path_type=Path), help="Image for the end-to-end timing.")
@click.option("--text", help="Text bundles: the string for the end-to-end timing (default: a test text).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results as JSON.")
def command(bundles: tuple[Path, ...], targets: tuple[str, ...], profile: str | None, engines: tuple[str, ...],
            threads: tuple[int, ...], batches: tuple[int, ...], seq_lengths: tuple[int, ...], image: Path | None,
            text: str | None, json_out: Path | None) -> None:
    """Benchmark BUNDLES on each target (latency percentiles, throughput, cold start, memory, size, fit)."""
    from edgetl.bench.runner import bench_bundle, render_table
    from edgetl.bench.targets import resolve_target
    from edgetl.cli.render import make_console
    from edgetl.errors import ConfigError
    from edgetl.runtime.bundle import read_manifest

    if profile and not any(t.startswith("ssh://") for t in targets):
        raise ConfigError("--profile is for ssh:// targets", "add --target ssh://user@host, or leave --profile out")
    profiles = [resolve_target(t, profile if t.startswith("ssh://") else None) for t in targets]  # typos first
    for bundle in bundles:
        read_manifest(bundle)
    results = []
    for bundle in bundles:
        for target in profiles:
            result = bench_bundle(bundle, target, engines=list(engines) or None, threads=list(threads) or None,
                                  batch_sizes=list(batches) or None, seq_lengths=list(seq_lengths) or None,
                                  image=image, text=text)
            make_console().print(render_table(result))
            results.append(result)
    if json_out:
        write_json(json_out, results[0] if len(results) == 1 else {"results": results})
        click.echo(f"wrote {json_out}")


def write_json(path: Path, data: object) -> None:
    """Atomic JSON write (imported lazily: the CLI starts fast)."""
    from edgetl.fsutil import write_json as write

    write(path, data)
