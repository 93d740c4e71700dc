"""Target profiles (``targets/<name>.yaml``): where to benchmark and which engines, threads, batches to try.

Profiles are looked up in ``$EDGETL_TARGETS_DIR`` (``os.pathsep``-separated folders, searched first) and
then in the repository's ``targets/`` folder; a path to a ``.yaml`` file also works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import edgetl
from edgetl.config import load_yaml
from edgetl.errors import ConfigError, UnknownNameError

KINDS = ("local",)  # ssh and adb devices come later
ALL_THREADS = "all"
ThreadSpec = int | str


@dataclass(frozen=True)
class TargetProfile:
    """How to benchmark on one target.

    Attributes:
        name: Profile name (the YAML file's stem unless set).
        description: One line for humans.
        kind: ``local`` (this machine); remote kinds come later.
        engines: Bench engines to run (see ``edgetl.bench.engines.BENCH_ENGINES``).
        threads: Thread counts; ``"all"`` means every core this process may use.
        batch_sizes: Batch sizes to time for image models.
        text_batch_sizes: Batch sizes to time for text models.
        seq_lengths: Token sequence lengths to time for text models (clipped to the model's ``max_length``).
        warmup: Untimed calls before timing.
        min_runs: Minimum timed calls per configuration.
        min_time_s: Minimum timed seconds per configuration.
        max_time_s: Stop a configuration after this many seconds even below ``min_runs``.
        env: Environment variables set for every benchmark process (e.g. ``OMP_WAIT_POLICY``).
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
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key in ("engines", "threads", "batch_sizes", "text_batch_sizes", "seq_lengths"):
            value = getattr(self, key)
            object.__setattr__(self, key, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if not isinstance(self.env, dict):
            raise ConfigError(f"target {self.name!r}: env must be a mapping of NAME: value")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in self.env.items()})
        _validate(self)

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
        resolve_threads(t)
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


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def resolve_threads(threads: ThreadSpec) -> int:
    """A thread count as an int: ``"all"`` is every CPU this process may run on.

    Raises:
        ConfigError: Neither ``"all"`` nor a whole number >= 1.
    """
    if threads == ALL_THREADS:
        return available_cores()
    if not _positive_int(threads):
        raise ConfigError(f"threads must be a whole number >= 1 or 'all', got {threads!r}")
    return int(threads)


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


def _find(name: str | Path) -> Path:
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    for folder in target_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_targets()) or "none"
    hint = f"choose one of: {known} (or add targets/{name}.yaml)"
    raise UnknownNameError(f"unknown target {str(name)!r}", hint)
