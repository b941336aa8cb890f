"""End-to-end FPS of segedge.Predictor on 1080p frames: BiSeNet INT8 (512x1024) on the CPU, with the share of
pre-processing (resize + normalise) and post-processing (scores → mask at the frame's size) beside inference.

Weights are untrained (timing does not depend on them); the INT8 graph is calibrated on 8 synthetic scenes.
Frames are synthetic 1080x1920 scenes. Prints the CPU and its flags and the medians per stage.

    python benchmarks/bench_predictor.py --frames 30
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bisenet")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/segedge-bench-predictor"))
    args = parser.parse_args()

    from segedge.core.hardware import cpu_model
    from segedge.data.synthetic import SyntheticScenes
    from segedge.flows.export import ExportConfig, export_model
    from segedge.flows.predict import Predictor
    from segedge.graph.int8 import Int8Config

    result = export_model(ExportConfig(model=args.model, untrained=True, input_size=(512, 1024), precisions=("int8",),
                                       int8_config=Int8Config(calib_images=8), eval_images=2, store=args.out,
                                       threads=args.threads))
    frames = [SyntheticScenes("val", 4, size=(1080, 1920))[i % 4][0] for i in range(args.frames)]
    rows = {}
    with Predictor(result.directory, precision="int8", threads=args.threads) as predictor:
        predictor(frames[0])  # warm-up
        stages = {"pre": [], "infer": [], "post": []}
        for frame in frames:
            before = (predictor.timings.pre_ms, predictor.timings.infer_ms, predictor.timings.post_ms)
            started = time.perf_counter()
            mask = predictor(frame)
            rows.setdefault("e2e", []).append(1000 * (time.perf_counter() - started))
            for key, old, new in zip(stages, before, (predictor.timings.pre_ms, predictor.timings.infer_ms,
                                                       predictor.timings.post_ms)):
                stages[key].append(new - old)
        assert mask.shape == (1080, 1920)
    med = {k: statistics.median(v) for k, v in {**stages, **rows}.items()}
    share = 100 * (med["pre"] + med["post"]) / med["infer"]
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
        flags = " ".join(f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags)
    except (OSError, StopIteration):
        flags = "?"
    print(f"{cpu_model()} ({platform.machine()}; {flags}), {args.threads} threads, {args.frames} 1080p frames, "
          f"{args.model} INT8 at 512x1024")
    print(f"median per frame: pre {med['pre']:.1f} ms, inference {med['infer']:.1f} ms, post {med['post']:.1f} ms, "
          f"end to end {med['e2e']:.1f} ms ({1000 / med['e2e']:.1f} FPS); pre + post = {share:.0f} % of inference")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
