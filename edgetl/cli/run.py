"""`edgetl run RECIPE.yaml`: the whole pipeline, skipping stages whose inputs did not change."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Re-run every stage.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Override the recipe's workdir.")
def command(recipe: Path, force: bool, workdir: Path | None) -> None:
    """Run RECIPE: finetune -> export + verify -> bench -> report."""
    from edgetl.cli.render import make_console
    from edgetl.pipeline import check_recipe_paths, load_recipe, run_recipe

    r = load_recipe(recipe)
    if workdir:
        r.workdir = workdir
    check_recipe_paths(r)
    status = run_recipe(r, force=force)
    console = make_console()
    for name, what in status.items():
        console.print(f"  {name:<9} {what}")
    if (r.workdir / "report" / "report.md").is_file():
        console.print(f"report: [bold]{r.workdir / 'report' / 'report.md'}[/bold]")
