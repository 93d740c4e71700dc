"""`edgetl predict` and the folder-watch example app on a real exported image bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders import LABELS, make_run
from click.testing import CliRunner

from edgetl.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "folder_watch" / "watch.py"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("predict")
    return export(make_run(root), "onnx", root / "bundle", progress=False)


def images(bundle: Path) -> list[Path]:
    return sorted((bundle.parent / "images" / "cat").glob("*.png"))[:3]


def invoke(*args, stdin: str | None = None):
    return CliRunner().invoke(main, ["predict", *map(str, args)], input=stdin)


@pytest.mark.slow
def test_predict_files_folder_and_stdin_as_json(bundle: Path) -> None:
    files = images(bundle)
    result = invoke(bundle, *files, "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["input"] for r in rows] == [str(f) for f in files]
    assert all(len(r["predictions"]) == 2 and r["predictions"][0]["label"] in LABELS for r in rows)
    folder = invoke(bundle, files[0].parent, "--json")
    assert len(folder.output.splitlines()) == len(list(files[0].parent.glob("*.png")))
    piped = invoke(bundle, "-", "--json", stdin="\n".join(map(str, files)) + "\n")
    assert [json.loads(line)["input"] for line in piped.output.splitlines()] == [str(f) for f in files]
    table = invoke(bundle, files[0])
    assert table.exit_code == 0 and "ms per item" in table.output


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "empty-folder", "corrupt", "nothing"])
def test_predict_bad_input_is_one_line(bundle: Path, tmp_path: Path, case: str) -> None:
    item = {"missing": tmp_path / "nope.jpg", "empty-folder": tmp_path, "corrupt": tmp_path / "bad.png"}.get(case)
    if case == "corrupt":
        item.write_bytes(b"\x89PNG not really")
    args = [str(bundle)] + ([str(item)] if item else ["-"])
    proc = subprocess.run([sys.executable, "-m", "edgetl", "predict", *args], capture_output=True, text=True,
                          input="", timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_folder_watch_example_classifies_and_skips_bad_files(bundle: Path, tmp_path: Path, fmt: str) -> None:
    """The example app against a bundle of each format (images taken from the run the bundle came from)."""
    from edgetl.export import export

    target = bundle if fmt == "onnx" else export(bundle.parent / "run", fmt, tmp_path / fmt, progress=False)
    watched = tmp_path / "incoming"
    watched.mkdir()
    for f in images(bundle):
        shutil.copy(f, watched / f.name)
    (watched / "broken.jpg").write_bytes(b"not an image")
    (watched / "notes.txt").write_text("ignored")
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(target), str(watched), "--once"],
                          capture_output=True, text=True, timeout=120, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("watching ") and f"({fmt}," in lines[0]
    results = {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}
    assert set(results) == {f.name for f in images(bundle)} | {"broken.jpg"}
    assert results["broken.jpg"][0].startswith("skipped: ")
    assert all(r[0] in LABELS and r[2].endswith(" ms") for name, r in results.items() if name != "broken.jpg")
