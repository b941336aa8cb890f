import numpy as np
import pytest

from segedge.verify.timing import LatencyStats, interleaved_latencies, measure_latency
from segedge.backends.base import Runner, TensorSpec


class CountingRunner(Runner):
    """A backend that does no work but counts calls: the timing loop's contract, not its speed."""

    def _activate(self):
        self.calls = 0
        self.input_spec = TensorSpec("input", (1, 3, None, None), np.dtype(np.float32))

    def _infer(self, batch):
        self.calls += 1
        return batch


def test_stats_from_known_samples():
    s = LatencyStats.from_seconds([0.010, 0.020, 0.030, 0.040, 0.100])
    assert s.median_ms == pytest.approx(30.0)
    assert s.min_ms == pytest.approx(10.0)
    assert s.p90_ms == pytest.approx(76.0)
    assert s.fps == pytest.approx(1000 / 30)


def test_measure_latency_warms_up_then_runs_at_least_min_runs():
    batch = np.zeros((1, 3, 4, 4), np.float32)
    with CountingRunner() as runner:
        stats = measure_latency(runner, batch, warmup=2, min_runs=7, min_seconds=0.0)
    assert stats.runs == 7
    assert runner.calls == 9


def test_interleaved_gives_each_runner_the_same_number_of_rounds():
    batch = np.zeros((1, 3, 4, 4), np.float32)
    a, b = CountingRunner(), CountingRunner()
    with a, b:
        stats = interleaved_latencies({"a": a, "b": b}, batch, warmup=1, rounds=5)
    assert stats["a"].runs == stats["b"].runs == 5
    assert a.calls == b.calls == 6


def test_empty_samples_are_an_error():
    with pytest.raises(ValueError, match="no timing samples"):
        LatencyStats.from_seconds([])
