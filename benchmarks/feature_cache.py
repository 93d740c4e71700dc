"""Feature-cache epoch vs frozen-backbone epoch (goal: >= 10x), measured side by side in one run.

Both train the same head of a frozen backbone on the same samples for one epoch: the frozen-backbone
epoch runs every sample through the backbone; the feature-cache epoch trains on pooled features computed
once (the one-time cost is reported too). Images (Fashion-MNIST) or text (Rotten Tomatoes, MiniLM),
through the same task interface the trainer uses.

    python benchmarks/feature_cache.py --json benchmarks/results/feature_cache.json
    python benchmarks/feature_cache.py --task text --json benchmarks/results/feature_cache_text.json
"""

from __future__ import annotations

import argparse
import time

import torch

from edgetl.config import DEFAULT_BACKBONE, DEFAULT_DATA, FinetuneConfig
from edgetl.fsutil import write_json
from edgetl.train.feature_cache import Prefix, Tail, tensor_loader
from edgetl.train.freezing import apply_freezing, freeze_norm_stats
from edgetl.train.loop import predict_logits, train_one_epoch
from edgetl.train.optim import warmup_cosine
from edgetl.train.tasks import TASKS


def one_epoch(module, loader, frozen) -> float:
    """Seconds for one head-training epoch of ``module`` over ``loader``."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 1, len(loader)))
    module.train()
    freeze_norm_stats(frozen)
    start = time.perf_counter()
    train_one_epoch(module, loader, opt, sched, torch.nn.CrossEntropyLoss(), total=len(loader))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("image", "text"), default="image")
    parser.add_argument("--backbone", help="default: efficientnet_lite0 (image), minilm_l6 (text)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=64, help="text: longest token sequence")
    parser.add_argument("--per-class", type=int, default=200, help="samples per class (of the embedded dataset)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each kind (median reported)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = FinetuneConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class = args.task, DEFAULT_DATA[args.task], args.per_class
    cfg.data.augment = False
    if args.task == "image":
        cfg.data.image_size = args.image_size
    else:
        cfg.data.max_length = args.max_length
    cfg.model.backbone = args.backbone or DEFAULT_BACKBONE[args.task]
    task = TASKS.get(args.task)
    data = task.load_data(cfg.validate())
    built = task.build(cfg, data.classes)
    model, weights = built.model, built.weights
    if args.task == "image":
        model = model.to(memory_format=torch.channels_last)
    frozen = apply_freezing(model, 0)
    images = task.loader(data.train, built, cfg, train=True, batch_size=64)
    prefix = Prefix(model, len(model.backbone.units))
    start = time.perf_counter()
    feats, labels = predict_logits(prefix, images, total=len(images), description="cache features")
    cache_s = time.perf_counter() - start
    cached = tensor_loader(feats, labels, 64, True, 0)
    frozen_s, cached_s = [], []
    for _ in range(args.repeats):  # interleaved, so both kinds see the same machine load
        frozen_s.append(one_epoch(model, images, frozen))
        cached_s.append(one_epoch(Tail(model, prefix.cut), cached, frozen))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    result = {
        "benchmark": "feature_cache", "task": args.task, "backbone": cfg.model.backbone, "weights": weights.source,
        **({"image_size": args.image_size} if args.task == "image" else {"max_length": args.max_length}),
        "train_samples": len(data.train), "threads": torch.get_num_threads(),
        "frozen_backbone_epoch_s": frozen_s, "feature_cache_epoch_s": cached_s, "cache_build_s": cache_s,
        "speedup_median": med(frozen_s) / med(cached_s),
        "break_even_epochs": cache_s / max(1e-9, med(frozen_s) - med(cached_s)),
    }
    write_json(args.json, result)
    print(f"frozen-backbone epoch {med(frozen_s):.2f} s, feature-cache epoch {med(cached_s):.3f} s: "
          f"{result['speedup_median']:.0f}x (cache built once in {cache_s:.1f} s)")


if __name__ == "__main__":
    main()
