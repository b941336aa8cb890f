"""Your model, your data: the decision table on a labelled set that is not the street scenes.

Generates the "cells" set (benchmarks/make_cells.py: grey microscopy-like images, background / cell), trains a
U-Net on it with `segedge train --data folder:…` (the data's own 128x128 size), then runs
`segedge bench --profile cpu --models unet --checkpoint unet=… --data folder:…` for FP32, FP16 and INT8: every
row's mIoU is measured on the timed runner over the whole held-out split, with the drop's 95 % paired bootstrap
interval. Prints the table, the answer under a budget, the CPU and its flags, and writes
benchmarks/results/own-data-cells-<arch>.md.

    python benchmarks/bench_own_data.py --work /tmp/own-data
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/segedge-own-data"))
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--max-drop", type=float, default=1.0)
    args = parser.parse_args()

    from make_cells import write_cells

    from segedge.core.hardware import cpu_model
    from segedge.train.loop import TrainConfig, train

    args.work.mkdir(parents=True, exist_ok=True)
    data = write_cells(args.work / "cells", args.images, (128, 128), seed=0)
    checkpoint = args.work / "unet-cells.pt"
    started = time.perf_counter()
    if not checkpoint.is_file():
        train(TrainConfig(model="unet", width=args.width, iterations=args.iterations, batch_size=8, crop=(128, 128),
                          data=f"folder:{data}", val_images=24, threads=2), out=checkpoint, progress=True)
    train_s = time.perf_counter() - started
    segedge = [sys.executable, "-m", "segedge"]
    bench = [*segedge, "bench", "--profile", "cpu", "--models", "unet", "--checkpoint", f"unet={checkpoint}",
             "--data", f"folder:{data}", "--input-size", "128x128", "--precisions", "fp32,fp16,int8",
             "--results", str(args.work / "results.sqlite"), "--out", str(args.work / "export"), "--quiet"]
    subprocess.run(bench, check=True)
    report = subprocess.run([*segedge, "report", "--results", str(args.work / "results.sqlite"), "--budget-ms",
                             str(args.budget_ms), "--max-drop", str(args.max_drop)], capture_output=True, text=True,
                            check=True).stdout
    flags = _cpu_flags()
    text = (f"# Your model, your data: U-Net (width {args.width}) on the generated cells set\n\n"
            f"Machine: {cpu_model()} ({platform.machine()}), flags {flags}; training {train_s:.0f} s "
            f"({args.iterations} iterations; 0 s when the checkpoint was cached).\n\n"
            f"Commands:\n\n    python benchmarks/bench_own_data.py --work {args.work}\n    {' '.join(bench[2:])}\n\n"
            + report)
    out = ROOT / "benchmarks" / "results" / f"own-data-cells-{platform.machine()}.md"
    out.write_text(text)
    print(text)
    print(f"written to {out}")


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512/AMX"


if __name__ == "__main__":
    main()
