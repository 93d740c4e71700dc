"""Distillation epoch with cached teacher logits vs the teacher run online (goal: >= 1.8x), side by side.

Two students (same init) distil the same teacher on the same samples without augmentation, through the
trainer's own :class:`edgetl.train.distill.KDRun` and epoch loop: one on teacher logits computed once over
the training split (that one-time cost is reported too), one with the teacher forward in every batch.
Their epochs alternate in one process (the order flips each round, so drift on a shared machine hits both
alike); the median epoch time of each kind and the median of the per-round ratios are reported. The teacher is
EfficientNet-Lite2 with the packaged ImageNet backbone and an untrained head (its accuracy does not change its
speed); the student MobileNetV3-Small from random init.

    python benchmarks/teacher_logit_cache.py --json benchmarks/results/teacher_logit_cache.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgetl.config import DistillConfig, FinetuneConfig
from edgetl.fsutil import write_json
from edgetl.models import build_classifier, default_spec
from edgetl.runfolder import save_run_files
from edgetl.train.distill import KDRun
from edgetl.train.loop import train_one_epoch
from edgetl.train.optim import build_optimizer, layerwise_param_groups
from edgetl.train.tasks import TASKS
from edgetl.train.teachers import load_teacher


def teacher_run(root: Path, backbone: str, classes: list[str], size: int) -> Path:
    """A run folder holding ``backbone`` with its packaged weights and a new head for ``classes``."""
    model, weights = build_classifier(backbone, len(classes))
    cfg = FinetuneConfig()
    cfg.data.data, cfg.data.image_size, cfg.model.backbone = "fashion-mnist", size, backbone
    arch = {"backbone": backbone, "num_classes": len(classes), "dropout": 0.2, "hidden": None}
    save_run_files(root / "teacher", model.state_dict(), default_spec(backbone, classes, (size, size)), arch, cfg)
    print(f"teacher {backbone}: {weights.detail}")
    return root / "teacher"


def kd_config(args: argparse.Namespace, cache: bool) -> DistillConfig:
    cfg = DistillConfig()
    cfg.data.data, cfg.data.limit_per_class, cfg.data.image_size = "fashion-mnist", args.per_class, args.image_size
    cfg.data.augment = False
    cfg.model.backbone, cfg.model.pretrained = args.student, False
    cfg.train.epochs, cfg.train.batch_size = args.repeats, args.batch_size
    cfg.distill.teacher, cfg.distill.cache_teacher = "teacher", cache
    return cfg.validate()


class Side:
    """One student with its optimiser and its kind of teacher targets (cached or online)."""

    def __init__(self, kind: str, args: argparse.Namespace, data, teacher) -> None:
        cfg = kd_config(args, kind == "cached")
        task = TASKS.get("image")
        torch.manual_seed(0)
        self.built = task.build(cfg.student(), data.classes)
        self.kd = KDRun(task, cfg, cfg.student(), self.built, teacher, data)
        t0 = time.perf_counter()
        self.loader = self.kd.train_loader(self.kd.build_cache())
        self.setup_s = time.perf_counter() - t0
        groups = layerwise_param_groups(self.built.model, cfg.train.lr, cfg.train.layer_decay, cfg.train.weight_decay)
        self.optimizer, self.scheduler = build_optimizer(groups, cfg.train, len(self.loader))

    def epoch(self) -> float:
        self.built.model.train()
        t0 = time.perf_counter()
        train_one_epoch(self.built.model, self.loader, self.optimizer, self.scheduler, None, total=len(self.loader),
                        loss_fn=self.kd.step)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="efficientnet_lite2")
    parser.add_argument("--student", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=64, help="the student's input size")
    parser.add_argument("--teacher-size", type=int, help="the teacher's input size (default: the student's); "
                                                           "each model keeps its own preprocessing")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (Fashion-MNIST)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each kind, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: steady on a shared machine)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = TASKS.get("image")
    data = task.load_data(kd_config(args, True).student())
    teacher_dir = teacher_run(Path(tempfile.mkdtemp(prefix="edgetl-kd-bench-")), args.teacher, data.classes,
                              args.teacher_size or args.image_size)
    teacher = load_teacher("run", teacher_dir, data.classes, "image")
    sides = {"cached": Side("cached", args, data, teacher), "online": Side("online", args, data, teacher)}
    seconds: dict[str, list[float]] = {"cached": [], "online": []}
    for r in range(args.repeats):
        for kind in (("cached", "online") if r % 2 == 0 else ("online", "cached")):
            seconds[kind].append(round(sides[kind].epoch(), 3))
            print(f"round {r + 1}: {kind} epoch {seconds[kind][-1]:.2f} s")
    cached, online = statistics.median(seconds["cached"]), statistics.median(seconds["online"])
    ratios = [o / c for o, c in zip(seconds["online"], seconds["cached"], strict=True)]
    result = {
        "teacher": args.teacher, "student": args.student, "image_size": args.image_size,
        "teacher_size": args.teacher_size or args.image_size,
        "train_samples": len(data.train), "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "epoch_seconds": seconds, "median_epoch_s": {"cached": cached, "online": online},
        "speedup_of_medians": round(online / cached, 2), "median_round_speedup": round(statistics.median(ratios), 2),
        "cache_build_s": sides["cached"].kd.cache_seconds,
        "break_even_epochs": round(sides["cached"].kd.cache_seconds / max(1e-9, online - cached), 2),
    }
    write_json(args.json, result)
    print(f"epoch: online teacher {online:.2f} s, cached logits {cached:.2f} s -> {result['speedup_of_medians']}x "
          f"(per-round median {result['median_round_speedup']}x; cache built once in {result['cache_build_s']:.2f} s)"
          f" -> {args.json}")


if __name__ == "__main__":
    main()
