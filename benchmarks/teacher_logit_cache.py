"""Distillation epoch with cached teacher logits vs the teacher run online (goal: >= 1.8x), side by side.

Both distil the same teacher run folder into the same student on the same samples without augmentation, through
``edgetl.train.distill`` itself: one with ``cache_teacher`` (teacher logits computed once over the training split,
that one-time cost reported too), one with the teacher forward in every batch. The runs alternate, ``--repeats``
times each; the median epoch time of each kind is reported. The teacher is EfficientNet-Lite2 with the packaged
ImageNet backbone and an untrained head (its accuracy does not change its speed); the student MobileNetV3-Small.

    python benchmarks/teacher_logit_cache.py --json benchmarks/results/teacher_logit_cache.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from edgetl.config import DistillConfig, FinetuneConfig
from edgetl.data import load_image_data
from edgetl.fsutil import write_json
from edgetl.models import build_classifier, default_spec
from edgetl.runfolder import save_run_files
from edgetl.train.distill import distill


def teacher_run(root: Path, backbone: str, classes: list[str], size: int) -> Path:
    """A run folder holding ``backbone`` with its packaged weights and a new head for ``classes``."""
    model, weights = build_classifier(backbone, len(classes))
    cfg = FinetuneConfig()
    cfg.data.data, cfg.data.image_size, cfg.model.backbone = "fashion-mnist", size, backbone
    arch = {"backbone": backbone, "num_classes": len(classes), "dropout": 0.2, "hidden": None}
    save_run_files(root / "teacher", model.state_dict(), default_spec(backbone, classes, (size, size)), arch, cfg)
    print(f"teacher {backbone}: {weights.detail}")
    return root / "teacher"


def kd_config(teacher: Path, args: argparse.Namespace, cache: bool) -> DistillConfig:
    cfg = DistillConfig()
    cfg.data.data, cfg.data.limit_per_class, cfg.data.image_size = "fashion-mnist", args.per_class, args.image_size
    cfg.data.augment = False
    cfg.model.backbone, cfg.model.pretrained = args.student, False
    cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = args.epochs, args.batch_size, args.epochs + 1
    cfg.distill.teacher, cfg.distill.cache_teacher, cfg.distill.latency = str(teacher), cache, False
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="efficientnet_lite2")
    parser.add_argument("--student", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (Fashion-MNIST)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per distillation run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternating")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    classes = load_image_data("fashion-mnist", limit_per_class=3).classes
    root = Path(tempfile.mkdtemp(prefix="edgetl-kd-bench-"))
    teacher = teacher_run(root, args.teacher, classes, args.image_size)
    epochs: dict[str, list[float]] = {"cached": [], "online": []}
    cache_s, n_train = [], 0
    for r in range(args.repeats):
        for kind in ("cached", "online"):
            m = distill(kd_config(teacher, args, kind == "cached"), root / f"{kind}-{r}")
            assert m["distill"]["teacher_outputs"] == kind, m["distill"]
            epochs[kind] += m["distill"]["epoch_seconds"]
            n_train = m["data"]["train"]
            if kind == "cached":
                cache_s.append(m["distill"]["cache_seconds"])
    cached, online = statistics.median(epochs["cached"]), statistics.median(epochs["online"])
    result = {
        "teacher": args.teacher, "student": args.student, "image_size": args.image_size, "train_samples": n_train,
        "batch_size": args.batch_size, "epochs_each": len(epochs["cached"]), "threads": torch.get_num_threads(),
        "epoch_seconds": epochs, "median_epoch_s": {"cached": round(cached, 3), "online": round(online, 3)},
        "speedup": round(online / cached, 2), "cache_build_s": statistics.median(cache_s),
        "break_even_epochs": round(statistics.median(cache_s) / max(1e-9, online - cached), 2),
    }
    write_json(args.json, result)
    print(f"epoch: online teacher {online:.2f} s, cached logits {cached:.2f} s -> {result['speedup']}x "
          f"(cache built once in {result['cache_build_s']:.2f} s) -> {args.json}")


if __name__ == "__main__":
    main()
