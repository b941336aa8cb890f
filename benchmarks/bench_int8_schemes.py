"""8-bit (x86) against 7-bit (x86-novnni) INT8 weights on onnxruntime, side by side on this CPU.

    python benchmarks/bench_int8_schemes.py --models bisenet,bisenetv2,ddrnet23slim

Why: without VNNI, onnxruntime's u8·s8 kernels add pairs of products in saturating int16 (VPMADDUBSW), which
8-bit weights can overflow; onnxruntime's guidance for such CPUs is 7-bit weights (reduce_range), and segedge's
`cpu` profile picks x86-novnni there. This script shows what each costs on the CPU it runs on: every model gets
the zoo's cached short-trained weights (bench_zoo's recipe), both INT8 graphs from one MinMax ranges cache (every
layer INT8 but the classifier, as shipped), each scored against torch FP32 on the same held-out images (drop
with its 95 % paired bootstrap interval, argmax agreement) and timed round-robin with ORT FP32. The table names
the CPU and its kernel flags; results go to benchmarks/results/int8-schemes-<arch>[-<flags>].{json,md}.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from bench_zoo import bench_size, zoo_checkpoint

from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.core.hardware import this_cpu
from segedge.core.precision import STAGES, ParityGate
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.flows.export import ExportConfig, evaluation_sets, export_model, reference_for, resolve_source
from segedge.graph.int8 import Int8Config, cpu_int8_scheme
from segedge.models.registry import get_spec
from segedge.verify.compare import accuracy_on_active_runner
from segedge.verify.timing import side_by_side_latencies

SCHEMES = ("x86", "x86-novnni")


def measure(name: str, args) -> dict:
    spec = get_spec(name)
    size = bench_size(spec)
    ckpt, _ = zoo_checkpoint(spec, spec.complexity(input_size=size)[1], args)
    gates = {**{n: s.gate for n, s in STAGES.items()}, "int8": ParityGate(0.0)}  # measured, not gated
    graphs = {}
    for scheme in SCHEMES:  # one store directory holds one INT8 graph: each is copied out before the next export
        first = export_model(ExportConfig(
            model=spec.name, checkpoint=ckpt, input_size=size, precisions=("int8",), gates=gates,
            int8_config=Int8Config(calib_images=args.calib_images, scheme=scheme), eval_images=args.eval_images,
            threads=args.threads), log=lambda m: print(m, file=sys.stderr))
        graphs[scheme] = Path(args.work) / f"{spec.name}.{scheme}.int8.onnx"
        shutil.copyfile(first.file("int8"), graphs[scheme])
    if filecmp.cmp(*graphs.values(), shallow=False):
        raise SystemExit(f"{spec.name}: the two schemes wrote the same graph; nothing to compare")
    source = resolve_source(ExportConfig(model=spec.name, checkpoint=ckpt, input_size=size))
    reference = reference_for(source, evaluation_sets("synthetic", size, 0)[0], args.eval_images, args.threads)
    runners = {"fp32": OnnxRuntimeRunner(first.file("sim"), threads=args.threads),
               **{s: OnnxRuntimeRunner(g, threads=args.threads) for s, g in graphs.items()}}
    image, _ = SyntheticScenes("val", 1, size=size).batch(0, 1)
    stats = side_by_side_latencies(runners, to_network_input(image, spec.mean, spec.std), warmup=1, rounds=args.rounds)
    row = {"model": spec.name, "size": f"{size[0]}x{size[1]}", "fp32_ms": round(stats["fp32"].median_ms, 1),
           "miou_fp32": round(100 * reference.miou, 2)}
    for scheme in SCHEMES:
        with OnnxRuntimeRunner(graphs[scheme], threads=args.threads) as runner:
            acc = accuracy_on_active_runner(runner, reference)
        row[scheme] = {"ms": round(stats[scheme].median_ms, 1),
                       "speedup": round(stats["fp32"].median_ms / stats[scheme].median_ms, 2),
                       "drop": round(acc.report.miou_drop, 2), "drop_low": round(acc.interval.low, 2),
                       "drop_high": round(acc.interval.high, 2),
                       "agreement": round(100 * acc.report.argmax_agreement, 2)}
    return row


def table(rows: list[dict], machine: str, args) -> str:
    lines = [f"**INT8 weights: 8-bit (x86) vs 7-bit (x86-novnni)** on {machine}; segedge's pick for this CPU: "
             f"{args.picked}. Batch 1, {args.threads} threads, {args.rounds} round-robin rounds, "
             f"{args.eval_images} held-out synthetic images, {args.calib_images} MinMax calibration images.", "",
             "| model | size | mIoU FP32 | FP32 ms | x86: drop [95 %], agree %, ms, × | "
             "x86-novnni: drop [95 %], agree %, ms, × |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        cells = [f"{c['drop']:+.2f} [{c['drop_low']:+.2f}, {c['drop_high']:+.2f}], {c['agreement']:.2f}, {c['ms']}, "
                 f"{c['speedup']}" for c in (r[s] for s in SCHEMES)]
        lines.append(f"| {r['model']} | {r['size']} | {r['miou_fp32']} | {r['fp32_ms']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bisenet,bisenetv2,ddrnet23slim")
    parser.add_argument("--iterations", type=int, default=150, help="bench_zoo's short recipe (its cache is shared)")
    parser.add_argument("--light-max-gmacs", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--eval-images", type=int, default=8)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="results stem (default: by arch and VNNI)")
    args = parser.parse_args()
    cpu = this_cpu()
    args.picked = cpu_int8_scheme(cpu)
    machine = f"{cpu.cpu}, {cpu.cores} cores [{' '.join(cpu.cpu_flags) or 'flags unknown'}]"
    out = args.out or Path(__file__).parent / "results" / f"int8-schemes-{platform.machine()}-{args.picked}"
    with tempfile.TemporaryDirectory(prefix="bench-int8-schemes-") as work:
        args.work = work
        rows = [measure(name.strip(), args) for name in args.models.split(",") if name.strip()]
    text = table(rows, machine, args)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "picked": args.picked, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
