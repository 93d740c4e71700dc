"""Target profiles, SSH addresses and commands, the fit check, `edgetl targets`, and the local sweep.

The SSH transport itself is tested against a real sshd in tests/test_remote_ssh.py.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import make_run

from edgetl.bench import bench_bundle, render_table
from edgetl.bench.fit import fit_check, graph_memory, peak_live_bytes
from edgetl.bench.remote import ssh_command
from edgetl.bench.targets import (
    DEVICE_ENGINES,
    TargetProfile,
    describe_targets,
    list_targets,
    load_target,
    parse_ssh_address,
    resolve_target,
)
from edgetl.errors import BenchmarkError, ConfigError, UnknownNameError
from edgetl.runtime.bundle import Manifest
from edgetl.spec import ModelSpec

EDGETL = Path(sys.executable).with_name("edgetl")
REQUIRED = ("local-cpu", "raspberry-pi-4", "jetson-orin-nano", "generic-arm64-ssh")


def test_shipped_profiles_load() -> None:
    names = list_targets()
    assert set(REQUIRED) <= set(names)
    profiles = {name: load_target(name) for name in names}
    assert profiles["local-cpu"].engines == ("onnxruntime", "openvino", "ai-edge-litert", "torch")
    for name in ("raspberry-pi-4", "jetson-orin-nano", "generic-arm64-ssh"):
        assert profiles[name].kind == "ssh" and set(profiles[name].engines) <= set(DEVICE_ENGINES)
    assert profiles["raspberry-pi-4"].address == "ssh://pi@raspberrypi.local:22"
    mcus = [p for p in profiles.values() if p.kind == "fit-only"]
    assert mcus and all(p.ram_kb and p.flash_kb and p.ram_kb <= 1024 for p in mcus)


@pytest.mark.parametrize(("address", "expected"), [
    ("ssh://pi@raspberrypi.local", ("pi", "raspberrypi.local", None)),
    ("ssh://root@127.0.0.1:2222", ("root", "127.0.0.1", 2222)),
    ("ssh://jetson", (None, "jetson", None)),
    ("ssh://me@[::1]:22", ("me", "::1", 22)),
])
def test_ssh_address(address: str, expected: tuple) -> None:
    assert parse_ssh_address(address) == expected


@pytest.mark.parametrize("address", ["ssh://-oProxyCommand=sh@x", "ssh://pi@host;reboot", "ssh://a b",
                                     "ssh://pi@host:99999", "ssh://"])
def test_bad_ssh_address_refused(address: str) -> None:
    with pytest.raises(ConfigError):
        parse_ssh_address(address)


def test_ssh_target_takes_a_profile() -> None:
    default = resolve_target("ssh://me@10.0.0.7:2200")
    assert default.name == "generic-arm64-ssh" and default.address == "ssh://me@10.0.0.7:2200"
    pi = resolve_target("ssh://pi@10.0.0.8", "raspberry-pi-4")
    assert pi.host == "10.0.0.8" and pi.port == 22 and pi.threads == (1, 4) and pi.ram_kb
    with pytest.raises(ConfigError, match="local profile") as info:
        resolve_target("ssh://pi@10.0.0.8", "local-cpu")
    assert "raspberry-pi-4" in info.value.hint
    with pytest.raises(ConfigError, match="--profile is for ssh://"):
        resolve_target("local-cpu", "raspberry-pi-4")


def test_ssh_command_is_an_argument_list() -> None:
    profile = TargetProfile(name="d", kind="ssh", host="10.0.0.9", user="pi", port=2222, connect_timeout_s=7,
                            identity_file="/keys/id", known_hosts="/keys/known", engines=("onnxruntime",))
    remote = ["/opt/my python/bin/python", "-c", "print('a; b' \"c\")", "dir with $(space)"]
    args = ssh_command(profile, remote)
    joined = " ".join(args)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=7", "UserKnownHostsFile=/keys/known"):
        assert option in args
    assert args[0] == "ssh" and "-p" in args and args[args.index("-p") + 1] == "2222" and "-i" in joined
    assert args[-3:-1] == ["--", "10.0.0.9"] and args[args.index("-l") + 1] == "pi"
    assert shlex.split(args[-1]) == remote  # the device's shell sees every argument as one word
    with pytest.raises(ConfigError, match="has no host"):
        ssh_command(load_target("generic-arm64-ssh"), ["true"])


@pytest.mark.parametrize(("yaml", "match"), [
    ("kind: ssh\nhost: pi\nhost_key_checking: 'no'\n", "host_key_checking"),
    ("kind: ssh\nhost: pi\nengines: [onnxruntime, torch]\n", "torch cannot run on an SSH device"),
    ("kind: ssh\nhost: '-oProxyCommand=x'\n", "not a host name"),
    ("kind: ssh\nport: 0\n", "port must be"),
    ("kind: ssh\nconect_timeout_s: 3\n", "conect_timeout_s"),
    ("kind: fit-only\n", "needs ram_kb or flash_kb"),
    ("kind: fit-only\nram_kb: 0.5\n", "ram_kb must be a whole number"),
    ("kind: local\nweights_in: sram\n", "weights_in"),
])
def test_bad_profiles_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml: str, match: str) -> None:
    (tmp_path / "bad.yaml").write_text(yaml)
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=match):
        load_target("bad")


def test_peak_live_bytes_by_hand() -> None:
    # x -> a -> b -> d, and a -> c -> d (c and b both live while d is computed); out = d
    steps = [(["x"], ["a"]), (["a"], ["b"]), (["a"], ["c"]), (["b", "c"], ["d"])]
    sizes = {"x": 100, "a": 200, "b": 300, "c": 50, "d": 10}
    # step 1: x+a=300 (x freed); step 2: a+b=500; step 3: a+b+c=550 (a freed); step 4: b+c+d=360
    assert peak_live_bytes(steps, sizes) == 550
    assert peak_live_bytes([(["x", "w"], ["y"])], {"x": 8, "y": 4}) == 12  # w: a weight, not counted


def _tiny_onnx(folder: Path) -> Manifest:
    """Conv(3->4, 8x8) -> Relu -> GlobalAveragePool -> Flatten, float32, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"]),
             helper.make_node("GlobalAveragePool", ["z"], ["p"]), helper.make_node("Flatten", ["p"], ["logits"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, [weight])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    spec = ModelSpec(labels=("a", "b", "c", "d"), input_size=(8, 8))
    return Manifest(folder=folder, data={"format": "onnx"}, spec=spec, model_path=path)


def test_fit_check_on_an_onnx_graph(tmp_path: Path) -> None:
    manifest = _tiny_onnx(tmp_path)
    memory = graph_memory(manifest)
    # x 768 B + y 1,024 B at the Conv; y + z = 2,048 B at the Relu (the peak); then z + p, p + logits
    assert memory.peak_activation_bytes == 2048 and memory.operators == 4 and memory.unknown_tensors == 0
    assert memory.model_bytes == (tmp_path / "model.onnx").stat().st_size > 4 * 27 * 4
    assert memory.model_bytes < 1024
    mcu = TargetProfile(name="mcu", kind="fit-only", ram_kb=1, flash_kb=1, weights_in="flash")
    fit = fit_check(manifest, mcu)
    assert fit["fits"] is False and fit["peak_activation_kb"] == 2.0 and fit["ram_needed_kb"] == 2.0
    assert fit["reasons"] == ["peak activations 2 KB > RAM 1 KB"]  # the file fits the 1 KB flash
    roomy = TargetProfile(name="big", kind="fit-only", ram_kb=4, flash_kb=8, weights_in="ram")
    fit = fit_check(manifest, roomy)
    assert fit["fits"] is True and fit["ram_needed_kb"] == pytest.approx(2 + memory.model_bytes / 1024, abs=0.1)
    tight_ram = TargetProfile(name="ram", kind="fit-only", ram_kb=2, weights_in="ram")
    assert "peak activations + weights" in fit_check(manifest, tight_ram)["reasons"][0]
    assert fit_check(manifest, TargetProfile(name="none")) is None  # no limits, no check


def test_fit_unknown_when_the_graph_is_unreadable(tmp_path: Path) -> None:
    manifest = _tiny_onnx(tmp_path)
    manifest.model_path.write_bytes(b"not a model")
    fit = fit_check(manifest, TargetProfile(name="mcu", kind="fit-only", ram_kb=64, flash_kb=64))
    assert fit["fits"] is None and fit["peak_activation_kb"] is None
    assert fit["reasons"][0].startswith("RAM not checked: graph not readable")


def test_targets_command_lists_and_fails_cleanly() -> None:
    proc = subprocess.run([str(EDGETL), "targets", "--no-probe", "--json"], capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(REQUIRED) <= set(rows) and rows["local-cpu"]["where"] == "this machine"
    assert all(r["status"] == "not probed" for r in rows.values())
    proc = subprocess.run([str(EDGETL), "targets", "no-such-board"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown target 'no-such-board'" in proc.stderr and "local-cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_targets_probe_local_and_unconfigured() -> None:
    import onnxruntime

    local, generic = describe_targets(["local-cpu", "generic-arm64-ssh"])
    assert local["available"] is True and f"onnxruntime {onnxruntime.__version__}" in local["status"]
    assert generic["available"] is None and "needs a host" in generic["status"]


def test_targets_probe_runs_the_engines_host_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local profile is available when one engine can run here: an installed package is not enough for a
    GPU engine, whose host check (the driver) decides; reasons are grouped by engine."""
    from edgetl.bench.engines import EngineSkipped
    from edgetl.bench.gpu import cuda_device_count
    from edgetl.bench.targets import host_skip_reason

    try:
        gpu, no_gpu = cuda_device_count() > 0, None
    except EngineSkipped as exc:
        gpu, no_gpu = False, exc.message
    (tmp_path / "gpu-only.yaml").write_text("kind: local\nengines: [torch-cuda, torch-cuda-fp16]\n")
    (tmp_path / "mixed.yaml").write_text("kind: local\nengines: [onnxruntime, torch-cuda]\n")
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    gpu_only, mixed = describe_targets(["gpu-only", "mixed"])
    assert gpu_only["available"] is gpu and mixed["available"] is True
    assert host_skip_reason("onnxruntime") is None and host_skip_reason("torch-cuda") == no_gpu
    if not gpu:
        assert gpu_only["status"] == f"{no_gpu} (torch-cuda, torch-cuda-fp16)"
        assert mixed["status"].startswith("onnxruntime ") and mixed["status"].endswith(f"; {no_gpu} (torch-cuda)")


def test_bench_cli_target_errors(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("kind: local\nbatch_size: [1]\n")
    for args, needle in [(["--target", str(tmp_path / "typo.yaml")], "batch_size"),
                         (["--target", "nope"], "unknown target 'nope'"),
                         (["--profile", "raspberry-pi-4"], "--profile is for ssh:// targets")]:
        proc = subprocess.run([str(EDGETL), "bench", str(tmp_path), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("targets")
    return export(make_run(root, size=32, per_class=4), "onnx", root / "bundle", progress=False)


@pytest.mark.slow
def test_local_sweep_and_fit(onnx_bundle: Path) -> None:
    import onnxruntime

    tiny = TargetProfile(name="tiny", engines=("onnxruntime", "openvino", "ai-edge-litert"), threads=(1,),
                         batch_sizes=(1,), warmup=1, min_runs=3, min_time_s=0.02, max_time_s=5.0, ram_kb=10**6)
    result = bench_bundle(onnx_bundle, tiny, progress=False)
    assert [r["engine"] for r in result["rows"]] == ["onnxruntime"]  # the engines that run onnx, no more
    assert set(result["not_applicable"]) == {"openvino", "ai-edge-litert"}
    row = result["rows"][0]
    assert row["status"] == "ok" and row["engine_version"] == onnxruntime.__version__
    assert row["machine"] == result["machine"] and row["machine"]["cpu"] and row["target"] == "tiny"
    assert row["thread_settings"]["threads"] == 1 and result["fit"]["fits"] is True and result["status"] == "ok"
    with pytest.raises(BenchmarkError, match="cannot run this onnx bundle: ai-edge-litert runs tflite"):
        bench_bundle(onnx_bundle, TargetProfile(name="t", engines=("ai-edge-litert",)), progress=False)
    mcu = bench_bundle(onnx_bundle, "cortex-m7-stm32h743", progress=False)  # a result, not a crash
    assert mcu["status"] == "fit check only" and mcu["rows"] == [] and mcu["fit"]["fits"] is False
    assert "flash 2,048 KB" in mcu["fit"]["reasons"][0]
    render_table(mcu)
    small = TargetProfile(name="small", kind="ssh", host="127.0.0.1", engines=("onnxruntime",), ram_kb=64)
    not_run = bench_bundle(onnx_bundle, small, progress=False)  # does not fit: nothing is run or copied
    assert not_run["status"] == "does not fit" and not_run["rows"] == [] and "RAM 64 KB" in not_run["fit"]["reasons"][0]


def test_unknown_target_error_type() -> None:
    with pytest.raises(UnknownNameError) as info:
        resolve_target("pi-zero")
    assert "ssh://user@host" in info.value.hint and "raspberry-pi-4" in info.value.hint
