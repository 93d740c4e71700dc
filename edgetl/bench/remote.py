"""Benchmark on a device over SSH: copy the bundle and the one-file runner, run it there, bring the JSON back.

Everything goes through the system's OpenSSH client with argument lists (no local shell); the one
command line the device's shell sees is made with :func:`shlex.join`, so every argument stays one word.
Host keys are always checked (``StrictHostKeyChecking=yes`` by default, ``accept-new`` if the profile
says so, never ``no``), ``BatchMode=yes`` means no password prompt can hang the benchmark, and
``ConnectTimeout`` bounds the connection and the SSH handshake. The copy is a tar stream the device's
Python unpacks (no scp, no tar needed there); the run folder is removed after the run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetl.bench import device_runner
from edgetl.bench.targets import TargetProfile
from edgetl.errors import BenchmarkError, ConfigError

log = logging.getLogger("edgetl")
RUNNER_FILE = Path(device_runner.__file__)
_EXTRACT = (
    "import os, sys, tarfile\n"
    "d = sys.argv[1]\n"
    "os.makedirs(d, exist_ok=True)\n"
    "with tarfile.open(fileobj=sys.stdin.buffer, mode='r|') as t:\n"
    "    t.extractall(d, filter='data') if hasattr(tarfile, 'data_filter') else t.extractall(d)\n"
    "print('copied')\n"
)
_RESULT = "result "
_PROGRESS = "progress "


def ssh_command(profile: TargetProfile, remote: list[str]) -> list[str]:
    """The ``ssh`` argument list that runs ``remote`` (one word per element) on the profile's device.

    Raises:
        ConfigError: The profile has no host.
    """
    if not profile.host:
        raise ConfigError(f"target {profile.name!r} has no host",
                          f"give one: --target ssh://user@host --profile {profile.name}")
    args = ["ssh", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={profile.host_key_checking}",
            "-o", f"ConnectTimeout={max(1, round(profile.connect_timeout_s))}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR",
            "-p", str(profile.port)]
    if profile.known_hosts:
        args += ["-o", f"UserKnownHostsFile={os.path.expanduser(profile.known_hosts)}"]
    if profile.identity_file:
        args += ["-i", os.path.expanduser(profile.identity_file), "-o", "IdentitiesOnly=yes"]
    if profile.user:
        args += ["-l", profile.user]
    return [*args, "--", profile.host, shlex.join(remote)]


def probe_device(profile: TargetProfile, timeout_s: float | None = None) -> dict[str, Any]:
    """The device's machine, Python, numpy and engine versions (the runner read from stdin; nothing copied).

    Raises:
        BenchmarkError: The device cannot be reached or has no such Python (one line saying why).
    """
    stdout = _ssh(profile, [profile.python, "-", "--probe"], RUNNER_FILE.read_bytes(),
                  timeout_s or profile.connect_timeout_s + 60, "probe").stdout
    return _parse_result(profile, stdout.decode(errors="replace"))


def bench_remote(profile: TargetProfile, bundle: Path, jobs: list[dict[str, Any]],
                 on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``jobs`` on the device: copy, run, bring back, remove the run folder there.

    Args:
        profile: An ``ssh`` profile with a host.
        bundle: The bundle folder.
        jobs: Jobs as :func:`edgetl.bench.runner._jobs` makes them (``threads_spec`` resolved on the device).
        on_progress: Called with each finished job's label.

    Returns:
        The runner's result: ``machine``, ``python_executable``, ``numpy``, ``engines`` (versions or None)
        and ``rows``.

    Raises:
        BenchmarkError: Unreachable device, host key refused, no Python there, numpy or every needed engine
            missing (what to install is said), or a job failed.
    """
    run_dir = f"{profile.remote_dir.rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
    plan = {"bundle": "bundle", "jobs": [{k: v for k, v in j.items() if k != "bundle"} for j in jobs]}
    _ssh(profile, [profile.python, "-c", _EXTRACT, run_dir], _tar(bundle, plan), profile.connect_timeout_s + 600,
         "copy")
    result = _run(profile, [profile.python, f"{run_dir}/device_runner.py", run_dir, "--cleanup"],
                  _run_timeout(profile, jobs), on_progress)
    _check_installed(profile, result, jobs)
    for row in result["rows"]:
        if "error" in row:
            raise BenchmarkError(f"{profile.address}: {row['engine']}: {row['error']}")
    return result


def _tar(bundle: Path, plan: dict[str, Any]) -> bytes:
    """The bundle under ``bundle/``, the runner and ``plan.json``, as an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(bundle, arcname="bundle", filter=_plain)
        tar.add(RUNNER_FILE, arcname="device_runner.py")
        data = json.dumps(plan).encode()
        info = tarfile.TarInfo("plan.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Regular files and folders only, owned by nobody in particular."""
    if not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _run_timeout(profile: TargetProfile, jobs: list[dict[str, Any]]) -> float:
    per_job = 2 * profile.max_time_s + device_runner.CHILD_OVERHEAD_S
    return profile.connect_timeout_s + per_job * max(1, len(jobs))


def _ssh(profile: TargetProfile, remote: list[str], stdin: bytes, timeout_s: float,
         step: str) -> subprocess.CompletedProcess:
    """Run ``remote`` on the device with ``stdin``; raise a one-line error when ssh or the command fails."""
    command = ssh_command(profile, remote)
    log.debug("ssh %s: %s", step, command[:-1])
    try:
        proc = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise BenchmarkError("the ssh client is not installed", "install OpenSSH: apt-get install openssh-client") \
            from None
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"{profile.address}: no answer after {timeout_s:.0f} s ({step})",
                             "check that the device is on and reachable") from None
    if proc.returncode != 0 and not proc.stdout.strip().startswith(b"result "):
        raise _failure(profile, proc.returncode, proc.stderr.decode(errors="replace"), step)
    return proc


def _run(profile: TargetProfile, remote: list[str], timeout_s: float,
         on_progress: Callable[[str], None] | None) -> dict[str, Any]:
    """Run the device runner, reporting its ``progress`` lines as they come; its result line parsed."""
    command = ssh_command(profile, remote)
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True)
        except FileNotFoundError:
            raise BenchmarkError("the ssh client is not installed",
                                 "install OpenSSH: apt-get install openssh-client") from None
        lines = _read_lines(proc, timeout_s, on_progress)
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    if lines is None:
        raise BenchmarkError(f"{profile.address}: no result after {timeout_s:.0f} s", "lower max_time_s")
    stdout = "\n".join(lines)
    if _RESULT not in stdout:
        raise _failure(profile, proc.returncode, err, "run")
    return _parse_result(profile, stdout)


def _read_lines(proc: subprocess.Popen, timeout_s: float,
                on_progress: Callable[[str], None] | None) -> list[str] | None:
    """Every stdout line of ``proc``; None (and ``proc`` killed) past ``timeout_s``."""
    import threading

    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(_PROGRESS) and on_progress:
                on_progress(line[len(_PROGRESS):].strip())
        proc.wait()
    finally:
        timer.cancel()
    return None if fired.is_set() else lines


def _parse_result(profile: TargetProfile, stdout: str) -> dict[str, Any]:
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(_RESULT)), None)
    if line is None:
        raise BenchmarkError(f"{profile.address}: the device runner printed no result",
                             f"run `{profile.python} --version` on the device to check its Python")
    result = json.loads(line[len(_RESULT):])
    if result.get("missing"):
        raise _missing(profile, result, result["missing"])
    return result


def _check_installed(profile: TargetProfile, result: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Fail with what to install when none of the jobs' engines is on the device."""
    needed = sorted({job["engine"] for job in jobs})
    if needed and all(result["engines"].get(name) is None for name in needed):
        raise _missing(profile, result, [device_runner.ENGINES[name][1] for name in needed])


def _missing(profile: TargetProfile, result: dict[str, Any], packages: list[str]) -> BenchmarkError:
    python = profile.python
    which = "one of " if len(packages) > 1 and "numpy" not in packages else ""
    return BenchmarkError(
        f"{profile.address}: the device's Python ({result.get('python_executable') or python}) lacks "
        f"{which}{', '.join(packages)}",
        f"install on the device: {shlex.join([python, '-m', 'pip', 'install', *packages])} "
        "(or set python: in the profile to an interpreter that has them)",
    )


def _failure(profile: TargetProfile, code: int, stderr: str, step: str) -> BenchmarkError:
    """A one-line error for a failed ssh call: what went wrong and how to fix it."""
    where = profile.address
    text = " ".join(stderr.split())
    lowered = text.lower()
    known = [
        (("host key verification failed", "remote host identification has changed"),
         f"{where}: the device's host key is not known or does not match (host key verification failed)",
         f"check the key's fingerprint, then add it: ssh-keyscan -p {profile.port} {profile.host} >> "
         f"{profile.known_hosts or '~/.ssh/known_hosts'} (or set known_hosts: in the profile)"),
        (("timed out", "timeout"),
         f"{where}: connection timed out after {profile.connect_timeout_s:g} s",
         "check that the device is on, on this network and running sshd (or raise connect_timeout_s)"),
        (("connection refused",), f"{where}: connection refused", f"is sshd running on port {profile.port}?"),
        (("could not resolve hostname", "name or service not known"), f"{where}: unknown host {profile.host!r}",
         "check the host name, or use the device's IP address"),
        (("no route to host", "network is unreachable"), f"{where}: host unreachable", "check the network"),
        (("permission denied",), f"{where}: login refused (permission denied)",
         "set identity_file: in the profile to a key the device accepts (ssh-copy-id user@host)"),
    ]
    if code == 255:
        for needles, message, hint in known:
            if any(n in lowered for n in needles):
                return BenchmarkError(message, hint)
        return BenchmarkError(f"{where}: ssh failed ({step}): {text or 'exit code 255'}")
    if code == 127 or ("no such file or directory" in lowered and profile.python in text):
        return BenchmarkError(f"{where}: the device has no Python at {profile.python!r}",
                              "set python: in the profile to the device's interpreter, e.g. /usr/bin/python3")
    tail = text[-300:] or f"exit code {code}"
    return BenchmarkError(f"{where}: the device runner failed ({step}): {tail}")
