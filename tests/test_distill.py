"""Distillation end to end on tiny real data: image and text students, cached vs online teacher, a bundle
teacher with its own preprocessing, the report, export of the student, the recipe stage, bad labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import make_image_folder
from click.testing import CliRunner

from edgetl.cli import main
from edgetl.config import DistillConfig
from edgetl.errors import ConfigError
from edgetl.fsutil import read_json
from edgetl.runfolder import load_run
from edgetl.train.distill import distill


def image_config(teacher: Path | str, data: Path, **distill_options) -> DistillConfig:
    cfg = DistillConfig()
    cfg.data.data, cfg.data.image_size, cfg.data.augment = str(data), 32, False
    cfg.model.backbone, cfg.model.pretrained = "mobilenet_v3_small", False
    cfg.train.epochs, cfg.train.batch_size, cfg.train.patience = 2, 8, 9
    cfg.distill.teacher, cfg.distill.latency = str(teacher), False
    for key, value in distill_options.items():
        setattr(cfg.distill, key, value)
    return cfg


@pytest.fixture(scope="module")
def student(image_run: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny random-init run (64 px, ImageNet mean/std) distilled into a 32 px MobileNetV3-Small, compared."""
    out = tmp_path_factory.mktemp("kd") / "student"
    metrics = distill(image_config(image_run, image_run.parent / "images", compare=True, latency=True), out)
    return out, metrics


@pytest.mark.slow
def test_image_student_run_folder_and_report(student: tuple[Path, dict], image_run: Path) -> None:
    out, metrics = student
    for name in ("weights.safetensors", "model.json", "spec.json", "config.yaml", "metrics.json", "distill.yaml",
                 "distillation.png", "training_curves.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    d = metrics["distill"]
    assert d["teacher_outputs"] == "cached" and d["terms"]["alpha"] == 0.5
    rows = d["comparison"]
    assert list(rows) == ["teacher", "student_no_kd", "student_kd"]
    assert rows["student_kd"]["accuracy"] == metrics["test"]["accuracy"]
    assert rows["teacher"]["params"] == sum(p.numel() for p in load_run(image_run).model().parameters())
    assert rows["student_kd"]["params"] == sum(p.numel() for p in load_run(out).model().parameters())
    assert all(r["latency_ms"] > 0 and r["file_bytes"] > 0 and r["format"] == "onnx" for r in rows.values())
    assert all("loss_soft" in h and "loss_hard" in h for h in metrics["history"])
    assert read_json(out / "metrics.json")["distill"]["comparison"] == rows
    assert load_run(out).spec.input_size == (32, 32)


@pytest.mark.slow
def test_distilled_student_exports_to_onnx_unchanged(student: tuple[Path, dict], tmp_path: Path) -> None:
    from edgetl.export import export
    from edgetl.runtime import Bundle

    bundle = export(student[0], "onnx", tmp_path / "onnx", progress=False)  # verified against PyTorch
    manifest = read_json(bundle / "edgetl.json")
    assert manifest["verification"]["top1_agreement"] >= 0.999
    assert Bundle.load(bundle).spec.labels == ("cat", "dog", "fox")


@pytest.mark.slow
def test_cached_teacher_logits_equal_the_online_teacher(image_run: Path) -> None:
    from edgetl.data import load_image_data
    from edgetl.models import default_spec
    from edgetl.train.distill_data import kd_loader, teacher_outputs
    from edgetl.train.teachers import load_teacher

    data = load_image_data(image_run.parent / "images")
    teacher = load_teacher("run", image_run, data.classes, "image")
    spec = default_spec("mobilenet_v3_small", data.classes, input_size=(32, 32))
    cache = teacher_outputs(teacher, kd_loader(data.train, spec, teacher, batch_size=5, shuffle=False, seed=0,
                                               student=False))
    online = kd_loader(data.train, spec, teacher, batch_size=4, shuffle=True, seed=1)
    cached = kd_loader(data.train, spec, teacher, batch_size=4, shuffle=True, seed=1, cache=cache)
    for (a, la), (b, lb) in zip(online, cached, strict=True):
        assert torch.equal(la, lb)
        assert a["teacher"].shape[-1] == 64 and a["student"].shape[-1] == 32  # each its own preprocessing
        torch.testing.assert_close(teacher.outputs(a["teacher"])[0], b["teacher_logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_bundle_teacher_and_augmentation_run_the_teacher_online(image_run: Path, exported, tmp_path: Path) -> None:
    bundle = exported("image", "onnx")
    cfg = image_config(bundle, image_run.parent / "images", feature_weight=1.0)
    cfg.data.augment, cfg.train.epochs = True, 1
    metrics = distill(cfg, tmp_path / "out")
    d = metrics["distill"]
    assert d["teacher"]["kind"] == "bundle" and d["teacher"]["format"] == "onnx"
    assert d["teacher_outputs"] == "online" and "augmented" in d["online_reason"]
    assert d["terms"]["feature"] == 0.0  # a bundle gives logits only: feature matching is off


@pytest.mark.slow
def test_feature_matching_trains_a_projection(image_run: Path, tmp_path: Path) -> None:
    cfg = image_config(image_run, image_run.parent / "images", feature_weight=0.5, student_unit=-2)
    cfg.train.epochs = 1
    metrics = distill(cfg, tmp_path / "out")
    assert metrics["distill"]["teacher_outputs"] == "online"
    assert metrics["history"][0]["loss_feature"] > 0


@pytest.mark.slow
def test_text_student_from_teacher_layers(text_run: tuple[Path, dict], tmp_path: Path) -> None:
    teacher_dir = text_run[0]
    cfg = DistillConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class = "text", "rotten-tomatoes", 40
    cfg.model.backbone = "distilbert_from_teacher"
    cfg.train.epochs, cfg.train.batch_size = 1, 16
    cfg.distill.teacher, cfg.distill.layers, cfg.distill.latency, cfg.distill.compare = str(teacher_dir), 2, False, True
    metrics = distill(cfg, tmp_path / "student")
    d = metrics["distill"]
    assert d["student_layers_from_teacher"] == [0, 5]
    assert d["teacher_outputs"] == "cached" and d["shared_tokenizer"] and d["terms"]["hidden"] == 1.0
    assert metrics["history"][0]["loss_hidden"] >= 0
    assert set(d["comparison"]) == {"teacher", "student_no_kd", "student_kd"}
    model = load_run(tmp_path / "student").model()  # rebuilt from the run folder alone
    assert type(model.backbone.model).__name__ == "DistilBertModel" and len(model.backbone.layers) == 2
    assert model.backbone.pooling == "mean"


@pytest.mark.slow
def test_label_sets_that_differ_fail_in_one_line(image_run: Path, tmp_path: Path) -> None:
    other = make_image_folder(tmp_path / "other")
    (other / "fox").rename(other / "owl")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["distill", "--teacher", str(image_run), "--data", str(other),
                                       "--image-size", "32", "--no-pretrained", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "only the teacher has: fox" in result.output and "owl" in result.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.slow
def test_recipe_distill_stage_skips_when_nothing_changed(image_run: Path, tmp_path: Path) -> None:
    import yaml

    from edgetl.pipeline import load_recipe, run_recipe

    recipe = {"name": "kd", "workdir": str(tmp_path / "w"), "bench": False, "report": False,
              "distill": {"data": {"data": str(image_run.parent / "images"), "image_size": 32, "augment": False},
                          "model": {"backbone": "mobilenet_v3_small", "pretrained": False},
                          "train": {"epochs": 1, "batch_size": 8},
                          "distill": {"teacher": str(image_run), "latency": False}},
              "export": {"format": "onnx"}}
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_recipe(load_recipe(path)) == {"distill": "ran", "export": "ran"}
    assert run_recipe(load_recipe(path)) == {"distill": "skipped", "export": "skipped"}
    recipe["distill"]["distill"]["temperature"] = 2.0
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_recipe(load_recipe(path))["distill"] == "ran"


@pytest.mark.slow
def test_text_augmentation_runs_the_teacher_online_on_the_augmented_texts(text_run: tuple[Path, dict],
                                                                           tmp_path: Path) -> None:
    """With --text-augment the student and its no-KD twin train on the same word-dropped texts, and the
    teacher runs on them online (a cache of the original texts would be the wrong targets)."""
    cfg = DistillConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class, cfg.data.text_augment = "text", "rotten-tomatoes", 40, 0.2
    cfg.model.backbone = "distilbert_from_teacher"
    cfg.train.epochs, cfg.train.batch_size = 1, 16
    cfg.distill.teacher, cfg.distill.layers, cfg.distill.latency = str(text_run[0]), 2, False
    metrics = distill(cfg, tmp_path / "student")
    d = metrics["distill"]
    assert d["teacher_outputs"] == "online" and "augmented" in d["online_reason"]
    assert d["terms"]["hidden"] == 1.0 and metrics["history"][0]["loss_hidden"] > 0
    assert read_json(tmp_path / "student" / "metrics.json")["test"]["n"] == metrics["test"]["n"]


@pytest.mark.slow
def test_student_init_pretrained_copies_the_backbone_the_teacher_started_from(text_run: tuple[Path, dict],
                                                                              tmp_path: Path) -> None:
    """--student-init pretrained: the layers come from the teacher's pretrained source (DistilBERT's recipe),
    not from its fine-tuned weights, and the head is not the teacher's."""
    from edgetl.models.text import build_text_classifier
    from edgetl.train.distill import _pretrained_encoder
    from edgetl.train.teachers import TorchTeacher

    teacher = TorchTeacher(text_run[0], load_run(text_run[0]).spec.labels)
    with torch.no_grad():  # the fixture's teacher only trained its head: make its encoder differ, as tuning would
        for p in teacher.model.backbone.model.parameters():
            p.add_(0.01)
    source = _pretrained_encoder(teacher)
    packaged, _, _ = build_text_classifier("minilm_l6", 2)
    pretrained, tuned = packaged.backbone.model.state_dict(), teacher.model.backbone.model.state_dict()
    assert all(torch.equal(value, pretrained[name]) for name, value in source.state_dict().items())
    assert not any(torch.equal(value, tuned[name]) for name, value in source.state_dict().items()
                   if value.is_floating_point())
    cfg = DistillConfig()
    cfg.data.task, cfg.data.data, cfg.data.limit_per_class = "text", "rotten-tomatoes", 40
    cfg.model.backbone = "distilbert_from_teacher"
    cfg.train.epochs, cfg.train.batch_size = 1, 16
    cfg.distill.teacher, cfg.distill.layers, cfg.distill.latency = str(text_run[0]), 2, False
    cfg.distill.student_init = "pretrained"
    metrics = distill(cfg, tmp_path / "student")
    assert "pretrained minilm_l6" in metrics["weights"]["detail"]


def test_unknown_student_init_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown student_init"):
        DistillConfig.from_dict({"distill": {"teacher": "minilm_l6", "student_init": "random"}})
