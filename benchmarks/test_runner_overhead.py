"""Runner overhead and harness honesty, as pytest-benchmark suites (not part of the default test run).

    python -m pytest benchmarks/test_runner_overhead.py --benchmark-only
    python benchmarks/test_runner_overhead.py          # prints the two ratios side by side

1. ``OnnxRuntimeRunner.infer`` against a raw ``onnxruntime`` ``session.run`` on the same model, same thread
   count: the validation layer's overhead (target ≤ 2 %).
2. ``segedge.bench.measure_latency`` against an independent ``time.perf_counter`` loop on the same runner:
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

    from segedge.export import onnx_from_torch
    from segedge.registry import get_spec

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


def _raw_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_raw_session_run(benchmark, model_path, batch):
    session = _raw_session(model_path)
    benchmark(session.run, None, {"input": batch})


def test_runner_infer(benchmark, model_path, batch):
    from segedge.runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model_path, threads=THREADS) as runner:
        benchmark(runner.infer, batch)


def side_by_side(rounds: int = 30) -> None:
    from segedge.bench import measure_latency
    from segedge.runners import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory() as tmp:
        path = _model(Path(tmp))
        x = np.random.default_rng(0).standard_normal((1, 3, *SIZE), dtype=np.float32)
        session = _raw_session(path)
        raw, wrapped, plain = [], [], []
        with OnnxRuntimeRunner(path, threads=THREADS) as runner:
            for _ in range(3):
                session.run(None, {"input": x})
                runner.infer(x)
            for _ in range(rounds):  # interleaved: noise hits both alike
                t0 = time.perf_counter()
                session.run(None, {"input": x})
                raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                runner.infer(x)
                wrapped.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                runner.infer(x)
                plain.append(time.perf_counter() - t0)
            harness = measure_latency(runner, x, warmup=0, min_runs=rounds, min_seconds=0.0)
    raw_ms, wrapped_ms, plain_ms = (1000 * float(np.median(v)) for v in (raw, wrapped, plain))
    print(f"machine: {sys.platform}, {THREADS} threads, bisenet w0.5 {SIZE[0]}x{SIZE[1]}, {rounds} rounds")
    print(f"raw session.run {raw_ms:.2f} ms | runner.infer {wrapped_ms:.2f} ms | overhead {100 * (wrapped_ms / raw_ms - 1):+.2f} % (target <= 2 %)")
    print(f"harness median {harness.median_ms:.2f} ms | plain loop {plain_ms:.2f} ms | difference "
          f"{100 * (harness.median_ms / plain_ms - 1):+.2f} % (target within 5 %)")


if __name__ == "__main__":
    side_by_side()
