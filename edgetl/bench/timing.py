"""The timing loop: warm-up, then timed calls until a minimum count AND a minimum time are both reached."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgetl.errors import ConfigError


@dataclass(frozen=True)
class TimingStats:
    """Latency statistics of one timed function, in milliseconds.

    Attributes:
        runs: Timed calls (warm-up excluded).
        warmup: Untimed calls made first.
        total_s: Wall time of the timed calls.
        p50_ms: Median latency.
        p90_ms: 90th percentile latency.
        p99_ms: 99th percentile latency.
        mean_ms: Mean latency.
        std_ms: Standard deviation of the latency.
        min_ms: Fastest call.
        max_ms: Slowest call.
        hit_time_limit: True when ``max_time_s`` stopped the loop before ``min_runs`` was reached.
    """

    runs: int
    warmup: int
    total_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    hit_time_limit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_latencies(
        cls, latencies_ms: np.ndarray, warmup: int = 0, hit_time_limit: bool = False
    ) -> TimingStats:
        """Summarise a non-empty array of per-call latencies (ms)."""
        lat = np.asarray(latencies_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        return cls(
            runs=int(lat.size), warmup=warmup, total_s=float(lat.sum() / 1000), p50_ms=float(p50),
            p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(lat.mean()), std_ms=float(lat.std()),
            min_ms=float(lat.min()), max_ms=float(lat.max()), hit_time_limit=hit_time_limit,
        )


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 5,
    min_runs: int = 20,
    min_time_s: float = 1.0,
    max_time_s: float = 30.0,
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then timed calls until both minimums are reached.

    Args:
        fn: The work to time (no arguments; its result is discarded).
        warmup: Untimed calls first (allocations, caches, lazy initialisation).
        min_runs: At least this many timed calls...
        min_time_s: ...and at least this much timed wall time.
        max_time_s: Stop anyway after this much timed wall time (at least one call is always timed).

    Returns:
        Latency statistics in milliseconds, measured with ``time.perf_counter_ns``.

    Raises:
        ConfigError: A limit is negative, ``min_runs`` is below 1, or ``max_time_s < min_time_s``.
    """
    from edgetl.bench.device_runner import timed_calls  # one loop for local and device runs

    _check_limits(warmup, min_runs, min_time_s, max_time_s)
    latencies = timed_calls(fn, warmup, min_runs, min_time_s, max_time_s)
    hit_limit = len(latencies) < min_runs
    return TimingStats.from_latencies(np.asarray(latencies) / 1e6, warmup=warmup, hit_time_limit=hit_limit)


def _check_limits(warmup: int, min_runs: int, min_time_s: float, max_time_s: float) -> None:
    if warmup < 0 or min_runs < 1 or min_time_s < 0 or max_time_s < min_time_s:
        raise ConfigError(
            f"invalid timing limits: warmup={warmup}, min_runs={min_runs}, min_time_s={min_time_s}, "
            f"max_time_s={max_time_s}",
            "use warmup >= 0, min_runs >= 1 and 0 <= min_time_s <= max_time_s",
        )


def time_once_ms(fn: Callable[[], Any]) -> float:
    """Wall time of one call of ``fn()`` in milliseconds."""
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6
