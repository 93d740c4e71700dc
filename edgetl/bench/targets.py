"""Target profiles (``targets/<name>.yaml``): where to benchmark and which engines, threads, batches to try.

Profiles are looked up in ``$EDGETL_TARGETS_DIR`` (``os.pathsep``-separated folders, searched first) and
then in the repository's ``targets/`` folder; a path to a ``.yaml`` file also works. A target may also be
an SSH address, ``ssh://user@host[:port]``: it takes the rest of its settings from a profile
(``generic-arm64-ssh`` unless another is given, see :func:`resolve_target`).

Kinds: ``local`` runs on this machine; ``ssh`` copies the bundle and a one-file runner to a device over
SSH and runs it there (:mod:`edgetl.bench.remote`); ``fit-only`` is a device edgetl cannot run on
(a microcontroller): only the fit check against its RAM and flash (:mod:`edgetl.bench.fit`) is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import edgetl
from edgetl.config import load_yaml
from edgetl.errors import ConfigError, UnknownNameError

KINDS = ("local", "ssh", "fit-only")
#: Engines the one-file device runner (:mod:`edgetl.bench.device_runner`) can drive on an SSH device.
DEVICE_ENGINES = ("onnxruntime", "openvino", "ai-edge-litert")
HOST_KEY_CHECKING = ("yes", "accept-new")  # never "no": a device's identity is always checked
WEIGHTS_IN = ("ram", "flash")
DEFAULT_SSH_PROFILE = "generic-arm64-ssh"
ALL_THREADS = "all"
ThreadSpec = int | str
_SSH_URL = re.compile(r"^ssh://(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
                      r"(?::(?P<port>\d{1,5}))?/?$")
_HOST = re.compile(r"^(?!-)[A-Za-z0-9._:-]+$")
_USER = re.compile(r"^(?!-)[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class TargetProfile:
    """How to benchmark on one target.

    Attributes:
        name: Profile name (the YAML file's stem unless set).
        description: One line for humans.
        kind: ``local`` (this machine), ``ssh`` (a device reached over SSH) or ``fit-only`` (a device
            edgetl cannot run on: only the fit check).
        engines: Bench engines to run (see ``edgetl.bench.engines.BENCH_ENGINES``); engines that cannot
            run a bundle's format are left out of its sweep.
        threads: Thread counts; ``"all"`` means every core the benchmark process may use (on the device).
        batch_sizes: Batch sizes to time for image models.
        text_batch_sizes: Batch sizes to time for text models.
        seq_lengths: Token sequence lengths to time for text models (clipped to the model's ``max_length``).
        warmup: Untimed calls before timing.
        min_runs: Minimum timed calls per configuration.
        min_time_s: Minimum timed seconds per configuration.
        max_time_s: Stop a configuration after this many seconds even below ``min_runs``.
        env: Environment variables set for every benchmark process (e.g. ``OMP_WAIT_POLICY``).
        host: SSH targets: the device's host name or address (``ssh://`` targets set it).
        user: SSH targets: the login user (default: your SSH default).
        port: SSH targets: the sshd port.
        identity_file: SSH targets: a private key file (default: your SSH agent and keys).
        known_hosts: SSH targets: a known_hosts file to check the device's host key against (default:
            ``~/.ssh/known_hosts``).
        host_key_checking: ``yes`` (the host key must already be known) or ``accept-new`` (trust a
            first-seen key, refuse a changed one).
        python: SSH targets: the device's Python interpreter (it needs numpy and the engine).
        remote_dir: SSH targets: where the bundle and runner are copied (relative to the login folder).
        connect_timeout_s: SSH targets: seconds to wait for the connection and SSH handshake.
        ram_kb: The device's RAM for the model (KB); None: no RAM check.
        flash_kb: The device's flash or storage for the model file (KB); None: no flash check.
        weights_in: ``ram`` (weights are loaded into RAM next to the activations) or ``flash``
            (executed in place from flash, as on microcontrollers).
    """

    name: str
    description: str = ""
    kind: str = "local"
    engines: tuple[str, ...] = ("onnxruntime", "torch")
    threads: tuple[ThreadSpec, ...] = (1, ALL_THREADS)
    batch_sizes: tuple[int, ...] = (1, 32)
    text_batch_sizes: tuple[int, ...] = (1, 8)
    seq_lengths: tuple[int, ...] = (16, 64, 128)
    warmup: int = 5
    min_runs: int = 20
    min_time_s: float = 1.0
    max_time_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict, hash=False)
    host: str | None = None
    user: str | None = None
    port: int = 22
    identity_file: str | None = None
    known_hosts: str | None = None
    host_key_checking: str = "yes"
    python: str = "python3"
    remote_dir: str = ".cache/edgetl-bench"
    connect_timeout_s: float = 10.0
    ram_kb: int | None = None
    flash_kb: int | None = None
    weights_in: str = "ram"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key in ("engines", "threads", "batch_sizes", "text_batch_sizes", "seq_lengths"):
            value = getattr(self, key)
            object.__setattr__(self, key, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if not isinstance(self.env, dict):
            raise ConfigError(f"target {self.name!r}: env must be a mapping of NAME: value")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in self.env.items()})
        _validate(self)

    @property
    def address(self) -> str | None:
        """``ssh://user@host:port`` for SSH targets, else None."""
        if self.kind != "ssh" or not self.host:
            return None
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def _validate(p: TargetProfile) -> None:
    where = f"target {p.name!r}"
    if p.kind not in KINDS:
        raise ConfigError(f"{where}: kind {p.kind!r} is not supported yet", f"use one of: {', '.join(KINDS)}")
    if not p.engines or not p.threads or not p.batch_sizes:
        raise ConfigError(f"{where}: engines, threads and batch_sizes need at least one value each")
    for t in p.threads:
        _check_thread_spec(t)
    for key in ("batch_sizes", "text_batch_sizes"):
        if not getattr(p, key) or not all(_positive_int(b) for b in getattr(p, key)):
            raise ConfigError(f"{where}: {key} must be whole numbers >= 1, got {list(getattr(p, key))}")
    if not p.seq_lengths or not all(_positive_int(n) and n >= 2 for n in p.seq_lengths):
        raise ConfigError(f"{where}: seq_lengths must be whole numbers >= 2, got {list(p.seq_lengths)}")
    if not _positive_int(p.min_runs) or p.warmup < 0 or not 0 <= p.min_time_s <= p.max_time_s:
        raise ConfigError(
            f"{where}: invalid timing limits",
            "use warmup >= 0, min_runs >= 1 and 0 <= min_time_s <= max_time_s",
        )
    _validate_limits(p, where)
    if p.kind == "ssh":
        _validate_ssh(p, where)


def _validate_limits(p: TargetProfile, where: str) -> None:
    for key in ("ram_kb", "flash_kb"):
        value = getattr(p, key)
        if value is not None and not _positive_int(value):
            raise ConfigError(f"{where}: {key} must be a whole number of KB >= 1, got {value!r}",
                              "e.g. ram_kb: 512 for 512 KB, or leave it out for no check")
    if p.weights_in not in WEIGHTS_IN:
        raise ConfigError(f"{where}: weights_in must be one of {', '.join(WEIGHTS_IN)}, got {p.weights_in!r}")
    if p.kind == "fit-only" and p.ram_kb is None and p.flash_kb is None:
        raise ConfigError(f"{where}: a fit-only target needs ram_kb or flash_kb", "add the device's limits")


def _validate_ssh(p: TargetProfile, where: str) -> None:
    if p.host is not None and not _HOST.match(str(p.host)):
        raise ConfigError(f"{where}: host {p.host!r} is not a host name or address")
    if p.user is not None and not _USER.match(str(p.user)):
        raise ConfigError(f"{where}: user {p.user!r} is not a user name")
    if not _positive_int(p.port) or p.port > 65535:
        raise ConfigError(f"{where}: port must be 1-65535, got {p.port!r}")
    if p.host_key_checking not in HOST_KEY_CHECKING:
        raise ConfigError(f"{where}: host_key_checking must be one of {', '.join(HOST_KEY_CHECKING)}, got "
                          f"{p.host_key_checking!r}", "host keys are always checked; add the key to known_hosts")
    if not isinstance(p.connect_timeout_s, (int, float)) or p.connect_timeout_s <= 0:
        raise ConfigError(f"{where}: connect_timeout_s must be > 0, got {p.connect_timeout_s!r}")
    if not str(p.python).strip() or not str(p.remote_dir).strip() or str(p.python).startswith("-"):
        raise ConfigError(f"{where}: python and remote_dir must be non-empty paths")
    unsupported = [e for e in p.engines if e not in DEVICE_ENGINES]
    if unsupported:
        raise ConfigError(f"{where}: engine(s) {', '.join(unsupported)} cannot run on an SSH device",
                          f"use {', '.join(DEVICE_ENGINES)}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_thread_spec(threads: ThreadSpec) -> None:
    if threads != ALL_THREADS and not _positive_int(threads):
        raise ConfigError(f"threads must be a whole number >= 1 or 'all', got {threads!r}")


def resolve_threads(threads: ThreadSpec) -> int:
    """A thread count as an int: ``"all"`` is every CPU this process may run on.

    Raises:
        ConfigError: Neither ``"all"`` nor a whole number >= 1.
    """
    _check_thread_spec(threads)
    return available_cores() if threads == ALL_THREADS else int(threads)


def available_cores() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def target_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    extra = [Path(p) for p in os.environ.get("EDGETL_TARGETS_DIR", "").split(os.pathsep) if p]
    return [*extra, Path(edgetl.__file__).resolve().parents[1] / "targets"]


def list_targets() -> list[str]:
    """Names of every profile found, sorted."""
    return sorted({f.stem for d in target_dirs() if d.is_dir() for f in d.glob("*.yaml")})


def load_target(name: str | Path) -> TargetProfile:
    """Load a target profile by name (or from a ``.yaml`` path).

    Raises:
        UnknownNameError: No profile of that name (the known ones are listed).
        ConfigError: The YAML has an unknown key (named) or an invalid value.
    """
    path = _find(name)
    data = load_yaml(path)
    known = {f.name for f in fields(TargetProfile)} - {"source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in target {path}: {', '.join(unknown)}",
            f"known keys: {', '.join(sorted(known))}",
        )
    data.setdefault("name", path.stem)
    try:
        return TargetProfile(**data, source=str(path))
    except TypeError as exc:
        raise ConfigError(f"invalid target {path}: {exc}") from None


def resolve_target(target: str | Path | TargetProfile, profile: str | Path | None = None) -> TargetProfile:
    """A target as a profile: a loaded profile, a profile name or path, or ``ssh://user@host[:port]``.

    Args:
        target: The target.
        profile: For ``ssh://`` targets: the profile giving engines, threads, python, limits...
            (default ``generic-arm64-ssh``); its host, user and port are replaced by the address's.

    Raises:
        UnknownNameError: Unknown target or profile (the known ones are listed).
        ConfigError: A malformed ``ssh://`` address, or ``profile`` given for a target that is not one.
    """
    if isinstance(target, TargetProfile):
        return target
    if str(target).startswith("ssh://"):
        user, host, port = parse_ssh_address(str(target))
        base = load_target(profile or DEFAULT_SSH_PROFILE)
        if base.kind != "ssh":
            ssh_profiles = [n for n in list_targets() if _kind_of(n) == "ssh"]
            raise ConfigError(f"profile {base.name!r} is a {base.kind} profile, not an ssh one",
                              f"use one of: {', '.join(ssh_profiles) or 'none'}")
        return replace(base, host=host, user=user or base.user, port=port or base.port)
    if profile is not None:
        raise ConfigError(f"--profile is for ssh:// targets, not {str(target)!r}",
                          "write the target as ssh://user@host, or leave --profile out")
    return load_target(target)


def _kind_of(name: str) -> str | None:
    try:
        return load_target(name).kind
    except ConfigError:
        return None


def parse_ssh_address(address: str) -> tuple[str | None, str, int | None]:
    """``(user, host, port)`` of ``ssh://[user@]host[:port]``.

    Raises:
        ConfigError: Not of that form.
    """
    match = _SSH_URL.match(address)
    if not match or match["host"].startswith("-"):
        raise ConfigError(f"{address!r} is not an SSH target", "write it as ssh://user@host or ssh://user@host:2222")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{address!r}: port {port} is not 1-65535")
    return match["user"], match["host"].strip("[]"), port


def _find(name: str | Path) -> Path:
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    for folder in target_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_targets()) or "none"
    hint = f"choose one of: {known}, or ssh://user@host (or add targets/{name}.yaml)"
    raise UnknownNameError(f"unknown target {str(name)!r}", hint)


def describe_targets(names: list[str] | None = None, probe: bool = True) -> list[dict[str, object]]:
    """Every profile (or ``names``) with its kind, where it runs, engines, limits and availability.

    Args:
        names: Only these profiles (default: all found).
        probe: Check availability: local engines' packages, SSH devices over SSH (in parallel, each
            bounded by its ``connect_timeout_s``), nothing for fit-only targets.

    Returns:
        One dict per profile: ``name``, ``kind``, ``description``, ``where``, ``engines``, ``ram_kb``,
        ``flash_kb``, ``available`` (True, False, or None when not probed or not applicable) and ``status``.
    """
    from concurrent.futures import ThreadPoolExecutor

    profiles = []
    for name in names or list_targets():
        try:
            profiles.append(load_target(name))
        except ConfigError as exc:  # a broken profile is listed with its error, not hidden
            profiles.append(exc)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda p: _describe(p, probe), profiles))


def _describe(profile: TargetProfile | ConfigError, probe: bool) -> dict[str, object]:
    if isinstance(profile, ConfigError):
        return {"name": "?", "kind": "?", "description": "", "where": "", "engines": [], "ram_kb": None,
                "flash_kb": None, "available": False, "status": f"invalid: {profile.one_line()}"}
    where = {"local": "this machine", "fit-only": "none (fit check only)"}.get(profile.kind) or (
        profile.address or "ssh://user@host (give the host)")
    available, status = _probe(profile) if probe else (None, "not probed")
    return {"name": profile.name, "kind": profile.kind, "description": profile.description, "where": where,
            "engines": [] if profile.kind == "fit-only" else list(profile.engines), "ram_kb": profile.ram_kb,
            "flash_kb": profile.flash_kb, "available": available, "status": status}


def _probe(profile: TargetProfile) -> tuple[bool | None, str]:
    """Whether the target can run now, and one line saying what was found."""
    from edgetl.errors import EdgetlError

    if profile.kind == "fit-only":
        return None, "fit check only: edgetl bench checks model size and peak activations against the limits"
    if profile.kind == "local":
        return _probe_local(profile)
    if not profile.host:
        return None, f"needs a host: --target ssh://user@host --profile {profile.name}"
    from edgetl.bench.remote import probe_device

    try:
        device = probe_device(profile)
    except EdgetlError as exc:
        return False, f"unreachable: {exc.one_line()}"
    versions = {name: device["engines"].get(name) for name in profile.engines}
    found = ", ".join(f"{n} {v}" if v else f"{n} missing" for n, v in versions.items())
    machine = device["machine"]
    numpy = "" if device["numpy"] else "; numpy missing"
    ok = bool(device["numpy"]) and any(versions.values())
    what = f"{machine.get('board') or machine['cpu']} ({machine['arch']}), Python {machine['python']}"
    return ok, f"{what}: {found}{numpy}"


def host_skip_reason(engine: str) -> str | None:
    """Why ``engine`` cannot run on this machine whatever the bundle (no GPU, say), or None.

    Asks the engine's optional ``host_check()`` (the GPU engines have one; CPU engines do not and always
    pass): it raises :class:`~edgetl.bench.engines.EngineSkipped` with the reason.
    """
    from edgetl.bench.engines import BENCH_ENGINES, EngineSkipped

    host_check = getattr(BENCH_ENGINES.get(engine), "host_check", None)
    if host_check is None:
        return None
    try:
        host_check()
    except EngineSkipped as exc:
        return exc.message
    return None


def _probe_local(profile: TargetProfile) -> tuple[bool, str]:
    """Available when one engine's package is installed and its host check (a GPU...) passes.

    The status names each engine with its package version; engines that cannot run here are grouped
    under their reason (``no CUDA GPU here: ... (torch-cuda, onnxruntime-cuda)``).
    """
    from edgetl.bench.engines import BENCH_ENGINES, package_version

    found, reasons = [], {}
    for name in profile.engines:
        version = package_version(BENCH_ENGINES.get(name).package) if name in BENCH_ENGINES else "not registered"
        reason = None if version in ("not installed", "not registered") else host_skip_reason(name)
        if reason is None:
            found.append((name, version))
        else:
            reasons.setdefault(reason, []).append(name)
    ok = any(v not in ("not installed", "not registered") for _, v in found)
    parts = [f"{n} {v}" for n, v in found] + [f"{why} ({', '.join(names)})" for why, names in reasons.items()]
    return ok, "; ".join(parts) if reasons else ", ".join(parts)
