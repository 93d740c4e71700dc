"""Text INT8 recipes vs FP32 ONNX on Rotten Tomatoes texts a limited run never saw (more than its test split).

A run trained with ``--limit-per-class`` has small validation and test splits (100 texts each for 500 per
class), where one text is one point. This scores the FP32 ONNX export and each dynamic-INT8 variant
(plain ``quantize_dynamic``; edgetl's default, with the int8 word table; and with attention fusion too)
on ``--n`` texts of the embedded dataset outside the run's train and validation splits, padded in batches
of 32 (the mask matters), one ONNX Runtime thread.

    python benchmarks/text_int8_heldout.py runs/rt500 --limit-per-class 500 --n 2000 \\
        --json benchmarks/results/text_int8_heldout.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgetl.data.text import load_text_data
from edgetl.export.onnx import OnnxExporter
from edgetl.fsutil import write_json
from edgetl.quantize.onnx_dynamic import quantize_onnx_dynamic
from edgetl.runfolder import load_run
from edgetl.runtime.engines import OrtEngine

VARIANTS = {
    "int8_plain": {"fuse_attention": False, "int8_embeddings": False},
    "int8_default": {},
    "int8_fused_attention": {"fuse_attention": True},
}


def heldout(limit: int, seed: int, n: int) -> tuple[list[str], np.ndarray, int]:
    """``n`` texts (shuffled with seed 1) outside the limited run's train and val splits, their labels, the pool."""
    small = load_text_data("rotten-tomatoes", limit_per_class=limit, seed=seed)
    full = load_text_data("rotten-tomatoes", seed=seed)
    if small.classes != full.classes:
        raise SystemExit("class order differs between the limited and the full dataset")
    seen = set(small.train.texts) | set(small.val.texts)
    pool = [(t, int(y)) for s in (full.test, full.val, full.train) for t, y in zip(s.texts, s.labels, strict=True)
            if t not in seen]
    picked = [pool[i] for i in np.random.default_rng(1).permutation(len(pool))[:n]]
    return [t for t, _ in picked], np.array([y for _, y in picked]), len(pool)


def logits(path: Path, texts: list[str], tokenizer_file: Path, max_length: int) -> np.ndarray:
    """Logits of the ONNX file at ``path`` for ``texts``, in padded batches of 32, one thread."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    run = OrtEngine(path, threads=1).run
    out = []
    for i in range(0, len(texts), 32):
        enc = tokenizer.encode_batch(texts[i:i + 32])
        out.append(run({"input_ids": np.array([e.ids for e in enc], np.int64),
                        "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a text run folder trained on rotten-tomatoes")
    parser.add_argument("--limit-per-class", type=int, required=True, help="the run's --limit-per-class")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    run = load_run(args.run)
    texts, labels, pool = heldout(args.limit_per_class, run.config.train.seed, args.n)
    tokenizer_file = args.run / run.spec.tokenizer / "tokenizer.json"
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        OnnxExporter().convert(run.model(), run.spec, fp32)
        paths = {"fp32": fp32}
        for name, options in VARIANTS.items():
            paths[name] = Path(tmp) / f"{name}.onnx"
            results[name] = {"settings": quantize_onnx_dynamic(fp32, paths[name], **options)}
        reference = logits(fp32, texts, tokenizer_file, run.spec.max_length)
        for name, path in paths.items():
            got = reference if name == "fp32" else logits(path, texts, tokenizer_file, run.spec.max_length)
            row = results.setdefault(name, {})
            row.update({"accuracy": float((got.argmax(1) == labels).mean()),
                        "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
                        "max_abs_diff": float(np.abs(got - reference).max()),
                        "mean_abs_diff": float(np.abs(got - reference).mean()), "mb": path.stat().st_size / 1e6})
            print(f"{name:>22}: accuracy {row['accuracy']:.2%}, agreement {row['top1_agreement']:.2%}, "
                  f"mean |diff| {row['mean_abs_diff']:.4f}, {row['mb']:.1f} MB", flush=True)
    write_json(args.json, {"benchmark": "text_int8_heldout", "run": str(args.run), "n": len(texts),
                           "pool": pool, "results": results})


if __name__ == "__main__":
    main()
