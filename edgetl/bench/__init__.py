"""Benchmarks: time a bundle on a target (latency percentiles, throughput, cold start, memory, end-to-end).

``bench_bundle`` is the front end; targets are YAML profiles (``targets/*.yaml``), engines are registered
in ``BENCH_ENGINES``. Nothing here imports torch unless the ``torch`` engine runs.
"""

from edgetl.bench.engines import BENCH_ENGINES, BenchEngine, EngineSkipped
from edgetl.bench.runner import bench_bundle, render_table
from edgetl.bench.targets import TargetProfile, list_targets, load_target
from edgetl.bench.timing import TimingStats, measure

__all__ = [
    "BENCH_ENGINES",
    "BenchEngine",
    "EngineSkipped",
    "TargetProfile",
    "TimingStats",
    "bench_bundle",
    "list_targets",
    "load_target",
    "measure",
    "render_table",
]
