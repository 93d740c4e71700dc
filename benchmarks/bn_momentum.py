"""Why a short random-init MobileNetV3-Small run evaluated at chance: batch-norm momentum 0.01 vs 0.1.

One random-init MobileNetV3-Small per momentum trains the same steps on the same Fashion-MNIST subset (the
momentum changes only the running statistics, so both train identically). Validation accuracy is measured
in eval mode twice: with the running statistics as trained, and after re-estimating them for the final
weights on 2,048 training images ("precise BN"). With torchvision's 0.01 the first reads chance and the
second what the weights learned; with 0.1 (edgetl's, ``edgetl.models.backbones.TRAIN_BN_MOMENTUM``) both agree.

    python benchmarks/bn_momentum.py --limit-per-class 1150 --epochs 1 --json benchmarks/results/bn_momentum.json
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from edgetl.config import FinetuneConfig
from edgetl.fsutil import write_json
from edgetl.models.backbones import set_bn_momentum
from edgetl.train import finetune as ft
from edgetl.train.loop import predict_logits, to_channels_last, train_one_epoch
from edgetl.train.optim import build_optimizer, layerwise_param_groups
from edgetl.train.tasks import TASKS


@torch.no_grad()
def precise_bn(model: nn.Module, loader, samples: int = 2048) -> int:
    """Re-estimate every batch norm's running statistics for the current weights (plain average over batches)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    for inputs, labels in loader:
        model(to_channels_last(inputs))
        seen += len(labels)
        if seen >= samples:
            break
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return seen


def accuracy(model: nn.Module, loader) -> float:
    logits, labels = predict_logits(model, loader, total=len(loader))
    return round(float((logits.argmax(1) == labels).mean()), 4)


def run(task, cfg: FinetuneConfig, data, momentum: float) -> dict:
    ft._seed_everything(cfg.train.seed, cfg.train.threads)
    built = task.build(cfg, data.classes)
    model = set_bn_momentum(built.model, momentum)
    train = task.loader(data.train, built, cfg, train=True, batch_size=cfg.train.batch_size)
    val = task.loader(data.val, built, cfg, train=False, batch_size=256)
    t = cfg.train
    optimizer, scheduler = build_optimizer(layerwise_param_groups(model, t.lr, t.layer_decay, t.weight_decay), t,
                                           len(train))
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    for _ in range(t.epochs):
        model.train()
        stats = train_one_epoch(model, train, optimizer, scheduler, criterion, total=len(train))
    row = {"bn_momentum": momentum, "steps": t.epochs * len(train), "train_accuracy_last_epoch":
           round(stats.accuracy, 4), "val_accuracy_running_stats": accuracy(model, val)}
    t0 = time.perf_counter()
    row["precise_bn_samples"] = precise_bn(model, train)
    row["precise_bn_seconds"] = round(time.perf_counter() - t0, 2)
    row["val_accuracy_precise_bn"] = accuracy(model, val)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-per-class", type=int, default=1150)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    cfg = FinetuneConfig()
    d, t = cfg.data, cfg.train
    d.data, d.image_size, d.augment, d.limit_per_class = "fashion-mnist", args.image_size, False, args.limit_per_class
    cfg.model.backbone, cfg.model.pretrained = "mobilenet_v3_small", False
    t.epochs, t.batch_size, t.lr, t.threads = args.epochs, args.batch_size, 0.002, args.threads
    task = TASKS.get("image")
    data = task.load_data(cfg.validate())
    rows = [run(task, cfg, data, m) for m in (0.01, 0.1)]
    result = {"backbone": "mobilenet_v3_small", "weights": "random init", "data": data.summary(),
              "config": cfg.to_dict(), "rows": rows}
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
