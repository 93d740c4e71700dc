"""`edgetl export`: run folder -> verified bundle."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="onnx", show_default=True,
              help="onnx, openvino, tflite, or all (one verified bundle per format in OUT/<format>).")
@click.option("--precision", default="fp32", show_default=True,
              help="fp32, fp16 or int8 (INT8 walks an accuracy ladder; see --max-accuracy-drop, --calib).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--verify-limit", type=int, default=None, help="Verify on at most N test samples (default: all).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (>= 17).")
@click.option("--max-abs-diff", type=float, default=None,
              help="Largest logit difference accepted [default: 1e-4 for fp32, 1e-2 for fp16 (which keeps the "
                   "earliest weights float32 as needed to hold it), unchecked for int8].")
@click.option("--max-rel-diff", type=float, default=None,
              help="Largest logit difference relative to the logits' scale [default: unchecked].")
@click.option("--min-agreement", type=float, default=None,
              help="Smallest top-1 agreement with PyTorch, 0..1 [default: 0.999 fp32, 0.995 fp16, 0.95 int8].")
@click.option("--max-accuracy-drop", type=float, default=None,
              help="INT8 budget: largest accuracy loss in points, on the validation split against the FP32 "
                   "artifact and on the test split against PyTorch [default: 1.0 for int8, unchecked otherwise].")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="INT8: calibration set folder made by `edgetl calibrate` (required for static INT8).")
@click.option("--method", type=click.Choice(["auto", "dynamic", "static", "qat"]), default="auto", show_default=True,
              help="INT8: auto = dynamic for text (onnx, tflite), static (calibrated, ending with QAT for ONNX "
                   "and OpenVINO images) otherwise; qat = quantization-aware training alone (ONNX, OpenVINO images).")
@click.option("--budget-samples", type=int, default=None,
              help="INT8: measure the accuracy budget on the first N validation samples [default: all].")
@click.option("--qat-steps", type=int, default=None,
              help="INT8: optimiser steps of the quantization-aware-training rung [default: 200].")
@click.option("--tflite-route", type=click.Choice(["auto", "litert-torch", "onnx2tf"]), default="auto",
              show_default=True, help="TFLite converter: auto = litert-torch, then ONNX -> onnx2tf if it fails "
                                      "(needs the tf extra).")
def command(run_dir: Path, fmt: str, precision: str, out: Path, overwrite: bool, verify_limit: int | None,
            opset: int, max_abs_diff: float | None, max_rel_diff: float | None, min_agreement: float | None,
            max_accuracy_drop: float | None, calib: Path | None, method: str, budget_samples: int | None,
            qat_steps: int | None, tflite_route: str) -> None:
    """Export RUN_DIR to a bundle, verify it against PyTorch on the test split, refuse it if it differs."""
    from edgetl.cli.render import print_export_summary, print_verification
    from edgetl.errors import ExportError
    from edgetl.export import ALL_FORMATS, export, export_all

    options = {"verify_limit": verify_limit, "opset": opset, "max_abs_diff": max_abs_diff,
               "max_rel_diff": max_rel_diff, "min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop,
               "calib": calib, "method": method, "budget_samples": budget_samples, "tflite_route": tflite_route,
               "qat_steps": qat_steps}
    if fmt != ALL_FORMATS:
        print_verification(export(run_dir, fmt, out, precision=precision, overwrite=overwrite, **options))
        return
    results = export_all(run_dir, out, precision=precision, overwrite=overwrite, **options)
    print_export_summary(results)
    failed = [name for name, result in results.items() if not isinstance(result, Path)]
    if failed:
        raise ExportError(f"{len(failed)} of {len(results)} formats failed: {', '.join(failed)} (see above)",
                          "the other bundles were written and verified")
