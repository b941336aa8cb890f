"""Runner overhead and harness honesty, as pytest-benchmark suites (not part of the default test run).

    python -m pytest benchmarks/test_runner_overhead.py --benchmark-only
    python benchmarks/test_runner_overhead.py          # prints the two ratios side by side

1. ``OnnxRuntimeRunner.infer`` against a raw ``onnxruntime`` ``session.run`` on the same model, configured
   alike (threads, spinning off): the validation layer's overhead (target ≤ 2 %).
2. ``segedge.verify.timing.measure_latency`` against an independent ``time.perf_counter`` loop on the same runner:
   the harness reports what a plain loop sees (target within 5 %).

The model is a BiSeNet at width 0.5 and 256×512 with random weights: timing does not depend on the weights.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

SIZE = (256, 512)
THREADS = 2


def _model(directory: Path) -> Path:
    import torch

    from segedge.graph.export import onnx_from_torch
    from segedge.models.registry import get_spec

    torch.manual_seed(0)
    spec = get_spec("bisenet")
    path = directory / "bisenet.onnx"
    onnx_from_torch(spec.build(num_classes=10, width=0.5), spec, path, SIZE)
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("overhead"))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((1, 3, *SIZE), dtype=np.float32)


def _raw_session(path: Path, spin: bool = False):
    """A plain session configured as the runner configures its own (same threads, same spinning)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_raw_session_run(benchmark, model_path, batch):
    session = _raw_session(model_path)
    benchmark(session.run, None, {"input": batch})


def test_runner_infer(benchmark, model_path, batch):
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model_path, threads=THREADS) as runner:
        benchmark(runner.infer, batch)


def side_by_side(rounds: int = 30) -> None:
    from segedge.verify.timing import measure_latency
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    def timed(fn, n):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        path = _model(Path(tmp))
        x = np.random.default_rng(0).standard_normal((1, 3, *SIZE), dtype=np.float32)
        raw, wrapped, plain, harness, spinning = [], [], [], [], []
        session = _raw_session(path)
        with OnnxRuntimeRunner(path, threads=THREADS) as runner:
            for _ in range(3):
                session.run(None, {"input": x})
                runner.infer(x)
            for _ in range(rounds // 5):  # blocks of 5 alternate, so drift hits all alike
                raw += timed(lambda: session.run(None, {"input": x}), 5)
                wrapped += timed(lambda: runner.infer(x), 5)
                plain += timed(lambda: runner.infer(x), 5)
                harness.append(measure_latency(runner, x, warmup=0, min_runs=5, min_seconds=0.0).median_ms)
        del session
        spin_session = _raw_session(path, spin=True)
        spin_session.run(None, {"input": x})
        spinning = timed(lambda: spin_session.run(None, {"input": x}), rounds)
    med = lambda v: 1000 * float(np.median(v))  # noqa: E731
    raw_ms, wrapped_ms, plain_ms, spin_ms = med(raw), med(wrapped), med(plain), med(spinning)
    harness_ms = float(np.median(harness))
    print(f"bisenet w0.5 {SIZE[0]}x{SIZE[1]}, {THREADS} threads, {rounds} runs each")
    print(f"raw session.run {raw_ms:.2f} ms | runner.infer {wrapped_ms:.2f} ms | overhead "
          f"{100 * (wrapped_ms / raw_ms - 1):+.2f} % (target <= 2 %)")
    print(f"harness median {harness_ms:.2f} ms | plain loop {plain_ms:.2f} ms | difference "
          f"{100 * (harness_ms / plain_ms - 1):+.2f} % (target within 5 %)")
    print(f"for reference, a session with onnxruntime's default thread spinning, timed alone: {spin_ms:.2f} ms")


if __name__ == "__main__":
    side_by_side()
