"""`edgetl finetune`: train a backbone + new head on an image or text dataset and write a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from edgetl.cli.options import apply_overrides, config_options
from edgetl.config import FINETUNE_MODES, TASKS, DataConfig, FinetuneConfig, ModelConfig, TrainConfig, load_yaml


@click.command("finetune")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML with data/model/train sections; flags override it.")
@config_options({"data": DataConfig, "model": ModelConfig, "train": TrainConfig},
                choices={"mode": FINETUNE_MODES, "task": TASKS})
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into the same --out.")
def command(config_file: Path | None, out: Path, overwrite: bool, resume: bool, **flags) -> None:
    """Fine-tune a backbone and save a run folder.

    Images: --data is an image folder or `fashion-mnist`. Text (--task text): --data is a CSV/TSV/JSONL file,
    a folder of split files or class folders of .txt, or `rotten-tomatoes`.
    """
    from edgetl.cli.render import print_finetune_summary
    from edgetl.train.distributed import is_main_process
    from edgetl.train.finetune import finetune

    cfg = FinetuneConfig.from_dict(load_yaml(config_file)) if config_file else FinetuneConfig()
    apply_overrides(cfg, flags)
    metrics = finetune(cfg.validate(), out, overwrite=overwrite, resume=resume)
    if is_main_process():  # under torchrun every rank returns the metrics; rank 0 prints them
        print_finetune_summary(metrics, out)
