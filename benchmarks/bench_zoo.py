"""Every zoo model at 512×1024 on this CPU: params, GMACs, ORT FP32 and INT8 latency, mIoU after a short training.

    python benchmarks/bench_zoo.py [--models a,b] [--iterations 150] [--threads 2]

Per model: a short training on synthetic scenes (cached by recipe), the export chain to FP32 and INT8
through the parity gate, then ORT FP32 and INT8 timed round-robin (so noise hits both alike), and mIoU of
both on held-out synthetic images from the artifacts' manifest. Rows are appended to
``benchmarks/results/zoo-<arch>.json`` as each model finishes, so an interrupted run resumes; the
Markdown table is rewritten after every model. A model that fails gets a row with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from segedge.bench import interleaved_latencies
from segedge.hardware import cpu_model
from segedge.compare import GATES, ParityGate
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.pipeline import ExportConfig, export_model
from segedge.quantize import Int8Config
from segedge.registry import get_spec, list_models
from segedge.runners import OnnxRuntimeRunner
from segedge.train import TrainConfig, trained_checkpoint

SIZE = (512, 1024)


def train_recipe(spec, gmacs: float, args) -> TrainConfig:
    """The short training of one zoo model: batch 4, or batch 2 above ``--light-max-gmacs`` (the heavy
    backbones take 1.5–2.3 s per batch-2 step on 2 cores; batch 4 would double a ~1 h run)."""
    batch = 4 if gmacs <= args.light_max_gmacs else max(2, spec.min_train_batch)
    return TrainConfig(model=spec.name, iterations=args.iterations, batch_size=batch, train_scenes=64,
                       val_images=4, threads=args.threads)


def measure(name: str, args) -> dict:
    spec = get_spec(name)
    size = SIZE if all(v % spec.size_multiple == 0 for v in SIZE) else spec.default_input_size
    params, gmacs = spec.complexity(input_size=size)
    started = time.perf_counter()
    trained = gmacs <= args.train_max_gmacs
    if trained:
        recipe = train_recipe(spec, gmacs, args)
        ckpt_path = trained_checkpoint(recipe, progress=False).path
    train_s = time.perf_counter() - started
    config = ExportConfig(model=spec.name, checkpoint=ckpt_path if trained else None, untrained=not trained,
                          input_size=size, int8=True, gates={**GATES, "int8": ParityGate(0.0)},
                          int8_config=Int8Config(calib_images=args.calib_images, chunk=2),
                          eval_images=args.eval_images, threads=args.threads)
    result = export_model(config)
    stages = result.manifest["stages"]
    image, _ = SyntheticScenes("val", 1, size=size).batch(0, 1)
    x = to_network_input(image, spec.mean, spec.std)
    runners = {"fp32": OnnxRuntimeRunner(result.file("sim"), threads=args.threads),
               "int8": OnnxRuntimeRunner(result.file("int8"), threads=args.threads)}
    for r in runners.values():
        r.activate()
    try:
        stats = interleaved_latencies(runners, x, warmup=1, rounds=args.rounds)
    finally:
        for r in runners.values():
            r.deactivate()
    return {
        "model": spec.name, "size": f"{size[0]}x{size[1]}", "params_m": round(params / 1e6, 2), "gmacs": round(gmacs, 1),
        "fp32_ms": round(stats["fp32"].median_ms, 1), "int8_ms": round(stats["int8"].median_ms, 1),
        "int8_speedup": round(stats["fp32"].median_ms / stats["int8"].median_ms, 2),
        "trained": trained,
        "miou_fp32": round(100 * stages["sim"]["parity"]["miou"], 2) if trained else None,
        "miou_int8": round(100 * stages["int8"]["parity"]["miou"], 2) if trained else None,
        "int8_drop": stages["int8"]["parity"]["miou_drop_points"] if trained else None,
        "int8_agreement": round(100 * stages["int8"]["parity"]["argmax_agreement"], 2) if trained else None,
        "train_iterations": args.iterations if trained else 0, "train_s": round(train_s, 0), "status": "ok",
    }


def write_table(rows: list[dict], machine: str, args, path: Path) -> None:
    lines = [f"## Zoo at 512×1024 (PSPNet at its nearest valid size), batch 1, {args.threads} threads, ORT CPU",
             "", f"Machine: {machine}. Short training: {args.iterations} iterations, batch 4, 256×256 crops of "
             f"synthetic scenes, for models of at most {args.train_max_gmacs:g} GMACs (heavier ones are timed with untrained "
             f"weights: latency does not depend on them, mIoU would mean nothing); mIoU on {args.eval_images} held-out "
             f"synthetic val images; INT8: u8 activations, per-channel s8 weights, {args.calib_images} calibration images "
             "(minmax).", "Command: `python benchmarks/bench_zoo.py`", "",
             "| model | size | params (M) | GMACs | ORT FP32 ms | ORT INT8 ms | INT8 × | mIoU FP32 | mIoU INT8 | drop | agree % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | ❌ {r['reason'][:120]} | | | | | | | | | |")
            continue
        if not r.get("trained", True):
            quality = "not trained: above the GMACs budget for a CPU training here | | | |"
        else:
            quality = f"{r['miou_fp32']} | {r['miou_int8']} | {r['int8_drop']:+.2f} | {r['int8_agreement']} |"
        lines.append(f"| {r['model']} | {r['size']} | {r['params_m']} | {r['gmacs']} | {r['fp32_ms']} | {r['int8_ms']} | "
                     f"{r['int8_speedup']} | {quality}")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated (default: the whole zoo)")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=4)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--train-max-gmacs", type=float, default=1e9, help="train only models at most this heavy")
    parser.add_argument("--light-max-gmacs", type=float, default=40.0, help="heavier models train at batch 2")
    parser.add_argument("--train-only", action="store_true", help="fill the checkpoint cache, measure nothing")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else list_models()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    data_path = out / f"zoo-{platform.machine()}.json"
    rows = json.loads(data_path.read_text())["rows"] if data_path.exists() else []
    done = {r["model"] for r in rows if r["status"] == "ok"}
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    if args.train_only:
        for name in models:
            spec = get_spec(name)
            size = SIZE if all(v % spec.size_multiple == 0 for v in SIZE) else spec.default_input_size
            started = time.perf_counter()
            ckpt = trained_checkpoint(train_recipe(spec, spec.complexity(input_size=size)[1], args), progress=False)
            print(f"{name}: trained in {time.perf_counter() - started:.0f} s, {ckpt.path}", file=sys.stderr, flush=True)
        return 0
    for name in models:
        if get_spec(name).name in done:
            print(f"{name}: done earlier", file=sys.stderr)
            continue
        print(f"{name}: ...", file=sys.stderr, flush=True)
        try:
            row = measure(name, args)
        except Exception as exc:  # one model's failure is a row, not the end of the table
            row = {"model": name, "status": "failed", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            traceback.print_exc()
        rows = [r for r in rows if r["model"] != row["model"]] + [row]
        rows.sort(key=lambda r: r["model"])
        data_path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
        write_table(rows, machine, args, out / f"zoo-{platform.machine()}.md")
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
