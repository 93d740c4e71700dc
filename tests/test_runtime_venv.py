"""The runtime as an app gets it: a fresh venv with numpy, Pillow, tokenizers and one engine, nothing else.

edgetl itself is not installed there (an app vendors or pip-installs it without its training dependencies):
the repository is put on ``PYTHONPATH``. The venv is built once per session from the same pinned versions
as the project (pip's cache makes this fast after the first time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from builders import LABELS, make_run

REPO = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = [f"{name}=={version(name)}" for name in ("numpy", "pillow", "tokenizers", "onnxruntime")]


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *RUNTIME_PACKAGES], check=True, timeout=900)
    return python


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, text_run) -> dict[str, Path]:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("runtime-venv")
    return {
        "image": export(make_run(root), "onnx", root / "image", progress=False),
        "text": export(text_run[0], "onnx", root / "text", precision="int8", min_agreement=0.9,
                       max_accuracy_drop=5.0, progress=False),
    }


APP = """
import json, sys
from importlib.util import find_spec
from edgetl.runtime import Bundle
image, text, picture = sys.argv[1:4]
out = {
    "image": [p.label for p in Bundle.load(image).predict(picture, top_k=3)],
    "text": [[p.label, round(p.score, 6)] for p in Bundle.load(text).predict(["a gem", "a mess"])[0]],
    "installed": {m: find_spec(m) is not None for m in ("torch", "transformers", "tensorflow", "onnxruntime")},
    "loaded": sorted(m for m in ("torch", "transformers", "tensorflow") if m in sys.modules),
}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_runtime_runs_in_a_venv_without_torch(runtime_python: Path, bundles: dict[str, Path]) -> None:
    picture = next((bundles["image"].parent / "images" / "dog").glob("*.png"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(runtime_python), "-c", APP, str(bundles["image"]), str(bundles["text"]),
                           str(picture)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["installed"] == {"torch": False, "transformers": False, "tensorflow": False, "onnxruntime": True}
    assert out["loaded"] == []
    assert sorted(out["image"]) == sorted(LABELS)
    from edgetl.runtime import Bundle

    here = Bundle.load(bundles["text"]).predict(["a gem", "a mess"])[0]
    assert [[p.label, round(p.score, 6)] for p in here] == out["text"]  # same answer as in the dev venv
