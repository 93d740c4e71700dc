"""`edgetl run RECIPE.yaml`: finetune | distill -> export (+verify) -> bench -> report, skipping unchanged stages.

Every stage has the same shape: inputs (hashed) -> config -> output path. The hash of what a stage
consumed is stored in ``<workdir>/stages.json``; a stage whose hash is unchanged and whose output
exists is skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetl.config import DistillConfig, FinetuneConfig, _check_keys, from_dict, load_yaml
from edgetl.errors import ConfigError
from edgetl.fsutil import read_json, sha256_file, sha256_json, write_json

log = logging.getLogger("edgetl")


@dataclass
class ExportStage:
    """Options of the export stage."""

    format: str = "onnx"
    precision: str = "fp32"
    verify_limit: int | None = None
    opset: int = 18
    #: INT8: ``auto``, ``dynamic`` or ``static`` (see ``edgetl export --method``).
    method: str = "auto"
    #: INT8: accuracy budget in points (default 1.0).
    max_accuracy_drop: float | None = None
    #: INT8: calibration recipe YAML (default: the built-in recipe, 300 stratified training samples).
    calibration: str | None = None
    #: INT8: keep the FP32 bundle when INT8 meets the budget but is not faster on this machine.
    prefer_faster: bool = True


@dataclass
class BenchStage:
    """Options of the benchmark stage."""

    target: str = "local-cpu"
    engines: list[str] | None = None
    threads: list[int] | None = None
    batch_sizes: list[int] | None = None


@dataclass
class Recipe:
    """A whole pipeline, as read from YAML."""

    name: str
    workdir: Path
    finetune: FinetuneConfig | None
    export: ExportStage = field(default_factory=ExportStage)
    bench: BenchStage | None = field(default_factory=BenchStage)
    report: bool = True
    #: The alternative to ``finetune``: the run folder is a student distilled from a teacher.
    distill: DistillConfig | None = None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; unknown keys are named."""
    data = load_yaml(path)
    _check_keys(data, {"name", "workdir", "finetune", "distill", "export", "bench", "report"}, f"recipe {path}")
    if "finetune" in data and "distill" in data:
        raise ConfigError(f"recipe {path} has both a finetune and a distill section",
                          "keep one: distill trains the student from a teacher, finetune trains it alone")
    name = str(data.get("name") or Path(path).stem)
    bench = data.get("bench", {})
    distill = DistillConfig.from_dict(data["distill"]) if "distill" in data else None
    return Recipe(
        name=name,
        workdir=Path(data.get("workdir") or Path("runs") / name),
        finetune=None if distill else FinetuneConfig.from_dict(data.get("finetune", {})),
        export=from_dict(ExportStage, data.get("export", {}), "recipe.export"),
        bench=None if bench is False else from_dict(BenchStage, bench or {}, "recipe.bench"),
        report=bool(data.get("report", True)),
        distill=distill,
    )


@dataclass
class Stage:
    """One step: ``run(out)`` writes ``out``; ``inputs()`` identifies what it consumes."""

    name: str
    out: Path
    inputs: Callable[[], Any]
    run: Callable[[Path], None]


def _folder_identity(path: str) -> Any:
    """Cheap identity of a data folder or file (names, sizes, mtimes), or of an embedded dataset name."""
    root = Path(path)
    if root.is_file():
        st = root.stat()
        return [str(root.resolve()), st.st_size, st.st_mtime_ns]
    if not root.is_dir():
        return path
    listing = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = (Path(dirpath) / name).stat()
            listing.append((os.path.relpath(Path(dirpath) / name, root), st.st_size, st.st_mtime_ns))
    return sha256_json(listing)


def build_stages(recipe: Recipe) -> list[Stage]:
    """The recipe's stages in order."""
    from edgetl.bench.runner import bench_bundle
    from edgetl.report.markdown import write_report
    from edgetl.runfolder import load_run
    from edgetl.train.finetune import finetune

    w = recipe.workdir
    run_dir, bundle = w / "run", w / f"bundle-{recipe.export.format}"
    bench_json, report = w / "bench.json", w / "report"
    ex, be = recipe.export, recipe.bench
    stages = [
        _train_stage(recipe, run_dir) if recipe.distill else
        Stage("finetune", run_dir,
              lambda: [recipe.finetune.to_dict(), _folder_identity(recipe.finetune.data.data)],
              lambda out: finetune(recipe.finetune, out, overwrite=True)),
        Stage("export", bundle,
              lambda: [load_run(run_dir).fingerprint(), vars(ex)],
              lambda out: export_stage(run_dir, ex, out)),
    ]
    if be is not None:
        stages.append(Stage(
            "bench", bench_json,
            lambda: [sha256_file(bundle / "edgetl.json"), vars(be)],
            lambda out: write_json(out, bench_bundle(bundle, be.target, engines=be.engines, threads=be.threads,
                                                     batch_sizes=be.batch_sizes))))
    if recipe.report:
        stages.append(Stage(
            "report", report,
            lambda: [sha256_file(p) for p in (run_dir / "metrics.json", bundle / "edgetl.json", bench_json)
                     if p.is_file()],
            lambda out: write_report(run_dir, bundle, bench_json if be is not None else None, out)))
    return stages


def _train_stage(recipe: Recipe, run_dir: Path) -> Stage:
    """The distill stage: its inputs are the config, the data and the teacher (run or bundle hash, or name)."""
    from edgetl.train.distill import distill

    cfg = recipe.distill
    return Stage("distill", run_dir,
                 lambda: [cfg.to_dict(), _folder_identity(cfg.data.data), _teacher_identity(cfg.distill.teacher)],
                 lambda out: distill(cfg, out, overwrite=True))


def _teacher_identity(teacher: str) -> Any:
    """What a teacher is: a run's weights and spec, a bundle's manifest (it hashes every file), or a name."""
    path = Path(teacher)
    if (path / "edgetl.json").is_file():
        return sha256_file(path / "edgetl.json")
    if (path / "weights.safetensors").is_file():
        return [sha256_file(path / name) for name in ("weights.safetensors", "spec.json") if (path / name).is_file()]
    return teacher


def export_stage(run_dir: Path, ex: ExportStage, out: Path) -> Path:
    """Export the run as the recipe says; for INT8, keep the faster artifact that meets the budget.

    INT8 is exported beside ``out`` (``<out>-int8``) with a calibration set made from the run's training split
    (cached in ``<workdir>/calibration``). When INT8 was declined (no rung met the budget on the validation
    split, or the kept one failed on the test split), or met the budget without being faster than FP32 here
    (and ``prefer_faster``), ``out`` holds the FP32 bundle and the log says why; otherwise
    ``out`` holds the INT8 bundle.
    """
    from edgetl.export import export

    common = {"overwrite": True, "verify_limit": ex.verify_limit, "opset": ex.opset}
    if ex.precision != "int8":
        return export(run_dir, ex.format, out, precision=ex.precision, **common)
    from edgetl.quantize.calibration import CalibrationRecipe, calibration_for_run

    recipe = CalibrationRecipe.from_yaml(ex.calibration) if ex.calibration else CalibrationRecipe()
    calib = calibration_for_run(run_dir, recipe, out=Path(run_dir).parent / "calibration", overwrite=True)
    int8_out = out.with_name(f"{out.name}-int8")
    export(run_dir, ex.format, int8_out, precision="int8", calib=calib.path, method=ex.method,
           max_accuracy_drop=ex.max_accuracy_drop, **common)
    q = read_json(int8_out / "edgetl.json")["quantization"]
    speed = q.get("speed") or {}
    if q["declined"] or (ex.prefer_faster and not speed.get("faster", False)):
        why = q["declined"] or (f"INT8 met the budget but is not faster here ({speed['int8_ms']:.2f} ms vs "
                                f"{speed['fp32_ms']:.2f} ms FP32 at batch 1)")
        log.warning("%s: the recipe's bundle is FP32 (the INT8 bundle stays in %s)", why, int8_out)
        return export(run_dir, ex.format, out, precision="fp32", **common)
    if out.exists():
        shutil.rmtree(out)
    int8_out.rename(out)
    log.info("INT8 kept: %.2fx faster than FP32 here", speed["speedup"])
    return out


def run_recipe(recipe: Recipe, force: bool = False) -> dict[str, str]:
    """Run every stage whose inputs changed (all with ``force``); return each stage's status."""
    recipe.workdir.mkdir(parents=True, exist_ok=True)
    state_file = recipe.workdir / "stages.json"
    done = read_json(state_file) if state_file.is_file() else {}
    status = {}
    for stage in build_stages(recipe):
        key = sha256_json(stage.inputs())
        if not force and done.get(stage.name) == key and stage.out.exists():
            log.info("stage %s: inputs unchanged, skipped (%s)", stage.name, stage.out)
            status[stage.name] = "skipped"
            continue
        log.info("stage %s -> %s", stage.name, stage.out)
        stage.run(stage.out)
        done[stage.name] = key
        write_json(state_file, done)
        status[stage.name] = "ran"
    return status


def check_recipe_paths(recipe: Recipe) -> None:
    """Refuse a workdir that is a file."""
    if recipe.workdir.exists() and not recipe.workdir.is_dir():
        raise ConfigError(f"recipe workdir {recipe.workdir} is a file", "set `workdir:` to a folder")
