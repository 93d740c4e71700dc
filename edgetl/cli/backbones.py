"""`edgetl backbones`: the registered backbones and whether pretrained weights are available here."""

from __future__ import annotations

import json

import click
from rich.table import Table

from edgetl.cli.render import make_console


@click.command("backbones")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List backbones: name, parameters, input size, pretrained weights available here."""
    from edgetl.models import describe_backbones, describe_text_backbones

    rows = [{"task": "image", **r} for r in describe_backbones()]
    rows += [{"task": "text", **r} for r in describe_text_backbones()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="backbones")
    for col in ("name", "task", "family", "params", "input", "pretrained weights here"):
        table.add_column(col, no_wrap=col != "pretrained weights here")
    for r in rows:
        size = "x".join(map(str, r["input_size"])) if "input_size" in r else f"{r['max_length']} tokens"
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "?"
        table.add_row(r["name"], r["task"], r["family"], params, size, str(r["pretrained"]))
    make_console().print(table)
