"""`edgetl backbones`: the registered backbones and whether pretrained weights are available here."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table


@click.command("backbones")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List backbones: name, parameters, input size, pretrained weights available here."""
    from edgetl.models import describe_backbones

    rows = describe_backbones()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="backbones")
    for col in ("name", "family", "params", "input", "pretrained weights here"):
        table.add_column(col)
    for r in rows:
        size = "x".join(str(x) for x in r["input_size"])
        table.add_row(r["name"], r["family"], f"{r['params'] / 1e6:.2f}M", size, str(r["pretrained"]))
    Console().print(table)
