"""A smaller INT8 TFLite file, the same model: short tensor names and shared quantization vectors.

A full-INT8 TFLite flatbuffer spends bytes beyond its int8 weights on three things this module can cut
without changing what the interpreter computes:

- tensor names: litert-torch names each tensor after the torch module path and ai-edge-quantizer adds
  suffixes (``..._quantized``); internal tensors are renamed ``t0``, ``t1``... The tensors a signature or
  the subgraph's inputs and outputs refer to keep their names (the interface);
- zero points: TFLite stores one int64 zero point per channel of every per-channel tensor (12 bytes per
  channel with its float32 scale, for weights and for int32 biases), nearly all of them vectors of zeros;
- repeats: identical quantization vectors (scales, zero points, min/max) are written once and every tensor
  that has them points at that one copy, as flatbuffers allow (the verifier checks offsets, not sharing).

Weights and biases (the ``buffers``) are kept byte for byte; the outputs are bit-identical
(``tests/test_tflite_compact.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_QUANT_FIELDS = {"scale": np.float32, "zeroPoint": np.int64, "min": np.float32, "max": np.float32}


def compact_tflite(path: str | Path) -> dict[str, int]:
    """Rewrite the TFLite file at ``path`` in place with short internal names and shared quantization vectors.

    Buffers stored after the flatbuffer (as ai-edge-quantizer writes them) stay there, 16-byte aligned.

    Returns:
        ``{"bytes_before": ..., "bytes_after": ...}``.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    content = path.read_bytes()
    before = len(content)
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    outside: dict[int, bytes] = {}  # buffers stored after the flatbuffer (ai-edge-quantizer's layout)
    for index, buffer in enumerate(model.buffers or []):
        if buffer.offset > 1:
            outside[index] = content[buffer.offset:buffer.offset + buffer.size]
            buffer.offset, buffer.size = 1, 1  # placeholders that reserve the fields, patched below
    _rename(model)
    _quantization_as_arrays(model)
    builder = _sharing_builder(max(1024, before // 4))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = _append_buffers(bytes(builder.Output()), outside)
    if len(out) >= before:
        return {"bytes_before": before, "bytes_after": before}
    tmp = path.with_name(f".{path.name}.compact")
    tmp.write_bytes(out)
    tmp.replace(path)
    return {"bytes_before": before, "bytes_after": len(out)}


def _append_buffers(flatbuffer: bytes, outside: dict[int, bytes]) -> bytes:
    """The flatbuffer followed by the outside buffers, each 16-byte aligned, their offsets and sizes set."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if not outside:
        return flatbuffer
    out = bytearray(flatbuffer)
    places = {}
    for index, data in outside.items():
        out.extend(b"\0" * (-len(out) % 16))
        places[index] = (len(out), len(data))
        out.extend(data)
    packed = schema.Model.GetRootAs(out, 0)
    for index, (offset, size) in places.items():
        flatbuffer_utils.update_packed_buffer(packed.Buffers(index), offset=offset, size=size)
    return bytes(out)


def _rename(model: Any) -> None:
    for index, subgraph in enumerate(model.subgraphs or []):
        keep = {int(i) for i in list(subgraph.inputs) + list(subgraph.outputs)}
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == index:
                keep.update(int(t.tensorIndex) for t in list(signature.inputs or []) + list(signature.outputs or []))
        for number, tensor in enumerate(subgraph.tensors or []):
            if number not in keep:
                tensor.name = f"t{number}".encode()


def _quantization_as_arrays(model: Any) -> None:
    """Quantization vectors as numpy arrays, so :func:`_sharing_builder` sees (and shares) them."""
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            q = tensor.quantization
            if q is None:
                continue
            for field, dtype in _QUANT_FIELDS.items():
                value = getattr(q, field)
                if value is not None and not isinstance(value, np.ndarray):
                    setattr(q, field, np.asarray(value, dtype))
                elif isinstance(value, np.ndarray):
                    setattr(q, field, np.ascontiguousarray(value.astype(dtype, copy=False).reshape(-1)))


def _sharing_builder(size: int) -> Any:
    """A flatbuffers builder that writes each distinct numpy vector once (later ones point at the first)."""
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, initial: int) -> None:
            super().__init__(initial)
            self.vectors: dict[tuple[str, int, bytes], int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # flatbuffers' method name
            key = (x.dtype.str, x.size, x.tobytes())
            if key not in self.vectors:
                self.vectors[key] = super().CreateNumpyVector(x)
            return self.vectors[key]

    return SharingBuilder(size)
