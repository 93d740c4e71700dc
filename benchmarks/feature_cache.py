"""Feature-cache epoch vs frozen-backbone epoch (goal: >= 10x), measured side by side in one run.

Both train the same head of a frozen backbone on the same images for one epoch: the frozen-backbone
epoch runs every image through the backbone; the feature-cache epoch trains on pooled features computed
once (the one-time cost is reported too).

    python benchmarks/feature_cache.py --json benchmarks/results/feature_cache.json
"""

from __future__ import annotations

import argparse
import time

import torch

from edgetl.data import load_image_data
from edgetl.data.torch_data import TorchImageDataset, eval_transform
from edgetl.fsutil import write_json
from edgetl.models import build_classifier, default_spec
from edgetl.train.feature_cache import Prefix, Tail, tensor_loader
from edgetl.train.freezing import apply_freezing, freeze_norm_stats
from edgetl.train.loop import predict_logits, train_one_epoch
from edgetl.train.optim import warmup_cosine


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
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=200, help="Fashion-MNIST train images per class")
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each kind (median reported)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_image_data("fashion-mnist", limit_per_class=args.per_class)
    model, weights = build_classifier(args.backbone, len(data.classes))
    model = model.to(memory_format=torch.channels_last)
    spec = default_spec(args.backbone, data.classes, input_size=(args.image_size, args.image_size))
    frozen = apply_freezing(model, 0)
    images = torch.utils.data.DataLoader(TorchImageDataset(data.train, eval_transform(spec)), batch_size=64,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
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
        "benchmark": "feature_cache", "backbone": args.backbone, "weights": weights.source,
        "image_size": args.image_size, "train_images": len(data.train), "threads": torch.get_num_threads(),
        "frozen_backbone_epoch_s": frozen_s, "feature_cache_epoch_s": cached_s, "cache_build_s": cache_s,
        "speedup_median": med(frozen_s) / med(cached_s),
        "break_even_epochs": cache_s / max(1e-9, med(frozen_s) - med(cached_s)),
    }
    write_json(args.json, result)
    print(f"frozen-backbone epoch {med(frozen_s):.2f} s, feature-cache epoch {med(cached_s):.3f} s: "
          f"{result['speedup_median']:.0f}x (cache built once in {cache_s:.1f} s)")


if __name__ == "__main__":
    main()
