"""Export a tiny real MobileNetV3-Small run folder to ONNX, verify parity, and refuse bad exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import LABELS, make_run

from edgetl.errors import ConfigError, OutputExistsError, ParityError, RunFolderError, UnknownNameError
from edgetl.fsutil import read_json
from edgetl.verify import VerifyReport, check_parity, compare


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def bundle(run_dir: Path) -> Path:
    from edgetl.export import export

    return export(run_dir, "onnx", run_dir.parent / "bundle", progress=False)


@pytest.mark.slow
def test_export_writes_verified_onnx_bundle(bundle: Path, run_dir: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["edgetl.json", "model.onnx"]
    manifest = read_json(bundle / "edgetl.json")
    assert (manifest["schema_version"], manifest["format"], manifest["precision"]) == (1, "onnx", "fp32")
    assert manifest["inputs"][0] == {"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32",
                                     "layout": "NCHW"}
    assert manifest["spec"]["labels"] == list(LABELS)
    v = manifest["verification"]
    assert v["n"] >= 3 and v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
    assert v["limits"] == {"max_abs_diff": 1e-4, "min_agreement": 0.999, "max_accuracy_drop": None,
                           "max_rel_diff": None}
    prov = manifest["provenance"]
    assert prov["run_dir"] == str(run_dir.resolve()) and len(prov["model_sha256"]) == 64


@pytest.mark.slow
def test_onnx_has_opset_and_dynamic_batch(bundle: Path) -> None:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(bundle / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
        assert session.run(None, {"input": x})[0].shape == (batch, len(LABELS))


def test_missing_run_folder(tmp_path: Path) -> None:
    from edgetl.export import export

    with pytest.raises(RunFolderError, match="run folder not found"):
        export(tmp_path / "no-run", "onnx", tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_parity_failure_is_refused_and_leaves_nothing(run_dir: Path, tmp_path: Path) -> None:
    from edgetl.export import export

    out = tmp_path / "refused"
    with pytest.raises(ParityError, match=r"max \|logit diff\|.*limit -1.*agreement"):
        export(run_dir, "onnx", out, max_abs_diff=-1.0, progress=False)  # no diff is below -1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either


def test_existing_out_refused_without_overwrite(tmp_path: Path) -> None:
    from edgetl.export import export

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty") as info:
        export(tmp_path / "no-run", "onnx", tmp_path, progress=False)
    assert "--overwrite" in info.value.hint
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_unknown_format_lists_known(tmp_path: Path) -> None:
    from edgetl.export import export

    with pytest.raises(UnknownNameError) as info:
        export(tmp_path / "no-run", "coreml", tmp_path / "b")
    assert "coreml" in info.value.message and "onnx" in info.value.hint


@pytest.mark.parametrize("precision", ["int4", "fp64"])
def test_unsupported_precision_refused(tmp_path: Path, precision: str) -> None:
    from edgetl.export import export

    with pytest.raises(ConfigError, match=precision):
        export(tmp_path / "no-run", "onnx", tmp_path / "b", precision=precision)


def test_bad_options_refused(tmp_path: Path) -> None:
    from edgetl.export import export

    with pytest.raises(ConfigError, match="opset 13"):
        export(tmp_path / "no-run", "onnx", tmp_path / "b", opset=13)
    with pytest.raises(ConfigError, match="verify_limit"):
        export(tmp_path / "no-run", "onnx", tmp_path / "b", verify_limit=0)


def test_compare_figures() -> None:
    ref = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 3.0, 0.0]])
    art = ref + np.array([[0.0, 0.5, 0.0], [0.0, 0.0, -0.1], [0.0, 0.0, 0.0]])
    report = compare(ref, art, np.array([0, 2, 0]), classes=LABELS)
    assert report.n == 3 and report.max_abs_diff == pytest.approx(0.5)
    assert report.top1_agreement == 1.0
    assert report.reference_accuracy == pytest.approx(2 / 3)
    assert report.per_class_artifact_accuracy == {"cat": 0.5, "fox": 1.0}
    assert report.to_dict()["n"] == 3


def test_check_parity_names_figures_and_nan_fails() -> None:
    good = VerifyReport(10, 1e-6, 1e-7, 1e-7, 1.0, 0.9, 0.9)
    check_parity(good)
    with pytest.raises(ParityError, match=r"90\.00%.*99\.90%"):
        check_parity(VerifyReport(10, 1e-6, 1e-7, 1e-7, 0.9, 0.9, 0.8))
    with pytest.raises(ParityError, match="nan"):
        check_parity(VerifyReport(10, float("nan"), float("nan"), float("nan"), 1.0, 0.9, 0.9))


def test_fp16_limit_is_absolute_by_default_and_relative_on_request() -> None:
    from edgetl.verify import compare, limits_for

    ref = np.array([[8.0, -4.0, 1.0], [6.0, 2.0, -8.0]])
    report = compare(ref, ref + 0.005, np.array([0, 0]))
    assert report.max_rel_diff == pytest.approx(0.005 / 8)
    fp16 = limits_for("fp16")
    assert (fp16.max_abs_diff, fp16.max_rel_diff) == (1e-2, None)
    check_parity(report, fp16.max_abs_diff, fp16.min_agreement, max_rel_diff=fp16.max_rel_diff)
    with pytest.raises(ParityError, match=r"max \|logit diff\| 0\.02 \(limit 0\.01\)"):
        check_parity(compare(ref, ref + 0.02, np.array([0, 0])), fp16.max_abs_diff, fp16.min_agreement)
    relative = limits_for("fp16", max_abs_diff=float("inf"), max_rel_diff=1e-2)
    check_parity(compare(ref, ref + 0.05, np.array([0, 0])), relative.max_abs_diff, relative.min_agreement,
                 max_rel_diff=relative.max_rel_diff)
    with pytest.raises(ParityError, match=r"relative logit diff 0\.0125"):
        check_parity(compare(ref, ref + 0.1, np.array([0, 0])), relative.max_abs_diff, relative.min_agreement,
                     max_rel_diff=relative.max_rel_diff)




@pytest.mark.parametrize("first_pass", [0, 1, 2, 5, 22, 49, 50])
def test_fp16_search_finds_the_smallest_passing_prefix(first_pass: int) -> None:
    from edgetl.export.fp16 import smallest_passing

    tried = []

    def passes(k: int) -> bool:
        tried.append(k)
        return k >= first_pass

    assert smallest_passing(passes, 50) == first_pass
    assert 50 not in tried  # every weight float32 is the FP32 artifact itself: never built
    assert len(tried) <= 2 * 6 + 1  # doubling, then bisection


def test_fp16_target_is_half_the_tighter_limit() -> None:
    from edgetl.export.fp16 import MARGIN, Fp16Plan

    reference = np.array([[4.0, -1.0], [0.5, 2.0]])
    assert Fp16Plan(None, None, 1e-2).target(reference) == pytest.approx(MARGIN * 1e-2)
    assert Fp16Plan(None, None, 1e-2, max_rel_diff=1e-3).target(reference) == pytest.approx(MARGIN * 4e-3)
    assert Fp16Plan(None, None, float("inf")).target(reference) == float("inf")
