"""The text INT8 ONNX graph: fused attention (Attention -> QAttention) and int8 embedding tables.

On a 2-layer BERT (width 64, 4 heads, random init) exported by edgetl's ONNX exporter: the graph rewrites
must match every layer, keep the logits, and leave what they cannot match alone.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from builders import make_text_standin

from edgetl.quantize.base import symmetric_int8
from edgetl.quantize.onnx_attention import fuse_attention
from edgetl.quantize.onnx_dynamic import quantize_onnx_dynamic
from edgetl.quantize.onnx_embeddings import quantize_gather_tables

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FP32 ONNX export of a 2-layer, 64-wide, 4-head BERT classifier (30,522-token vocabulary)."""
    from edgetl.export.onnx import OnnxExporter
    from edgetl.models.text import build_text_classifier
    from edgetl.spec import ModelSpec

    root = tmp_path_factory.mktemp("tiny-bert")
    folder = make_text_standin(root / "model", "bert", layers=2, hidden_size=64, num_attention_heads=4,
                               intermediate_size=128)
    model, _, _ = build_text_classifier(str(folder), 2)
    spec = ModelSpec(labels=["a", "b"], task="text-classification", backbone=str(folder), max_length=32,
                     tokenizer="tokenizer")
    OnnxExporter().convert(model.eval(), spec, root / "fp32.onnx")
    return root / "fp32.onnx"


def _feed() -> dict[str, np.ndarray]:
    """Three padded sequences of 20 tokens: full, 13 real tokens, 5 real tokens."""
    ids = np.random.default_rng(0).integers(1000, 30000, (3, 20)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 13:] = mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _run(model_or_path, feed: dict[str, np.ndarray]) -> np.ndarray:
    source = model_or_path if isinstance(model_or_path, str | Path) else model_or_path.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _ops(model_or_path) -> collections.Counter:
    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, str | Path) else model_or_path
    return collections.Counter(node.op_type for node in model.graph.node)


@pytest.mark.slow
def test_every_layer_fuses_into_attention_with_the_same_logits(tiny_bert_onnx: Path) -> None:
    model = onnx.load(str(tiny_bert_onnx))
    fused = fuse_attention(model)
    assert [f["attention"].split("/")[-4] for f in fused] == ["layer.0", "layer.1"]
    ops = _ops(model)
    assert ops["Attention"] == 2 and not ops["Softmax"] and not ops["Transpose"]
    onnx.checker.check_model(model)
    feed = _feed()
    np.testing.assert_allclose(_run(model, feed), _run(tiny_bert_onnx, feed), atol=1e-4)


@pytest.mark.slow
def test_by_default_int8_keeps_standard_onnx_ops_and_int8_word_table(tiny_bert_onnx: Path, tmp_path: Path) -> None:
    facts = quantize_onnx_dynamic(tiny_bert_onnx, tmp_path / "q.onnx")
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert facts["fused_attention"] == 0 and facts["int8_embedding_tables"] == 1
    assert {node.domain for node in model.graph.node} <= {""} and _ops(model)["MatMulInteger"]


@pytest.mark.slow
def test_a_graph_without_the_mask_input_is_left_unchanged(tiny_bert_onnx: Path) -> None:
    model = onnx.load(str(tiny_bert_onnx))
    before = model.SerializeToString()
    assert fuse_attention(model, mask_input="token_type_ids") == []
    assert model.SerializeToString() == before


@pytest.mark.slow
def test_dynamic_int8_uses_qattention_and_int8_tables_and_agrees(tiny_bert_onnx: Path, tmp_path: Path) -> None:
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    quantize_onnx_dynamic(tiny_bert_onnx, plain, fuse_attention=False, int8_embeddings=False)
    facts = quantize_onnx_dynamic(tiny_bert_onnx, fused, fuse_attention=True)
    assert facts["fused_attention"] == 2 and facts["int8_embedding_tables"] == 1  # the word table
    assert _ops(fused)["QAttention"] == 2 and not _ops(fused)["Softmax"]
    int8_tables = [t for t in onnx.load(str(fused)).graph.initializer if t.data_type == onnx.TensorProto.INT8
                   and len(t.dims) == 2 and t.dims[0] == 30522]
    assert len(int8_tables) == 1
    # the word table dominates this model: int8 storage takes the file well under a third of FP32
    assert fused.stat().st_size < 0.3 * tiny_bert_onnx.stat().st_size < plain.stat().st_size
    feed = _feed()
    reference, quantized, unfused = _run(tiny_bert_onnx, feed), _run(fused, feed), _run(plain, feed)
    scale = np.abs(reference).max()
    assert np.abs(quantized - reference).max() < 0.05 * scale
    assert np.abs(quantized - unfused).max() < 0.02 * scale


@pytest.mark.slow
def test_a_layer_kept_float_keeps_its_whole_attention_float(tiny_bert_onnx: Path, tmp_path: Path) -> None:
    names = {n.name for n in onnx.load(str(tiny_bert_onnx)).graph.node}
    query = next(n for n in names if "layer.1/attention/self/query" in n and n.endswith("MatMul"))
    facts = quantize_onnx_dynamic(tiny_bert_onnx, tmp_path / "q.onnx", exclude=[query], fuse_attention=True)
    ops = _ops(tmp_path / "q.onnx")
    assert facts["excluded"] == [query] and ops["QAttention"] == 1 and ops["Attention"] == 1


def _gather_model(tables: dict[str, np.ndarray], matmul_reads: str):
    """A graph gathering ``ids_<name>`` from each table (``out_<name>``), and a MatMul also reading one table."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Gather", [name, f"ids_{name}"], [f"out_{name}"]) for name in tables]
    nodes.append(helper.make_node("MatMul", ["x", matmul_reads], ["mm"]))
    names = [*(f"out_{name}" for name in tables), "mm"]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names]
    inputs = [helper.make_tensor_value_info(f"ids_{name}", TensorProto.INT64, [None]) for name in tables]
    inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(t, n) for n, t in tables.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_int8_rows_are_within_half_a_step_of_their_row_and_short_or_shared_tables_stay_float() -> None:
    rng = np.random.default_rng(0)
    # rows of very different scales: one scale per row keeps the small rows precise
    vocab = (rng.normal(size=(5000, 16)) * rng.uniform(0.001, 3.0, (5000, 1))).astype(np.float32)
    vocab[7] = 0.0
    positions = rng.normal(size=(512, 16)).astype(np.float32)  # fewer than MIN_ROWS rows
    shared = rng.normal(size=(5000, 4)).astype(np.float32)
    model = _gather_model({"vocab": vocab, "positions": positions, "shared": shared}, matmul_reads="shared")
    assert quantize_gather_tables(model) == {"tables": 1, "bytes_saved": vocab.nbytes - vocab.size - 4 * len(vocab)}
    ids = np.array([0, 7, 4999, 1, 1], np.int64)
    feed = {"ids_vocab": ids, "ids_positions": ids % 512, "ids_shared": ids, "x": np.ones((1, 5000), np.float32)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    np.testing.assert_array_equal(got["out_positions"], positions[ids % 512])
    np.testing.assert_array_equal(got["out_shared"], shared[ids])  # a MatMul reads it too: still float
    step = np.abs(vocab[ids]).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got["out_vocab"] - vocab[ids]) <= step / 2 + 1e-7) and np.all(got["out_vocab"][1] == 0)
    q, scale = symmetric_int8(vocab, (1,))
    assert q.dtype == np.int8 and scale.shape == (5000, 1) and np.abs(q).max() == 127
