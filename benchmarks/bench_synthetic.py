"""Rendering speed of the synthetic street scenes: images/s at 256x512 on one core.

BLAS threads are pinned to one before numpy loads, so the figure is per core and comparable with
the ">= 50 images/s on one core" requirement whatever the machine's core count.

    python benchmarks/bench_synthetic.py [--images 40] [--repeats 5] [--size 256 512]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from segedge.data.synthetic import render_scene, scene_seed  # noqa: E402


def images_per_second(count: int, height: int, width: int, first_index: int) -> float:
    start = time.perf_counter()
    for index in range(first_index, first_index + count):
        render_scene(scene_seed("train", index), height, width)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    args = parser.parse_args()
    height, width = args.size

    images_per_second(3, height, width, first_index=10**6)  # warm-up: caches, page faults
    # Different scenes in every run: the median covers the spread of scene content too.
    rates = [
        images_per_second(args.images, height, width, first_index=run * args.images)
        for run in range(args.repeats)
    ]
    print(
        f"synthetic scenes {height}x{width}: {statistics.median(rates):.1f} images/s "
        f"(median of {args.repeats} runs of {args.images}; "
        f"min {min(rates):.1f}, max {max(rates):.1f}), one thread"
    )
    print(
        f"machine: platform.processor()={platform.processor()!r} ({platform.machine()}), "
        f"os.cpu_count()={os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
