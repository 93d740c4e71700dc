"""`edgetl distill`: train a student on a teacher's soft targets and write a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from edgetl.cli.options import apply_overrides, config_options
from edgetl.config import (
    FINETUNE_MODES,
    STUDENT_INITS,
    TASKS,
    DataConfig,
    DistillConfig,
    KDConfig,
    ModelConfig,
    TrainConfig,
    load_yaml,
)


@click.command("distill")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML with data/model/train/distill sections; flags override it.")
@click.option("--student", help="Student: a registered backbone, or (text) distilbert_from_teacher "
                                "[default: mobilenet_v3_small / distilbert_from_teacher]")
@config_options({"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "distill": KDConfig},
                choices={"mode": FINETUNE_MODES, "task": TASKS, "student_init": STUDENT_INITS}, skip=("backbone",))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def command(config_file: Path | None, student: str | None, out: Path, overwrite: bool, **flags) -> None:
    """Distil a teacher into a small student and save the student's run folder.

    --teacher is a run folder (`edgetl finetune`), an exported bundle (ONNX/OpenVINO/TFLite) or a registered
    backbone (fine-tuned on --data first). --compare also trains the student without the teacher, same budget.
    """
    from edgetl.cli.render import print_finetune_summary
    from edgetl.train.distill import distill
    from edgetl.train.distributed import is_main_process

    cfg = DistillConfig.from_dict(load_yaml(config_file)) if config_file else DistillConfig()
    apply_overrides(cfg, flags)
    if student:
        cfg.model.backbone = student
    metrics = distill(cfg.validate(), out, overwrite=overwrite)
    if is_main_process():  # under torchrun every rank returns the metrics; rank 0 prints them
        print_finetune_summary(metrics, out)
        print_distill_summary(metrics)


def print_distill_summary(metrics: dict) -> None:
    """The teacher / student without KD / student with KD table."""
    from rich.table import Table

    from edgetl.cli.render import make_console
    from edgetl.train.distill_report import ROWS

    d = metrics["distill"]
    rows = d["comparison"]
    table = Table(title=f"distillation (test split, n={metrics['test']['n']}; teacher outputs {d['teacher_outputs']})")
    for col in ("model", "accuracy", "macro-F1", "params", "file", "CPU latency b1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for key, r in rows.items():
        name = ROWS[key] + (f" ({d['teacher']['backbone']})" if key == "teacher" else "")
        table.add_row(name, f"{r['accuracy']:.2%}", f"{r['macro_f1']:.4f}",
                      "-" if r["params"] is None else f"{r['params'] / 1e6:.2f} M",
                      f"{r['file_bytes'] / 1e6:.1f} MB" if "file_bytes" in r else "-",
                      f"{r['latency_ms']:.2f} ms ({r['format']})" if "latency_ms" in r else "-")
    console = make_console()
    console.print(table)
    console.print(f"epoch seconds: {', '.join(str(s) for s in d['epoch_seconds'])}")
