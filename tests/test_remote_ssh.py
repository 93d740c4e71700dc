"""SSH targets against a real sshd started by the test on 127.0.0.1, with throwaway host and user keys.

The "device" is this machine reached through ssh: the profile's python is this .venv's (numpy and
onnxruntime), so the bundle, the one-file runner and the JSON really travel over SSH. Nothing here talks
to any address but 127.0.0.1; sshd is stopped at the end. Skipped only when sshd is not installed
(`make install` installs openssh-server).
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import make_run

SSHD = Path("/usr/sbin/sshd")
EDGETL = Path(sys.executable).with_name("edgetl")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server/client not installed (apt-get install openssh-server openssh-client; `make install` "
           "does it)",
)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgetl-test", "-f", str(path)],
                   check=True, capture_output=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """A private sshd on 127.0.0.1:PORT accepting one throwaway key; its host key in a known_hosts file."""
    root = tmp_path_factory.mktemp("sshd")
    host_key, user_key = root / "host_key", root / "user_key"
    host_pub, user_pub = _keygen(host_key), _keygen(user_key)
    (root / "authorized_keys").write_text(user_pub + "\n")
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}", f"AuthorizedKeysFile {root}/authorized_keys",
        f"PidFile {root}/sshd.pid", "UsePAM no", "StrictModes no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", f"AllowUsers {getpass.getuser()}",
    ]) + "\n")
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
    with open(root / "sshd.log", "w") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log)
        try:
            _wait_listening(port, proc, root / "sshd.log")
            yield {"port": port, "root": root, "user_key": user_key, "known_hosts": root / "known_hosts"}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text()}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgetl.export import export

    root = tmp_path_factory.mktemp("ssh-bundle")
    return export(make_run(root, size=32, per_class=4), "onnx", root / "bundle", progress=False)


def _profile(sshd: dict, folder: Path, name: str = "device", **changes: object) -> Path:
    """A profile for the test sshd: this .venv's python, the throwaway key, tiny timing."""
    data = {"kind": "ssh", "python": sys.executable, "identity_file": str(sshd["user_key"]),
            "known_hosts": str(sshd["known_hosts"]), "remote_dir": str(folder / "remote"),
            "connect_timeout_s": 5, "engines": ["onnxruntime", "ai-edge-litert"], "threads": [1, "all"],
            "batch_sizes": [1, 2], "warmup": 1, "min_runs": 3, "min_time_s": 0.02, "max_time_s": 5.0, **changes}
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in data.items()) + "\n")
    return path


def _edgetl(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(EDGETL), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one ``error:`` line on stderr holding every needle, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def _target(sshd: dict, port: int | None = None) -> str:
    return f"ssh://{getpass.getuser()}@127.0.0.1:{port or sshd['port']}"


def test_bench_over_ssh(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    import onnxruntime

    out = tmp_path / "bench.json"
    proc = _edgetl("bench", bundle, "--target", _target(sshd), "--profile", _profile(sshd, tmp_path), "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["engine"], r["threads_spec"], r["batch"]) for r in rows] == [
        ("onnxruntime", 1, 1), ("onnxruntime", 1, 2), ("onnxruntime", "all", 1), ("onnxruntime", "all", 2)]
    for row in rows:
        lat = row["latency_ms"]
        assert row["status"] == "ok" and lat["runs"] >= 3 and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p99_ms"]
        assert row["cold_start_ms"] == pytest.approx(row["load_ms"] + row["first_run_ms"])
        assert 0 < row["baseline_rss_mb"] <= row["peak_rss_mb"] and row["end_to_end_ms"] is None
        assert row["engine_version"] == onnxruntime.__version__
        assert row["thread_settings"]["threads"] == row["threads"] >= 1
        assert row["machine"]["hostname"] == socket.gethostname() and row["target"] == _target(sshd)
    assert rows[2]["threads"] == len(__import__("os").sched_getaffinity(0))  # "all" resolved on the device
    assert result["machine"]["python_executable"] == sys.executable
    assert result["engines"]["onnxruntime"] == onnxruntime.__version__
    assert result["not_applicable"] == {"ai-edge-litert": "runs tflite bundles, not onnx"}
    assert result["target"]["kind"] == "ssh" and result["target"]["port"] == sshd["port"]
    assert list((tmp_path / "remote").iterdir()) == []  # the run folder was removed on the device
    assert "onnxruntime" in proc.stdout and f"wrote {out}" in proc.stdout


@pytest.mark.parametrize("known", ["wrong key", "empty"])
def test_host_key_is_checked(sshd: dict, bundle: Path, tmp_path: Path, known: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = _keygen(tmp_path / "other_host_key")
    known_hosts.write_text(f"[127.0.0.1]:{sshd['port']} {other}\n" if known == "wrong key" else "")
    profile = _profile(sshd, tmp_path, known_hosts=str(known_hosts))
    out = tmp_path / "bench.json"
    proc = _edgetl("bench", bundle, "--target", _target(sshd), "--profile", profile, "--json", out)
    _one_line_error(proc, "host key verification failed", "ssh-keyscan")
    assert not out.exists() and not (tmp_path / "remote").exists()  # nothing was copied


def test_silent_port_times_out(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        profile = _profile(sshd, tmp_path, connect_timeout_s=2)
        start = time.monotonic()
        proc = _edgetl("bench", bundle, "--target", _target(sshd, silent.getsockname()[1]), "--profile", profile)
        elapsed = time.monotonic() - start
    _one_line_error(proc, "connection timed out after 2 s")
    assert elapsed < 30


def test_closed_port_is_refused(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    proc = _edgetl("bench", bundle, "--target", _target(sshd, _free_port()), "--profile", _profile(sshd, tmp_path))
    _one_line_error(proc, "connection refused", "is sshd running")


def test_device_python_without_engine(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = tmp_path / "bare" / "bin" / "python"
    proc = _edgetl("bench", bundle, "--target", _target(sshd), "--profile", _profile(sshd, tmp_path, python=str(bare)))
    _one_line_error(proc, "lacks numpy, onnxruntime", f"{bare} -m pip install numpy onnxruntime")


def test_device_without_python(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    profile = _profile(sshd, tmp_path, python=str(tmp_path / "no-such-python"))
    proc = _edgetl("bench", bundle, "--target", _target(sshd), "--profile", profile)
    _one_line_error(proc, "has no Python", "set python:")


def test_profile_typo_is_named(sshd: dict, bundle: Path, tmp_path: Path) -> None:
    profile = _profile(sshd, tmp_path)
    profile.write_text(profile.read_text().replace("identity_file:", "identity_fil:"))
    proc = _edgetl("bench", bundle, "--target", _target(sshd), "--profile", profile)
    _one_line_error(proc, "unknown key(s)", "identity_fil", "known keys:", "identity_file")


def test_unknown_target_lists_known(bundle: Path) -> None:
    proc = _edgetl("bench", bundle, "--target", "raspberry-pi-5")
    _one_line_error(proc, "unknown target 'raspberry-pi-5'", "local-cpu", "raspberry-pi-4", "ssh://user@host")


def test_targets_probes_the_device(sshd: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from edgetl.bench.targets import describe_targets

    _profile(sshd, tmp_path, name="test-device", host="127.0.0.1", user=getpass.getuser(), port=sshd["port"])
    _profile(sshd, tmp_path, name="test-gone", host="127.0.0.1", port=_free_port())
    monkeypatch.setenv("EDGETL_TARGETS_DIR", str(tmp_path))
    device, gone = describe_targets(["test-device", "test-gone"])
    assert device["available"] is True and f"onnxruntime {onnxruntime.__version__}" in device["status"]
    assert "ai-edge-litert" in device["status"]
    assert gone["available"] is False and "connection refused" in gone["status"]
