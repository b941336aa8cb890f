"""Timing discipline: warm-up, then timed runs until both a count and a duration are reached.

Percentiles rather than means, because a shared machine's stalls land in the tail and would drag a mean;
FPS is 1000 / median at batch 1. ``interleaved_latencies`` times several runners round-robin so that
machine noise hits all of them alike and their ratios stay honest.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from segedge.backends.base import Runner


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        ms = np.asarray(samples, dtype=np.float64) * 1000.0
        if ms.size == 0:
            raise ValueError("no timing samples")
        return cls(
            runs=int(ms.size),
            median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            min_ms=float(ms.min()),
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "fps": self.fps}


def measure_latency(
    runner: Runner, batch: np.ndarray, warmup: int = 3, min_runs: int = 10, min_seconds: float = 1.0
) -> LatencyStats:
    """Time ``runner.infer(batch)`` on an active runner."""
    for _ in range(warmup):
        runner.infer(batch)
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        runner.infer(batch)
        samples.append(time.perf_counter() - t0)
    return LatencyStats.from_seconds(samples)


def interleaved_latencies(
    runners: dict[str, Runner], batch: np.ndarray, warmup: int = 3, rounds: int = 10
) -> dict[str, LatencyStats]:
    """Time active runners round-robin, one call each per round, for side-by-side ratios."""
    for runner in runners.values():
        for _ in range(warmup):
            runner.infer(batch)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.infer(batch)
            samples[name].append(time.perf_counter() - t0)
    return {name: LatencyStats.from_seconds(s) for name, s in samples.items()}


def side_by_side_latencies(
    runners: dict[str, Runner], batch: np.ndarray, warmup: int = 3, rounds: int = 10
) -> dict[str, LatencyStats]:
    """:func:`interleaved_latencies` of runners not yet active: activates them all, times, deactivates."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        return interleaved_latencies(runners, batch, warmup=warmup, rounds=rounds)


class PeakMemory:
    """Peak resident memory of this process during a block, in MiB (Linux: VmHWM reset via clear_refs).

    Process-wide by nature: it includes the runtime and the model, which is what a deployment pays.
    Where the high-water mark cannot be reset, the figure is the process's peak so far; ``reset_ok`` says so.
    """

    def __enter__(self) -> "PeakMemory":
        self.reset_ok = _reset_peak_rss()
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = _peak_rss_mb()


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return None


def median_ms(fn, repeats: int = 10) -> float:
    """Median wall time of ``fn()`` in ms: for pre/post-processing, timed apart from inference."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples) * 1000.0)
