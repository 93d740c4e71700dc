"""`edgetl targets`: the target profiles, what they run, their limits, and whether they are reachable now."""

from __future__ import annotations

import json

import click


@click.command("targets")
@click.argument("names", nargs=-1)
@click.option("--no-probe", is_flag=True, help="Do not check availability (no SSH connections).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(names: tuple[str, ...], no_probe: bool, as_json: bool) -> None:
    """List target profiles (or NAMES): kind, where, engines, RAM/flash limits, availability."""
    from rich.table import Table

    from edgetl.bench.targets import describe_targets, load_target
    from edgetl.cli.render import make_console

    for name in names:
        load_target(name)  # an unknown name fails with the known ones
    rows = describe_targets(list(names) or None, probe=not no_probe)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="targets (targets/*.yaml, $EDGETL_TARGETS_DIR)")
    for col in ("name", "kind", "where", "engines", "RAM", "flash", "available"):
        table.add_column(col, no_wrap=col in ("name", "kind"))
    for r in rows:
        mark = {True: "yes", False: "no", None: "-"}[r["available"]]
        table.add_row(r["name"], r["kind"], r["where"], ", ".join(r["engines"]) or "-", _kb(r["ram_kb"]),
                      _kb(r["flash_kb"]), f"{mark}: {r['status']}")
    make_console().print(table)


def _kb(kb: int | None) -> str:
    if kb is None:
        return "-"
    return f"{kb / 2**20:.1f} GB" if kb >= 2**20 else f"{kb / 1024:.0f} MB" if kb >= 1024 else f"{kb} KB"
