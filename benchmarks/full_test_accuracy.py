"""Accuracy of run folders on the full Fashion-MNIST test split (10,000 images), however they were trained.

A run trained with ``--limit-per-class N`` is tested on only ``ceil(N / 4)`` images per class; this scores
its saved model on all 10,000 official test images (never part of any run's train or val split), and for
each pair of runs the images where exactly one of them is right (a paired comparison).

    python benchmarks/full_test_accuracy.py RUN [RUN ...] --json benchmarks/results/NAME.json
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from edgetl.data import load_image_data
from edgetl.fsutil import write_json
from edgetl.runfolder import load_run
from edgetl.train.loop import predict_logits
from edgetl.train.tasks import TASKS, Built


def predictions(run_dir: Path, test) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels of a run's model on ``test``."""
    run = load_run(run_dir)
    built = Built(run.model().eval().to(memory_format=torch.channels_last), run.spec, None, {})
    loader = TASKS.get("image").loader(test, built, run.config, train=False, batch_size=256)
    logits, labels = predict_logits(built.model, loader, total=len(loader))
    return logits.argmax(1), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test = load_image_data("fashion-mnist").test
    preds, rows = {}, {}
    for run in args.runs:
        pred, labels = predictions(run, test)
        preds[str(run)] = pred == labels
        rows[str(run)] = {"accuracy": round(float(preds[str(run)].mean()), 4), "n": len(labels)}
        print(run, rows[str(run)], flush=True)
    pairs = {f"{a} vs {b}": {"only_first_right": int((preds[a] & ~preds[b]).sum()),
                             "only_second_right": int((preds[b] & ~preds[a]).sum())}
             for a, b in itertools.combinations(preds, 2)}
    if args.json:
        write_json(args.json, {"test": "fashion-mnist official test split", "runs": rows, "pairs": pairs})


if __name__ == "__main__":
    main()
