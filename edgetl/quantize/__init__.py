"""Quantization backends. Each module imports its toolkit (onnxruntime.quantization, NNCF...) only when used."""

from edgetl.quantize.onnx_dynamic import quantize_onnx_dynamic

__all__ = ["quantize_onnx_dynamic"]
