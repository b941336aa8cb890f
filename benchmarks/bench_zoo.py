"""Every zoo model at 512×1024 on this CPU: params, GMACs, mIoU after a short training, ORT FP32 latency, and
INT8 before / after segedge's accuracy work (drop, agreement, speed-up).

    python benchmarks/bench_zoo.py [--models a,b] [--iterations 150] [--threads 2]
    python benchmarks/bench_zoo.py --train-only      # fill the checkpoint cache first (the long part)

Per model: a short training on synthetic scenes (cached by recipe); the export chain to FP32 and two INT8
graphs through the parity gate: "before" with onnxruntime's default op set, "after" with segedge's defaults
and, when its mIoU drop still exceeds the model's budget, the ``--max-drop`` search (blocks of the torch
module tree measured alone, then the layers of the worst blocks); then the graphs timed round-robin (so noise
hits all alike), with OpenVINO f32, bf16 and NNCF INT8 beside them, and mIoU from the artifacts' manifests. Rows
are appended to ``benchmarks/results/zoo-<arch>.json`` (``--out``) as each model finishes, each with the machine
it was measured on, so an interrupted run resumes on the same machine; the Markdown table is rewritten after
every model. A model that fails gets a row with the reason.
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

from segedge.verify.timing import side_by_side_latencies
from segedge.core.hardware import cpu_flags, cpu_model, this_cpu
from segedge.core.precision import STAGES, ParityGate
from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import Int8Config, cpu_int8_scheme
from segedge.models.registry import get_spec, list_models
from segedge.backends.onnxruntime import OnnxRuntimeRunner
from segedge.train.loop import TrainConfig, trained_checkpoint

SIZE = (512, 1024)


def bench_size(spec) -> tuple[int, int]:
    """512×1024, or the model's own default where that is not a valid size (PSPNet: 528×1056)."""
    return SIZE if all(v % spec.size_multiple == 0 for v in SIZE) else spec.default_input_size


TWINS = {"segnet-trt": "segnet"}  # same network and state_dict, proven bit-equal (tests/models): trained once


def zoo_checkpoint(spec, gmacs: float, args) -> tuple[Path, TrainConfig]:
    """The cached short-training checkpoint of ``spec`` (a twin gets its original's weights, relabelled)."""
    original = TWINS.get(spec.name)
    if original is None:
        recipe = train_recipe(spec, gmacs, args)
        return trained_checkpoint(recipe, progress=False).path, recipe
    from segedge.models.checkpoint import cache_dir, load_checkpoint, save_checkpoint

    source_path, recipe = zoo_checkpoint(get_spec(original), gmacs, args)
    path = cache_dir() / "checkpoints" / f"{spec.name}-from-{source_path.name}"
    if not path.is_file():
        ckpt = load_checkpoint(source_path)
        save_checkpoint(path, ckpt.build(), spec.name, ckpt.width, ckpt.class_names,
                        {**ckpt.train_info, "weights_of": original})
    return path, recipe


def trained_zoo_model(name: str, args):
    """(spec, size, params, GMACs, checkpoint path, recipe, seconds spent training) of one zoo model at its bench size."""
    spec = get_spec(name)
    size = bench_size(spec)
    params, gmacs = spec.complexity(input_size=size)
    started = time.perf_counter()
    ckpt_path, recipe = zoo_checkpoint(spec, gmacs, args)
    return spec, size, params, gmacs, ckpt_path, recipe, time.perf_counter() - started


def train_recipe(spec, gmacs: float, args) -> TrainConfig:
    """The short training of one zoo model: batch 4, or batch 2 above ``--light-max-gmacs`` (the heavy
    backbones take 1.5–2.3 s per batch-2 step on 2 cores; batch 4 would double a ~1 h run)."""
    batch = 4 if gmacs <= args.light_max_gmacs else max(2, spec.min_train_batch)
    crop = 256 // spec.size_multiple * spec.size_multiple  # PSPNet: 240, its multiple of 48
    return TrainConfig(model=spec.name, iterations=args.iterations, batch_size=batch, train_scenes=64,
                       val_images=4, threads=args.threads, crop=(crop, crop), scene_size=bench_size(spec))


TRANSFORMERS = ("segformer-b0", "setr-naive", "setr-pup")  # issue 7's budget: 1.0 point for these, 0.5 for CNNs


def int8_budget(name: str) -> float:
    return 1.0 if name in TRANSFORMERS else 0.5


def ort_scheme() -> str:
    """The scheme the ``cpu`` profile quantizes with on this CPU (x86; x86-novnni without VNNI; arm)."""
    return cpu_int8_scheme(this_cpu())


def measure(name: str, args) -> dict:
    """One row: FP32, INT8 "before" (onnxruntime's default op set) and INT8 "after" (segedge's default: Softmax
    float, plus the ``--max-drop`` search at the model's budget)."""
    import shutil
    import tempfile

    spec, size, params, gmacs, ckpt_path, recipe, train_s = trained_zoo_model(name, args)
    budget = int8_budget(spec.name)

    def export(icfg: Int8Config):
        return export_model(ExportConfig(model=spec.name, checkpoint=ckpt_path, input_size=size, precisions=("int8",),
                                         gates={**{n: s.gate for n, s in STAGES.items()}, "int8": ParityGate(0.0), "int8-nncf": ParityGate(0.0)}, int8_config=icfg,
                                         eval_images=args.eval_images, threads=args.threads))

    base = dict(calib_images=args.calib_images)
    ort = dict(base, scheme=ort_scheme())
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as work:
        before = export(Int8Config(**ort, float_ops=(), op_set="all"))  # onnxruntime's own op set, not the spec's
        before_file = Path(work) / "before.int8.onnx"
        shutil.copyfile(before.file("int8"), before_file)
        before_parity = before.manifest["stages"]["int8"]["parity"]
        layers = before.manifest["stages"]["int8"].get("quantize_nodes")
        after = export(Int8Config(**ort))
        full = after.manifest["stages"]["int8"]
        # always searched at the budget: the search keeps every layer INT8 when full INT8's drop interval already
        # fits, and a point estimate within the budget is not enough (DeepLab v2: +0.20, interval up to +1.39)
        order = "blocks"  # each block alone, then the layers of the worst blocks: minutes even on heavy nets
        after = export(Int8Config(**ort, max_drop=budget, max_search_steps=args.search_steps, search_order=order))
        search = after.manifest["stages"]["int8"]["mixed_precision"]
        search_s = after.manifest["stages"]["int8"].get("seconds")  # calibration + ranking + search
        if not search["kept_float"]:
            search = None  # full INT8 met the budget, interval included
        stages = after.manifest["stages"]
        image, _ = SyntheticScenes("val", 1, size=size).batch(0, 1)
        x = to_network_input(image, spec.mean, spec.std)
        runners = {"fp32": OnnxRuntimeRunner(after.file("sim"), threads=args.threads),
                   "before": OnnxRuntimeRunner(before_file, threads=args.threads),
                   "after": OnnxRuntimeRunner(after.file("int8"), threads=args.threads)}
        openvino = openvino_rows(spec.name, after, budget, base, export, args) if args.openvino else {}
        runners.update(openvino.pop("runners", {}))
        stats = side_by_side_latencies(runners, x, warmup=1, rounds=args.rounds)
        # the drop's 95 % paired bootstrap interval over the evaluation images: the budget is judged at its upper end
        from segedge.flows.export import evaluation_sets, reference_for, resolve_source
        from segedge.verify.compare import accuracy_on_active_runner

        source = resolve_source(ExportConfig(model=spec.name, checkpoint=ckpt_path, input_size=size))
        reference = reference_for(source, evaluation_sets("synthetic", size, 0)[0], args.eval_images, args.threads)
        with OnnxRuntimeRunner(after.file("int8"), threads=args.threads) as runner:
            interval = accuracy_on_active_runner(runner, reference).interval
        scored = {"ORT int8": (stats["after"].median_ms, interval.high, interval.low)}
        for key in ("OV bf16", "OV int8"):
            if key in runners:
                with runners[key] as runner:
                    acc = accuracy_on_active_runner(runner, reference)
                scored[key] = (stats[key].median_ms, acc.interval.high, acc.interval.low)
    ms = {k: s.median_ms for k, s in stats.items()}
    after_parity = stages["int8"]["parity"]
    drop = after_parity["miou_drop_points"]
    speedup = ms["fp32"] / ms["after"]
    return {
        "model": spec.name, "size": f"{size[0]}x{size[1]}", "params_m": round(params / 1e6, 2), "gmacs": round(gmacs, 1),
        "fp32_ms": round(ms["fp32"], 1), "before_ms": round(ms["before"], 1), "after_ms": round(ms["after"], 1),
        "before_speedup": round(ms["fp32"] / ms["before"], 2), "after_speedup": round(speedup, 2),
        "miou_fp32": round(100 * stages["sim"]["parity"]["miou"], 2),
        "before_drop": before_parity["miou_drop_points"],
        "before_agreement": round(100 * before_parity["argmax_agreement"], 2),
        "after_drop": drop, "after_agreement": round(100 * after_parity["argmax_agreement"], 2),
        "after_drop_low": round(interval.low, 3), "after_drop_high": round(interval.high, 3),
        "float_classifier": len(stages["int8"].get("float_classifier") or []),
        "op_set": (stages["int8"].get("op_set") or {}).get("chosen"),
        "full_int8_drop": full["parity"]["miou_drop_points"],
        "float_layers": len(search["kept_float"]) if search else 0,
        "quantizable_layers": search["quantizable_layers"] if search else None,
        "search": search["message"] if search else "not needed: full INT8 meets the budget",
        "search_order": search.get("order") if search else None,
        "budget": budget, "meets_drop": interval.high <= budget, "meets_speed": speedup >= 1.5,
        "train_iterations": recipe.iterations, "train_batch": recipe.batch_size, "train_s": round(train_s, 0),
        "quantize_nodes_before": layers, "status": "ok", "eval_images": args.eval_images, "search_s": search_s,
        "ort_scheme": ort["scheme"],
        **best_cpu_row(ms, scored, budget, openvino),
    }


def openvino_rows(name: str, after, budget: float, base: dict, export, args) -> dict:
    """OpenVINO's candidates for the best CPU row: f32 and bf16 on the FP32 graph, and NNCF's INT8 (searched at
    the budget when full INT8 misses it, with ``--openvino-search``), float layers in bf16 where the CPU has it, as `segedge bench
    --profile openvino-cpu` runs them. A native crash compiling a graph is a reason, not the end of the run."""
    from segedge.backends.isolate import probe
    from segedge.backends.openvino import OPENVINO, OpenVinoRunner, capabilities
    from segedge.core.errors import SegedgeError

    threads, size = args.threads, tuple(after.manifest["config"]["input_size"])
    runners = {"OV f32": OpenVinoRunner(after.file("sim"), threads=threads, inference_precision="f32")}
    if "BF16" in capabilities():
        runners["OV bf16"] = OpenVinoRunner(after.file("sim"), threads=threads, inference_precision="bf16")
    info: dict = {}
    nncf = export(Int8Config(**base, scheme="openvino"))
    stage = nncf.manifest["stages"]["int8-nncf"]
    if args.openvino_search and stage["parity"]["miou_drop_points"] > budget:
        # off by default: NNCF collects its statistics again for every candidate, ~30 min on a heavy net here
        nncf = export(Int8Config(**base, scheme="openvino", max_drop=budget, max_search_steps=args.search_steps,
                                 search_order="blocks"))
        stage = nncf.manifest["stages"]["int8-nncf"]
        info["ov_int8_float_layers"] = len(stage["mixed_precision"]["kept_float"])
    try:
        probe("openvino", nncf.file("int8-nncf"), None, size, "int8", threads, {})
        runners["OV int8"] = OpenVinoRunner(nncf.file("int8-nncf"), threads=threads,
                                            inference_precision=OPENVINO.float_precision(None))
    except SegedgeError as exc:
        info["ov_int8_failed"] = str(exc)
    return {"runners": runners, **info}


def _slug(row_name: str) -> str:
    """A runner row's name ("OV bf16") as the prefix of its JSON keys ("ov_bf16")."""
    return row_name.lower().replace(" ", "_")


def best_cpu_row(ms: dict, scored: dict, budget: float, openvino: dict) -> dict:
    """The fastest of ORT INT8, OpenVINO bf16 and OpenVINO INT8 whose drop interval's upper end is within the
    budget, and its speed-up over the faster FP32 runner (ORT or OpenVINO f32: a user would pick the faster)."""
    if "OV f32" not in ms:
        return {}
    fp32 = min(ms["fp32"], ms["OV f32"])
    row = {"ov_f32_ms": round(ms["OV f32"], 1), **{k: v for k, v in openvino.items() if k != "runners"}}
    for key, (median, high, low) in scored.items():
        slug = _slug(key)
        row.update({f"{slug}_ms": round(median, 1), f"{slug}_drop_high": round(high, 3), f"{slug}_drop_low": round(low, 3)})
    within = {key: v[0] for key, v in scored.items() if v[1] <= budget}
    best = min(within, key=within.get) if within else None
    row.update({"best_row": best, "best_ms": round(within[best], 1) if best else None,
                "best_speedup": round(fp32 / within[best], 2) if best else None, "best_fp32_ms": round(fp32, 1),
                "best_meets_speed": bool(best) and fp32 / within[best] >= 1.5})
    return row


def _interval(row: dict) -> str:
    return f" [{row['after_drop_low']:+.2f}, {row['after_drop_high']:+.2f}]" if "after_drop_high" in row else ""


def _openvino_cells(r: dict) -> str:
    if "best_fp32_ms" not in r:
        return "not measured | | "
    def cell(key):
        return f"{r[key + '_ms']} ({r[key + '_drop_high']:+.2f})" if key + "_ms" in r else "–"
    int8 = cell("ov_int8") if "ov_int8_ms" in r else f"❌ {r.get('ov_int8_failed', '')[:60]}"
    if r.get("ov_int8_float_layers"):
        int8 += f", {r['ov_int8_float_layers']} float"
    best = f"{r['best_row']} {r['best_ms']} ms, {r['best_speedup']}×" if r["best_row"] else "none within the budget"
    return f"{r['ov_f32_ms']} / {cell('ov_bf16')} / {int8} | {best} | {'✅' if r['best_meets_speed'] else '❌'}"


def machines_line(rows: list[dict], machine: str) -> str:
    """The machine every row was measured on: rows of another machine are named, never passed off as this one's
    (rows from before rows recorded it were measured on the file's machine)."""
    by_machine: dict[str, list[str]] = {}
    for r in rows:
        by_machine.setdefault(r.get("machine", machine), []).append(r["model"])
    if len(by_machine) <= 1:
        return f"Machine: {next(iter(by_machine), machine)}"
    return "Machines: " + "; ".join(f"{m} ({', '.join(models)})" for m, models in by_machine.items())


def out_flag(args) -> str:
    """`` --out STEM`` where the results are not the default file of this architecture."""
    default = Path(__file__).parent / "results" / f"zoo-{platform.machine()}"
    if args.out.resolve() == default.resolve():
        return ""
    return f" --out {os.path.relpath(args.out, Path(__file__).parents[1])}"


def write_table(rows: list[dict], machine: str, args, path: Path) -> None:
    lines = [f"## Zoo at 512×1024 (PSPNet at its nearest valid size), batch 1, {args.threads} threads, ORT CPU",
             "", f"{machines_line(rows, machine)}. Every model trained briefly on synthetic scenes ({args.iterations} iterations "
             f"of 256×256 crops, batch 4; batch 2 above {args.light_max_gmacs:g} GMACs), evaluated on "
             f"{args.eval_images} held-out synthetic val images at the size shown. INT8 on ORT: scheme "
             f"{', '.join(sorted({r.get('ort_scheme', 'x86') for r in rows}))} (the `cpu` profile's pick for the CPU; x86: u8 "
             f"activations, per-channel s8 weights; x86-novnni: the same with 7-bit weights), MinMax ranges from {args.calib_images} calibration images.",
             "**before**: onnxruntime's default op set, full INT8. **after**: segedge's default "
             "(classifier and Softmax float, op set from the model's measured default or a probe that times and scores both) and the `--max-drop` search at the budget "
             "(0.5 mIoU points for CNNs, 1.0 for SegFormer/SETR, judged at the upper end of the drop's 95 % interval): "
             "blocks of the torch module tree quantized alone, then the layers of the worst blocks (at most 16 past the worst), kept float "
             "most sensitive first (rows from runs before this search say output-first). "
             "Latencies: medians of the graphs timed round-robin.",
             "**best CPU row**: the fastest of ORT INT8 (after), OpenVINO bf16 and OpenVINO INT8 (NNCF's full graph, "
             "float layers bf16) whose drop interval's upper end is within the budget, and "
             "its speed-up over the faster FP32 runner (ORT or OpenVINO f32).",
             f"Command: `python benchmarks/bench_zoo.py{out_flag(args)}`", "",
             "| model | size | params (M) | GMACs | mIoU FP32 | FP32 ms | before: drop / agree % / × | "
             "after: drop [95 % interval] / agree % / × | float layers, INT8 stage s | budget met (interval) | ≥ 1.5× | "
             "OV f32 / bf16 / int8 ms (drop high) | best CPU row: ms, × best FP32 | ≥ 1.5× |",
             "|---|---|---:|---:|---:|---:|---|---|---:|:-:|:-:|---|---|:-:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | ❌ {r['reason'][:120]} | | | | | | | | | |")
            continue
        if "after_drop" not in r:
            continue  # a row of the older format
        floats = f"{r['float_layers']} of {r['quantizable_layers']}" if r["quantizable_layers"] else "0"
        if r.get("search_order") == "output-first" and r["quantizable_layers"]:
            floats += " (output-first)"
        if r.get("search_s") is not None:
            floats += f", {r['search_s']:.0f} s"
        images = r.get("eval_images", 4)
        model = r["model"] if images == args.eval_images else f"{r['model']} ({images} images)"
        lines.append(
            f"| {model} | {r['size']} | {r['params_m']} | {r['gmacs']} | {r['miou_fp32']} | {r['fp32_ms']} | "
            f"{r['before_drop']:+.2f} / {r['before_agreement']} / {r['before_speedup']} | "
            f"{r['after_drop']:+.2f}{_interval(r)} / {r['after_agreement']} / {r['after_speedup']} | {floats} | "
            f"{'✅' if r['meets_drop'] else '❌'} | {'✅' if r['meets_speed'] else '❌'} | {_openvino_cells(r)} |")
    misses = [r for r in rows if r["status"] == "ok" and "after_drop" in r and not r["meets_drop"]]
    if misses:
        lines += ["", "Budget missed, what the search said:"]
        lines += [f"- {r['model']}: {r['search']}" for r in misses]
    path.write_text("\n".join(lines) + "\n")


def summary_table(rows: list[dict]) -> str:
    """README's short table: per model the ORT INT8 search's result and the best CPU row, from the JSON alone."""
    lines = ["| model | mIoU FP32 | ORT INT8 after: float layers, drop [95 %], × ORT FP32 | INT8 stage s | best CPU row "
             "| ms | × faster FP32 | its drop, upper end |", "|---|---:|---|---:|---|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok" or "best_fp32_ms" not in r:
            continue
        floats = f"{r['float_layers']} of {r['quantizable_layers']}" if r["float_layers"] else "0"
        search = f"{r['search_s']:.0f}" if r.get("search_s") is not None else "–"
        best = r["best_row"]
        high = f"{r[_slug(best) + '_drop_high']:+.2f}" if best else "–"
        lines.append(f"| {r['model']} | {r['miou_fp32']} | {floats}, {r['after_drop']:+.2f}{_interval(r)}, "
                     f"{r['after_speedup']} | {search} | {best or 'none within the budget'} | {r['best_ms'] or '–'} | "
                     f"{r['best_speedup'] or '–'} | {high} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated (default: the whole zoo)")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=8, help="held-out images scored per graph (4 gives intervals too wide for a 0.5-point budget)")
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--search-steps", type=int, default=10, help="--max-search-steps of the after search")
    parser.add_argument("--light-max-gmacs", type=float, default=40.0, help="heavier models train at batch 2")
    parser.add_argument("--again", help="comma-separated models to measure again although their rows are done")
    parser.add_argument("--render-only", action="store_true", help="rewrite the table from the JSON of earlier runs")
    parser.add_argument("--summary", action="store_true", help="print README's short table from the JSON of earlier runs")
    parser.add_argument("--train-only", action="store_true", help="fill the checkpoint cache, measure nothing")
    parser.add_argument("--no-openvino", dest="openvino", action="store_false",
                        help="ORT rows only (default: also OpenVINO f32/bf16/NNCF INT8 and the best CPU row)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / f"zoo-{platform.machine()}",
                        help="results stem: .json keeps the rows (a rerun resumes from it), .md the table")
    parser.add_argument("--openvino-search", action="store_true",
                        help="also search NNCF's INT8 at the budget when its drop exceeds it (slow on heavy nets)")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else list_models()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data_path, table_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    saved = json.loads(data_path.read_text()) if data_path.exists() else {"machine": "", "rows": []}
    rows = [{"machine": saved["machine"], **r} for r in saved["rows"]]
    again = set(args.again.split(",")) if args.again else set()
    flags = " ".join(cpu_flags())
    machine = f"{cpu_model()}, {os.cpu_count()} cores" + (f" [{flags}]" if flags else "")
    done = {r["model"] for r in rows if r["model"] not in again and r["status"] == "ok" and "after_drop" in r
            and r["machine"] == machine and (not args.openvino or "best_fp32_ms" in r)}
    if args.summary:
        print(summary_table(rows))
        return 0
    if args.render_only:
        write_table(rows, saved["machine"], args, table_path)
        return 0
    if args.train_only:
        for name in models:
            spec = get_spec(name)
            size = bench_size(spec)
            started = time.perf_counter()
            path, _ = zoo_checkpoint(spec, spec.complexity(input_size=size)[1], args)
            print(f"{name}: trained in {time.perf_counter() - started:.0f} s, {path}", file=sys.stderr, flush=True)
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
        row["machine"] = machine
        rows = [r for r in rows if r["model"] != row["model"]] + [row]
        rows.sort(key=lambda r: r["model"])
        data_path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
        write_table(rows, machine, args, table_path)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
