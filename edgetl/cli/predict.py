"""`edgetl predict BUNDLE ITEMS...`: classify images (files, folders) or texts with a bundle, torch-free."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from edgetl.errors import DataError


@click.command("predict")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("items", nargs=-1)
@click.option("--top-k", type=int, default=1, show_default=True, help="Classes to show per item, best first.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Items per engine call.")
@click.option("--threads", type=int, default=None, help="Engine threads (default: the engine's).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per item on stdout (JSON lines).")
def command(bundle: Path, items: tuple[str, ...], top_k: int, batch_size: int, threads: int | None,
            as_json: bool) -> None:
    """Classify ITEMS with BUNDLE (any format: onnx, openvino, tflite).

    Image bundles take image files and folders (every image inside, sorted). Text bundles take the texts
    themselves. `-` (or no ITEMS) reads one item per line from stdin.
    """
    from edgetl.runtime import Bundle

    if batch_size < 1:
        raise click.BadParameter("must be >= 1", param_hint="--batch-size")
    loaded = Bundle.load(bundle, threads=threads)
    inputs = _texts(items) if loaded.spec.is_text else _images(items)
    if not inputs:
        raise DataError("nothing to classify", "pass items as arguments, or lines on stdin with `-`")
    start = time.perf_counter()
    results = loaded.predict(inputs, top_k=top_k, batch_size=batch_size)
    per_item_ms = 1000 * (time.perf_counter() - start) / len(inputs)
    rows = [{"input": str(item), "predictions": [{"label": p.label, "score": p.score} for p in preds]}
            for item, preds in zip(inputs, results, strict=True)]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    else:
        _print_table(rows, loaded, per_item_ms)


def _stdin_lines() -> list[str]:
    return [line.rstrip("\n\r") for line in sys.stdin if line.strip()]


def _texts(items: tuple[str, ...]) -> list[str]:
    texts: list[str] = []
    for item in items or ("-",):
        texts.extend(_stdin_lines() if item == "-" else [item])
    return texts


def _images(items: tuple[str, ...]) -> list[Path]:
    from edgetl.runtime.preprocess import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in items or ("-",):
        for name in _stdin_lines() if item == "-" else [item]:
            path = Path(name)
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
                if not found:
                    raise DataError(f"no images in folder {path}",
                                    f"supported extensions: {', '.join(IMAGE_EXTENSIONS)} (any case)")
                paths.extend(found)
            elif path.is_file():
                paths.append(path)
            else:
                raise DataError(f"no such file or folder: {path}", "check the path")
    return paths


def _print_table(rows: list[dict[str, Any]], bundle: Any, per_item_ms: float) -> None:
    from rich.table import Table

    from edgetl.cli.render import make_console

    fmt, precision = bundle.manifest["format"], bundle.manifest["precision"]
    table = Table(title=f"{bundle.path.name} ({fmt} {precision})",
                  caption=f"{len(rows)} items, {per_item_ms:.2f} ms per item including preprocessing")
    table.add_column("input", overflow="fold")
    table.add_column("prediction")
    table.add_column("score", justify="right")
    for row in rows:
        preds = row["predictions"]
        table.add_row(_short(row["input"]), "\n".join(p["label"] for p in preds),
                      "\n".join(f"{p['score']:.3f}" for p in preds))
    make_console().print(table)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
