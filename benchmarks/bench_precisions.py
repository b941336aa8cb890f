"""Torch eager FP32 vs ONNX Runtime FP32 / FP16 / INT8 on one model, side by side in one run.

    python benchmarks/bench_precisions.py --model bisenet --input-size 512x1024 --threads 2

Exports (or reuses) the artifacts with `segedge export`'s pipeline on the cached trained weights, then
times every backend round-robin (so machine noise hits all alike) at batch 1 and prints medians, the
ratio of each to ORT FP32, and each artifact's mIoU drop against torch FP32 from its manifest (measured
on held-out synthetic images). Writes the table as JSON and Markdown under benchmarks/results/.
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin after each eager call and steal the cores from the session timed next: make them
# sleep instead (must be set before torch loads); segedge's onnxruntime runner already turns spinning off
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from segedge.verify.timing import side_by_side_latencies
from segedge.core.hardware import cpu_model
from segedge.cli.args import size as _size
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import Int8Config
from segedge.models.registry import get_spec
from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.backends.torch import TorchRunner




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bisenet")
    parser.add_argument("--input-size", type=_size, default=(512, 1024))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--calib-method", default="minmax")
    parser.add_argument("--store", default="export")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    spec = get_spec(args.model)
    config = ExportConfig(
        model=spec.name, input_size=args.input_size, precisions=("fp16", "int8"),
        int8_config=Int8Config(calib_images=args.calib_images, calib_method=args.calib_method),
        eval_images=args.eval_images, store=Path(args.store), threads=args.threads,
    )
    result = export_model(config, log=lambda m: print(m, file=sys.stderr), progress=True)
    stages = result.manifest["stages"]

    import torch

    from segedge.models.checkpoint import load_checkpoint

    module = load_checkpoint(result.manifest["checkpoint"]).build() if result.manifest["checkpoint"] else None
    image, _ = SyntheticScenes("val", 1, size=args.input_size).batch(0, 1)
    batch = to_network_input(image, spec.mean, spec.std)

    runners = {
        "torch eager FP32": TorchRunner(module, threads=args.threads),
        "ORT FP32": OnnxRuntimeRunner(result.file("sim"), threads=args.threads),
        "ORT FP16": OnnxRuntimeRunner(result.file("fp16"), threads=args.threads),
        "ORT INT8": OnnxRuntimeRunner(result.file("int8"), threads=args.threads),
    }
    drop_of = {"torch eager FP32": None, "ORT FP32": stages["sim"], "ORT FP16": stages["fp16"], "ORT INT8": stages["int8"]}
    stats = side_by_side_latencies(runners, batch, warmup=3, rounds=args.rounds)

    base = stats["ORT FP32"].median_ms
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
               "platform": platform.platform(), **{k: v for k, v in result.manifest["tools"].items() if k != "platform"}}
    ref_miou = result.manifest["reference"]["miou"] if "reference" in result.manifest else stages["sim"]["parity"]["reference_miou"]
    rows = []
    for name, s in stats.items():
        entry = drop_of[name]
        rows.append({
            "backend": name, "median_ms": round(s.median_ms, 2), "p90_ms": round(s.p90_ms, 2), "fps": round(s.fps, 2),
            "speedup_vs_ort_fp32": round(base / s.median_ms, 3),
            "miou": round(100 * (entry["parity"]["miou"] if entry else ref_miou), 2),
            "miou_drop_points": entry["parity"]["miou_drop_points"] if entry else 0.0,
            "argmax_agreement": entry["parity"]["argmax_agreement"] if entry else 1.0,
        })

    h, w = args.input_size
    title = f"{spec.name} {h}x{w}, batch 1, {args.threads} threads, {args.rounds} interleaved rounds"
    lines = [f"## {title}", "", f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {machine.get('torch')}, "
             f"onnxruntime {machine.get('onnxruntime')}", "",
             f"mIoU on {config.eval_images} held-out synthetic val images; torch FP32 reference {100 * ref_miou:.2f}", "",
             "| backend | median ms | p90 ms | FPS | × ORT FP32 | mIoU | drop (points) | argmax agreement |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['fps']:.2f} | "
                     f"{r['speedup_vs_ort_fp32']:.2f} | {r['miou']:.2f} | {r['miou_drop_points']:+.2f} | "
                     f"{100 * r['argmax_agreement']:.2f} % |")
    table = "\n".join(lines)
    print(table)

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"precisions-{spec.name}-{h}x{w}-{args.threads}t-{platform.machine()}"
    (out / f"{stem}.json").write_text(json.dumps({"title": title, "machine": machine, "rows": rows,
                                                   "artifacts": str(result.directory)}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
