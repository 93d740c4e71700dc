"""The report that shows whether distillation paid: teacher, student without KD, student with KD.

Accuracy and macro-F1 on the test split, parameters, file size of the ONNX FP32 artifact (a bundle
teacher: its own model files) and CPU latency at batch 1 on one thread (ONNX Runtime; a bundle teacher
runs on its own engine; a text model on one synthetic sequence of its spec's ``max_length`` tokens), into
``metrics.json``, the terminal and ``distillation.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgetl.config import DistillConfig, FinetuneConfig
from edgetl.train.distill_data import kd_loader, teacher_outputs
from edgetl.train.metrics import classification_metrics
from edgetl.train.tasks import Built
from edgetl.train.teachers import Teacher, TorchTeacher

log = logging.getLogger("edgetl")
ROWS = {"teacher": "teacher", "student_no_kd": "student, no KD", "student_kd": "student, KD"}
_KEEP = ("n", "accuracy", "macro_f1")


def evaluate_teacher(teacher: Teacher, data: Any, cfg: FinetuneConfig) -> dict:
    """The teacher's test-split metrics, through its own preprocessing (and engine, for a bundle)."""
    loader = kd_loader(data.test, teacher.spec, teacher, batch_size=64, shuffle=False, seed=0, student=False)
    logits = teacher_outputs(teacher, loader).logits
    result = classification_metrics(data.test.labels, logits.argmax(1).numpy(), data.classes)
    log.info("teacher test accuracy %.4f", result["accuracy"])
    return result


def comparison(models: dict[str, dict], run_dir: Path, teacher: Teacher, built: Built, data: Any,
               cfg: DistillConfig, scratch: Path) -> dict[str, dict]:
    """One row per model: accuracy, macro-F1, params, ONNX file size and latency (when ``cfg.distill.latency``)."""
    student_params = sum(p.numel() for p in built.model.parameters())
    params = {"teacher": teacher.params() if isinstance(teacher, TorchTeacher) else None,
              "student_kd": student_params, "student_no_kd": student_params}
    artifacts: dict[str, dict] = {}
    if cfg.distill.latency:
        student = _artifact(_export(run_dir, scratch / "student-onnx"), data)
        artifacts = {"teacher": _artifact(_teacher_bundle(teacher, scratch), data), "student_kd": student,
                     "student_no_kd": student}  # the same architecture: the same artifact size and speed
    rows = {}
    for key in ROWS:
        if key in models:
            rows[key] = {k: models[key][k] for k in _KEEP} | {"params": params[key]} | artifacts.get(key, {})
    return rows


def _export(run_dir: Path, out: Path) -> Path:
    from edgetl.export import export

    return export(run_dir, "onnx", out, verify=False, progress=False, overwrite=True)


def _teacher_bundle(teacher: Teacher, scratch: Path) -> Path:
    return _export(teacher.path, scratch / "teacher-onnx") if isinstance(teacher, TorchTeacher) else teacher.path


def _artifact(bundle_dir: Path, data: Any) -> dict[str, Any]:
    """Model file bytes and batch-1, one-thread latency of a bundle on its own engine (text: at ``max_length``)."""
    from edgetl.bench.timing import measure
    from edgetl.runtime import Bundle

    bundle = Bundle.load(bundle_dir, threads=1)
    files = [p for p in bundle_dir.iterdir() if p.is_file() and p.name != "edgetl.json"]
    shape: dict[str, int] = {}
    if bundle.spec.is_text:  # a full max_length sequence: a short test sentence would time mostly overhead
        from edgetl.runtime import synthetic_tokens

        feed = synthetic_tokens(bundle.tokenizer, 1, bundle.spec.max_length)
        shape = {"seq_len": bundle.spec.max_length}
    else:
        feed = bundle.preprocess([data.test.image(0)])
    stats = measure(lambda: bundle.logits(feed), warmup=5, min_runs=30, min_time_s=0.5, max_time_s=10.0)
    return {"format": bundle.manifest["format"], "file_bytes": sum(p.stat().st_size for p in files),
            "latency_ms": round(stats.p50_ms, 3)} | shape


def write_comparison(rows: dict[str, dict], path: Path) -> None:
    """``distillation.png``: accuracy, parameters, file size and latency of each model side by side."""
    from edgetl.report.plots import plot_bar_panels

    names = [ROWS[k] for k in rows]
    panels = {"test accuracy": [r["accuracy"] for r in rows.values()],
              "params (M)": [None if r["params"] is None else r["params"] / 1e6 for r in rows.values()]}
    if all("latency_ms" in r for r in rows.values()):
        panels["file (MB)"] = [r["file_bytes"] / 1e6 for r in rows.values()]
        panels["CPU latency, batch 1 (ms)"] = [r["latency_ms"] for r in rows.values()]
    plot_bar_panels(names, panels, path, title="distillation: teacher vs student without and with KD")
