"""`edgetl calibrate`: materialise a calibration set (a recipe's pick of a dataset split) once, for every backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgetl.cli.options import apply_overrides, config_options
from edgetl.config import TASKS, DataConfig, FinetuneConfig

if TYPE_CHECKING:
    from edgetl.quantize.calibration import CalibrationRecipe, CalibrationSet

DEFAULT_RECIPE = Path("calibration/default.yaml")
#: Data options of `edgetl finetune` that do not change which samples are loaded.
_SKIPPED = ("task", "data", "max_length", "image_size", "augment", "text_augment")
_DATA_HELP = "Dataset, as for `edgetl finetune`: image folder, fashion-mnist, CSV/TSV/JSONL file, rotten-tomatoes..."
_TASK_HELP = "image | text [default: text for rotten-tomatoes or a file, else image]"


@click.command("calibrate")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    help="Run folder: calibrate on its own dataset and record its spec (instead of --data).",
)
@click.option("--data", "data__data", default=None, help=_DATA_HELP)
@click.option("--task", "data__task", type=click.Choice(TASKS), default=None, help=_TASK_HELP)
@config_options({"data": DataConfig}, skip=_SKIPPED)
@click.option(
    "--recipe",
    "recipe_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Calibration recipe YAML [default: {DEFAULT_RECIPE} if present, else built-in defaults].",
)
@click.option("--samples", type=int, default=None, help="Number of samples (overrides the recipe).")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="Dataset split to pick from (overrides the recipe).",
)
@click.option(
    "--stratified/--no-stratified", default=None, help="Per-class stratified sampling (overrides the recipe)."
)
@click.option("--seed", type=int, default=None, help="Sampling seed (overrides the recipe).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write [default: calib/<dataset or run name>-<recipe name>].",
)
@click.option("--overwrite", is_flag=True, help="Replace an --out that holds another set.")
def command(
    run_dir: Path | None,
    recipe_file: Path | None,
    samples: int | None,
    split: str | None,
    stratified: bool | None,
    seed: int | None,
    out: Path | None,
    overwrite: bool,
    **flags: Any,
) -> None:
    """Pick a calibration set from a dataset (--data, as for `edgetl finetune`) or a run's dataset (--run).

    The set is written once (images as PNG, texts as JSON lines) with its fingerprint; running the same
    command again reuses it. Preprocessing is never part of the set: backends take it from the model's spec.
    """
    from edgetl.quantize.calibration import calibration_for_data, calibration_for_run

    recipe = _base_recipe(recipe_file).with_(samples=samples, split=split, stratified=stratified, seed=seed)
    if run_dir is not None:
        _refuse_data_flags(flags)
        out = out or Path("calib") / f"{Path(run_dir).resolve().name}-{recipe.name}"
        calib = calibration_for_run(run_dir, recipe, out, overwrite=overwrite)
    else:
        config = _data_config(flags)
        out = out or Path("calib") / f"{_data_name(config.data.data)}-{recipe.name}"
        calib = calibration_for_data(config, recipe, out, overwrite=overwrite)
    _print_summary(calib)


def _base_recipe(recipe_file: Path | None) -> CalibrationRecipe:
    """The --recipe file, else calibration/default.yaml in the working folder, else the built-in defaults."""
    from edgetl.quantize.calibration import CalibrationRecipe

    if recipe_file is None and not DEFAULT_RECIPE.is_file():
        return CalibrationRecipe()
    return CalibrationRecipe.from_yaml(recipe_file or DEFAULT_RECIPE)


def _refuse_data_flags(flags: dict[str, Any]) -> None:
    from edgetl.errors import ConfigError

    given = sorted("--" + key.split("__", 1)[1].replace("_", "-") for key, value in flags.items() if value is not None)
    if given:
        raise ConfigError(
            f"--run uses the run's own dataset; {', '.join(given)} cannot be combined with it",
            "drop those flags, or calibrate on a dataset with --data instead of --run",
        )


def _data_config(flags: dict[str, Any]) -> FinetuneConfig:
    """A finetune config whose data section holds the flags (the dataset is loaded as finetune loads it)."""
    from edgetl.errors import ConfigError

    if flags.get("data__data") is None:
        raise ConfigError("give --data NAME_OR_PATH or --run RUN_DIR", "e.g. edgetl calibrate --data fashion-mnist")
    config = FinetuneConfig()
    apply_overrides(config, flags)
    if flags.get("data__task") is None:
        config.data.task = _guess_task(config.data.data)
    config.data.validate()
    return config


def _guess_task(data: str) -> str:
    """``text`` for an embedded text dataset or a file (image datasets are folders or names), else ``image``."""
    from edgetl.data import EMBEDDED_DATASETS, EMBEDDED_TEXT_DATASETS

    if data in EMBEDDED_TEXT_DATASETS:
        return "text"
    return "text" if data not in EMBEDDED_DATASETS and Path(data).expanduser().is_file() else "image"


def _data_name(data: str) -> str:
    return Path(data).expanduser().resolve().name if Path(data).expanduser().exists() else Path(data).name


def _print_summary(calib: CalibrationSet) -> None:
    from rich.table import Table

    from edgetl.cli.render import console

    table = Table()
    table.add_column("class")
    table.add_column("samples", justify="right")
    for name, n in calib.counts_per_class().items():
        table.add_row(name, str(n))
    console.print(table)
    state = " (cached: up to date, nothing rewritten)" if calib.cached else ""
    console.print(
        f"{len(calib)} {calib.kind}s from the {calib.recipe.split} split, fingerprint {calib.fingerprint[:16]}"
    )
    console.print(f"calibration set: [bold]{calib.path}[/bold]{state}")
