"""Score text bundles of any format on Rotten Tomatoes texts a limited run never saw.

The held-out pool is :func:`text_int8_heldout.heldout`'s (texts outside the run's train and validation
splits). Each bundle runs through :class:`edgetl.runtime.Bundle` (its own engine and tokenizer, one thread,
batches of 8), so ONNX, OpenVINO and TFLite bundles are scored the same way; accuracy, top-1 agreement with
the first bundle given (the FP32 reference) and the model files' size go to the JSON.

    python benchmarks/text_bundles_heldout.py bundles/rt500-ov-fp32 bundles/rt500-ov-int8 \\
        --limit-per-class 500 --n 2000 --json benchmarks/results/text_int8_heldout_openvino.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_int8_heldout import heldout

from edgetl.fsutil import write_json
from edgetl.runtime import Bundle

MODEL_SUFFIXES = (".onnx", ".xml", ".bin", ".tflite")


def bundle_logits(folder: Path, texts: list[str], batch: int = 8) -> np.ndarray:
    """The bundle's logits for ``texts``, in batches of ``batch``, one engine thread."""
    bundle = Bundle.load(folder, threads=1)
    return np.concatenate([bundle.logits(bundle.preprocess(texts[i:i + batch])) for i in range(0, len(texts), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="the FP32 reference first, then the others")
    parser.add_argument("--limit-per-class", type=int, required=True, help="the run's --limit-per-class")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    texts, labels, pool = heldout(args.limit_per_class, args.seed, args.n)
    rows, reference = [], None
    for folder in args.bundles:
        out = bundle_logits(folder, texts)
        pred = out.argmax(1)
        reference = pred if reference is None else reference
        size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in MODEL_SUFFIXES)
        row = {"bundle": str(folder), "accuracy": float(np.mean(pred == labels)),
               "agreement_with_first": float(np.mean(pred == reference)), "model_bytes": size}
        rows.append(row)
        print(f"{folder}: accuracy {row['accuracy']:.2%}, agreement {row['agreement_with_first']:.2%}, "
              f"{size / 1e6:.1f} MB")
    write_json(args.json, {"benchmark": "text_bundles_heldout", "n": len(texts), "pool": pool,
                           "limit_per_class": args.limit_per_class, "rows": rows})


if __name__ == "__main__":
    main()
