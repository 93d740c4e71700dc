"""Quantization-aware training: the last rung of the ONNX INT8 ladder, for image models (and, through
:mod:`edgetl.quantize.qat_openvino`, of the OpenVINO ladder).

When post-training quantization loses too much, a short fine-tune with the quantization simulated lets the
weights adapt to it. PyTorch's FX graph mode does the work (``prepare_qat_fx`` with the x86 qconfig:
per-channel int8 weights, full-range uint8 activations, 7-bit symmetric weights, as ONNX Runtime's x86 kernels expect):

1. TF-style "same" padding (timm's ``Conv2dSame``, which computes its pads from the input at run time and
   so cannot be traced) becomes a fixed ``ZeroPad2d`` + ``Conv2d`` for the bundle's input size: the same
   function at that size. timm's ``BatchNormAct2d`` (batch norm with its activation inside) becomes
   ``BatchNorm2d`` + activation, so FX folds the norm into the convolution before it: left whole, it is
   traced as a functional batch norm after a quantized convolution, whose un-normalised output is what gets
   quantized (EfficientNet-Lite0's fake-quant accuracy fell from 87% to 47% that way; 75% once split).
2. Every fake quantizer's range starts where the PTQ MinMax rung's would: the min and max over the first
   ``calibration_batches`` training batches, observed with fake quantization off (the float model's
   ranges). Left to PyTorch's moving averages, the ranges would start from the first batch alone and move
   1% a step, so a short QAT run trained against a narrow, clipping first guess.
3. The loss is the KL divergence from the FP32 model's softmax to the fake-quantized one's: the INT8 model
   is taught to give the FP32 model's answers (what the ladder measures it on), not to fit the labels again.
4. Batch-norm statistics are frozen (the FP32 run estimated them on far more data than a short fine-tune
   sees); observers update ranges for the first part of the steps, then stop, so the last steps train
   against fixed ranges.
5. ``convert_fx`` and the TorchScript ONNX exporter write a QDQ graph that ONNX Runtime runs.

TFLite has no QAT rung: litert-torch's PT2E QAT path is broken in this toolchain (see TOOLCHAIN.md).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetl.errors import ExportError
from edgetl.quantize.onnx_compact import compact_names
from edgetl.quantize.onnx_static import _first_line

log = logging.getLogger("edgetl")


@dataclass(frozen=True)
class QatSettings:
    """How long and how hard QAT fine-tunes.

    Attributes:
        steps: Optimiser steps (batches). Each costs several times a plain training step on a CPU (about 10 s
            of CPU time for EfficientNet-Lite0 at 64 px, batch 32), so the default is a short fine-tune.
        lr: AdamW learning rate; small, since the FP32 weights are already good.
        batch_size: Training batch size.
        observe_fraction: Share of the steps during which activation ranges still move.
        calibration_batches: Training batches the starting ranges are taken over (before any step).
    """

    steps: int = 200
    lr: float = 2e-5
    batch_size: int = 32
    observe_fraction: float = 0.6
    calibration_batches: int = 10


def qat_onnx(
    model: Any,
    input_shape: tuple[int, int, int],
    batches: Callable[[], Iterable[tuple[Any, Any]]],
    dst: str | Path,
    *,
    settings: QatSettings = QatSettings(),
    opset: int = 18,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a copy of ``model`` with fake quantization and write it as a QDQ ONNX file.

    Args:
        model: The FP32 image classifier (left unchanged).
        input_shape: ``(C, H, W)`` of one input, as the bundle feeds it (NCHW).
        batches: Returns a fresh iterable of ``(images, labels)`` training batches (called again when one runs out).
        dst: The ``.onnx`` file to write.
        settings: Steps, learning rate, batch size, observer schedule.
        opset: ONNX opset.
        progress: Called as ``progress(step, steps, loss)`` every few steps.

    Returns:
        Facts for the bundle: tool, method, steps, learning rate, weights and activations, seconds.

    Raises:
        ExportError: The model cannot be traced or converted (the ladder records it and goes on).
    """
    import torch

    started = time.perf_counter()
    example = torch.zeros(2, *input_shape)
    try:
        prepared = _prepare(model, example)
    except Exception as exc:  # FX tracing fails with many exception types (TraceError, TypeError...)
        raise ExportError(f"QAT: the model cannot be traced for fake quantization ({_first_line(exc)})",
                          "use the post-training rungs, or export fp32") from None
    _calibrate(prepared, batches, settings.calibration_batches)
    teacher = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    _train(prepared, teacher, batches, settings, progress)
    _export(prepared, example, Path(dst), opset)
    return {"tool": f"torch {torch.__version__} FX QAT", "method": "qat", "format": "QDQ", **asdict(settings),
            "weights": "int8 per channel, 7-bit", "activations": "uint8",
            "seconds": round(time.perf_counter() - started, 1)}


def _prepare(model: Any, example: Any) -> Any:
    import torch
    from torch.ao.nn.intrinsic import qat as intrinsic_qat
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    fixed = split_norm_act(static_same_padding(copy.deepcopy(model).eval(), example[:1]))
    fixed = fixed.to(memory_format=torch.contiguous_format).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_qat_fx(fixed, get_default_qat_qconfig_mapping("x86").set_global(_qconfig()), (example,))
    prepared.apply(intrinsic_qat.freeze_bn_stats)
    return prepared


def _qconfig() -> Any:
    """uint8 activations over their full range and 7-bit symmetric per-channel weights: what ONNX Runtime's
    QDQ kernels run on x86 without VNNI (edgetl's PTQ rungs quantize the same way). PyTorch's own x86 qconfig
    keeps activations at 7 bits instead, which cost EfficientNet-Lite0 9 points of fake-quant accuracy."""
    import torch
    from torch.ao.quantization import (
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
    )

    activation = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
        qscheme=torch.per_tensor_affine, reduce_range=False)
    weight = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-64, quant_max=63, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=activation, weight=weight)


def static_same_padding(model: Any, example: Any) -> Any:
    """Replace every TF-style "same"-padded convolution (timm ``Conv2dSame``) by fixed padding + ``Conv2d``.

    The pads are those ``Conv2dSame`` computes for the input it sees when ``model`` runs on ``example``, so
    the result is the same function at that input size. Other modules are left alone.
    """
    import torch
    from torch import nn

    shapes: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            shapes.setdefault(name, tuple(args[0].shape[-2:]))
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if _is_same_conv(m)]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    for name, size in shapes.items():
        conv = model.get_submodule(name)
        pads = [_same_pad(i, k, s, d) for i, k, s, d in zip(size, conv.kernel_size, conv.stride, conv.dilation,
                                                             strict=True)]
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                          conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        (ph, pw) = pads
        replacement = nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), plain)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, replacement)
    return model


def split_norm_act(model: Any) -> Any:
    """Replace every timm ``BatchNormAct2d`` by ``Sequential(BatchNorm2d, drop, act)``: the same function."""
    from torch import nn

    for name, child in list(model.named_children()):
        if type(child).__name__ == "BatchNormAct2d" and isinstance(child, nn.BatchNorm2d):
            norm = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            norm.load_state_dict(child.state_dict())
            setattr(model, name, nn.Sequential(norm, child.drop, child.act))
        else:
            split_norm_act(child)
    return model


def _is_same_conv(module: Any) -> bool:
    from torch import nn

    return isinstance(module, nn.Conv2d) and type(module).__name__ == "Conv2dSame"


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _calibrate(prepared: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], count: int) -> None:
    """Start every fake quantizer's range at the min and max over ``count`` batches, seen with fake quantization
    off (the float model's ranges, as the post-training MinMax rung takes them over its calibration set).

    The moving-average observers are set to each batch's own min and max in turn (averaging constant 1), and
    their extremes kept; their training constant is restored afterwards. Fixed-range quantizers (a hard
    sigmoid's output) keep their range.
    """
    import torch
    from torch.ao.quantization import FakeQuantizeBase, disable_fake_quant, enable_fake_quant

    quantizers = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)
                  and hasattr(m.activation_post_process, "averaging_constant")]  # not the fixed-range ones
    constants = [q.activation_post_process.averaging_constant for q in quantizers]
    extremes: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(quantizers)
    prepared.apply(disable_fake_quant)
    prepared.eval()
    with torch.no_grad():
        for q in quantizers:
            q.activation_post_process.averaging_constant = 1.0
        for images, _ in _cycle(batches, count):
            prepared(images.contiguous())
            for i, q in enumerate(quantizers):
                low, high = q.activation_post_process.min_val.clone(), q.activation_post_process.max_val.clone()
                extremes[i] = (low, high) if extremes[i] is None else (
                    torch.minimum(extremes[i][0], low), torch.maximum(extremes[i][1], high))
        for q, constant, seen in zip(quantizers, constants, extremes, strict=True):
            q.activation_post_process.averaging_constant = constant
            if seen is not None and seen[0].numel():
                q.activation_post_process.min_val.copy_(seen[0])
                q.activation_post_process.max_val.copy_(seen[1])
                scale, zero_point = q.calculate_qparams()
                q.scale.copy_(scale)
                q.zero_point.copy_(zero_point)
    prepared.apply(enable_fake_quant)


def _train(prepared: Any, teacher: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], settings: QatSettings,
           progress: Callable[[int, int, float], None] | None) -> None:
    """``settings.steps`` AdamW steps on the KL divergence from the FP32 ``teacher``'s outputs."""
    import torch
    import torch.nn.functional as F
    from torch.ao.quantization import disable_observer

    optimizer = torch.optim.AdamW(prepared.parameters(), lr=settings.lr, weight_decay=0.0)
    observe_until = int(settings.steps * settings.observe_fraction)
    prepared.train()
    for step, (images, _) in enumerate(_cycle(batches, settings.steps), start=1):
        x = images.contiguous()
        with torch.no_grad():
            target = F.softmax(teacher(x), dim=1)
        loss = F.kl_div(F.log_softmax(prepared(x), dim=1), target, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == observe_until:
            prepared.apply(disable_observer)
        if progress is not None and (step % 25 == 0 or step == settings.steps):
            progress(step, settings.steps, float(loss.detach()))


def _cycle(batches: Callable[[], Iterable[tuple[Any, Any]]], steps: int) -> Iterator[tuple[Any, Any]]:
    done = 0
    while done < steps:
        empty = True
        for batch in batches():
            empty = False
            yield batch
            done += 1
            if done == steps:
                return
        if empty:
            raise ExportError("QAT needs training samples and the run has none", "use the post-training rungs")


def _export(prepared: Any, example: Any, dst: Path, opset: int) -> None:
    import torch
    from torch.ao.quantization.quantize_fx import convert_fx

    from edgetl.export.bundle import INPUT_NAME, OUTPUT_NAME

    prepared.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_fx(prepared)
            torch.onnx.export(converted, (example,), str(dst), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False)
    except Exception as exc:  # convert_fx / the TorchScript exporter: plain exceptions
        raise ExportError(f"QAT: the fake-quantized model could not be exported ({_first_line(exc)})",
                          "use the post-training rungs, or export fp32") from None
    compact_names(dst)
