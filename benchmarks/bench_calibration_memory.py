"""Peak memory of INT8 calibration at 512×1024: every method must stay within 2 GB with >= 128 images.

    python benchmarks/bench_calibration_memory.py [--model bisenet] [--images 128] [--chunk 4]

onnxruntime's calibrators keep every intermediate output of every image handed to one ``collect_data``
call; segedge feeds them ``chunk`` images at a time (histograms merge between chunks), which is what bounds
memory. Each method runs in a fresh process (so one method's peak cannot hide another's) that exports or
reuses the trained model's FP32 graph, calibrates from scratch (no ranges cache) and reports its own peak
resident memory (VmHWM: runtime + model + calibrator, what a user's machine pays). For contrast, one entropy
run hands the calibrator a few images in a single pass, as calling onnxruntime directly would (its memory
grows with the images per pass; at 128 images that run alone would need tens of GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BUDGET_MB = 2048.0


def child(model: str, method: str, images: int, chunk: int, size: tuple[int, int], threads: int) -> dict:
    """One calibration in this process; returns its figures."""
    from segedge.verify.timing import PeakMemory
    from segedge.flows.export import ExportConfig, calibration_feed, export_model, resolve_source
    from segedge.flows.export import evaluation_sets
    from segedge.graph.int8 import Int8Config, calibrated_graph

    config = ExportConfig(model=model, input_size=size, threads=threads)
    fp32 = export_model(config)  # trained weights from the cache; FP32 artifacts reused when present
    icfg = Int8Config(calib_images=images, calib_method=method, chunk=chunk or None)
    _, calib_set, _ = evaluation_sets("synthetic", size, 0)
    feed, _ = calibration_feed(calib_set, resolve_source(config).spec, icfg)
    started = time.perf_counter()
    with PeakMemory() as peak:
        with calibrated_graph(fp32.file("sim"), feed, icfg, available_images=len(calib_set)) as graph:
            ranges = json.loads(Path(graph.ranges).read_text())
    return {"method": method, "images": images, "chunk": icfg.images_per_pass, "peak_mb": round(peak.peak_mb, 1),
            "peak_reset": peak.reset_ok, "seconds": round(time.perf_counter() - started, 1), "tensors": len(ranges.get("data", ranges))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bisenet")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=0, help="images per pass (default: segedge's per method)")
    parser.add_argument("--methods", default="minmax,entropy,percentile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unchunked-images", type=int, default=8,
                        help="images of the single-pass entropy contrast run (0: skip it)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = (512, 1024)
    if args.child:
        method, images, chunk = args.child.split(",")
        print(json.dumps(child(args.model, method, int(images), int(chunk), size, args.threads)))
        return 0

    runs = [(m, args.images, args.chunk) for m in args.methods.split(",")]
    if args.unchunked_images:
        runs.append(("entropy", args.unchunked_images, args.unchunked_images))
    rows = []
    for method, images, chunk in runs:
        print(f"{method}: {images} images, chunk {chunk} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--threads", str(args.threads),
                              "--child", f"{method},{images},{chunk}"], capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            rows.append({"method": method, "images": images, "chunk": chunk, "error": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    from segedge.core.hardware import cpu_model

    lines = [f"## INT8 calibration memory: {args.model} at 512×1024, {args.threads} threads",
             "", f"Machine: {cpu_model()}, {os.cpu_count()} cores. Budget: {BUDGET_MB:.0f} MB peak resident memory.",
             "Command: `python benchmarks/bench_calibration_memory.py`", "",
             "| method | images | images per pass | peak MB | × budget | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['images']} | {r['chunk']} | ❌ {r['error'][:100]} | | |")
        else:
            lines.append(f"| {r['method']} | {r['images']} | {r['chunk']} | {r['peak_mb']:.0f} | "
                         f"{r['peak_mb'] / BUDGET_MB:.2f} | {r['seconds']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"calibration-memory-{args.model}-{platform.machine()}.md").write_text(text)
    return 0 if all("error" not in r and r["peak_mb"] <= BUDGET_MB for r in rows[: len(args.methods.split(","))]) else 1


if __name__ == "__main__":
    sys.exit(main())
