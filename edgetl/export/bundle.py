"""Write a bundle's ``edgetl.json``: format, model file, input/output signature, spec, parity, provenance.

The reader (and the schema's constants) live in :mod:`edgetl.runtime.bundle`, which apps use without torch.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetl import __version__
from edgetl.fsutil import sha256_file, write_json
from edgetl.runtime.bundle import MANIFEST_NAME, SCHEMA_VERSION
from edgetl.runtime.text import TEXT_INPUTS, load_tokenizer
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from edgetl.runfolder import Run

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def bundle_tokenizer(bundle: Path, spec: ModelSpec) -> Tokenizer | None:
    """The tokenizer copy inside a (staged) bundle for a text ``spec``, so checks use the files an app receives;
    None for an image spec."""
    return load_tokenizer(Path(bundle) / spec.tokenizer) if spec.is_text else None


def input_names(spec: ModelSpec) -> list[str]:
    """The exported model's input names: ``input`` for images, ``input_ids`` and ``attention_mask`` for text."""
    return list(TEXT_INPUTS) if spec.is_text else [INPUT_NAME]


def describe_io(spec: ModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's input and output tensors as the manifest lists them (dynamic axes named by a string).

    Images: one float32 ``input`` in the spec's layout, batch axis ``batch``. Text: int64 ``input_ids`` and
    ``attention_mask`` of shape ``(batch, sequence)``, ``sequence`` from 1 to ``spec.max_length``.
    """
    outputs = [{"name": OUTPUT_NAME, "shape": ["batch", spec.num_classes], "dtype": "float32"}]
    if spec.is_text:
        inputs = [{"name": name, "shape": ["batch", "sequence"], "dtype": "int64", "max_sequence": spec.max_length}
                  for name in TEXT_INPUTS]
        return inputs, outputs
    height, width = spec.input_size
    shape = ["batch", 3, height, width] if spec.layout == "NCHW" else ["batch", height, width, 3]
    inputs = [{"name": INPUT_NAME, "shape": shape, "dtype": "float32", "layout": spec.layout}]
    return inputs, outputs


def text_contract(spec: ModelSpec) -> dict[str, Any]:
    """How an app turns a string into a text model's inputs, for the manifest's ``tokenizer`` entry."""
    return {
        "file": f"{spec.tokenizer}/tokenizer.json",
        "library": "Hugging Face tokenizers (tokenizer.json); any port that reads it gives the same ids",
        "max_length": spec.max_length,
        "truncation": f"the end of a longer text is dropped: at most {spec.max_length} tokens, special tokens included",
        "padding": "right, to the longest text of the batch, with the tokenizer's pad id; attention_mask 0 there",
        "token_type_ids": "not an input: single texts use type 0",
    }


def provenance(run: Run, folder: Path, model_path: Path) -> dict[str, Any]:
    """Where the bundle came from: run folder and fingerprint, the hash of every file, version, time."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {
        "run_dir": str(Path(run.path).resolve()),
        "run_fingerprint": run.fingerprint(),
        "model_sha256": sha256_file(model_path),
        "files_sha256": {p.relative_to(folder).as_posix(): sha256_file(p) for p in files},
        "edgetl_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_manifest(
    folder: Path,
    *,
    fmt: str,
    precision: str,
    model_file: str,
    spec: ModelSpec,
    verification: dict[str, Any] | None,
    provenance: dict[str, Any],
    artifact: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/edgetl.json`` and return its path.

    Args:
        folder: The bundle folder (usually still the staging folder).
        fmt: Artifact format, e.g. ``onnx``.
        precision: ``fp32`` (``fp16``/``int8`` come with quantization).
        model_file: The model file's name, relative to ``folder``.
        spec: The model's input contract and labels.
        verification: Parity figures and the limits they passed, or ``None`` when not verified.
        provenance: See :func:`provenance`.
        artifact: Format-specific facts from the exporter (route, fixed sequence lengths...), or None.
        quantization: What INT8 export did (ladder rungs, the one kept or why none, speed against FP32), or None.
    """
    inputs, outputs = describe_io(spec)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "precision": precision,
        "model_file": model_file,
        "inputs": inputs,
        "outputs": outputs,
        "spec": spec.to_dict(),
        **({"tokenizer": text_contract(spec)} if spec.is_text else {}),
        **({"artifact": artifact} if artifact else {}),
        **({"quantization": quantization} if quantization else {}),
        "verification": verification,
        "provenance": provenance,
    }
    path = Path(folder) / MANIFEST_NAME
    write_json(path, manifest)
    return path
