"""``segedge ship``: what to deploy — the fastest model × input size × precision on a profile within a latency
budget and a drop limit, searched cheap first, handed over as a bundle."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from segedge.cli.args import DATA_KINDS, add_own_model, add_precisions_option, log, positive_int, size
from segedge.core.errors import SegedgeError


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1.5h`` → seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write 90s, 30m or 1.5h")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


def sizes(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(size(part) for part in text.split(",") if part.strip())


def scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 4 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give fractions of each model's own size, e.g. 1,0.75,0.5")
    return values


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ship",
        help="what to deploy: the fastest model × size × precision within a latency budget and a drop limit",
        description="Search models × input sizes × precisions on a profile, cheap first (time, then score on a "
        "growing number of images), and hand over the fastest candidate whose median is within --budget-ms and whose "
        "mIoU drop (95 % interval's upper end, against the model at its own size in FP32, scored at the labels' full "
        "resolution) is within --max-drop, as a bundle segedge.Predictor loads as it is.",
    )
    p.add_argument("--profile", required=True, help="profile name (see `segedge profiles`), `jetson`, or a .toml path")
    p.add_argument("--budget-ms", type=non_negative, required=True, help="latency budget: median ms per image")
    p.add_argument("--max-drop", type=non_negative, required=True, help="mIoU drop limit in points (upper end of the "
                   "95 %% interval)")
    p.add_argument("--models", help="comma-separated zoo models (default bisenet when no other model is given)")
    add_precisions_option(p, "the profile's")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sizes", type=sizes, help="input sizes to search, e.g. 512x1024,384x768,256x512 (rounded to each "
                   "model's stride)")
    g.add_argument("--scales", type=scales, help="fractions of each model's own size, e.g. 1,0.75,0.5 (default: 1)")
    p.add_argument("--input-size", type=size, help="each model's own size, its reference (default: the profile's, or "
                   "a checkpoint's training size)")
    p.add_argument("--time-limit", type=duration, help="stop cleanly with the best pick measured so far, e.g. 30m")
    p.add_argument("--eval-images", type=positive_int, help="held-out images for mIoU (default: 8 synthetic images, "
                   "or the whole evaluation split of --data)")
    p.add_argument("--quick", action="store_true", help="3 timed runs per candidate: a smoke test, not figures to quote")
    p.add_argument("--force", action="store_true", help="measure again candidates already measured")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH", help="weights for a model")
    g = p.add_argument_group("your models and data (as `segedge bench` takes them)")
    g.add_argument("--onnx", action="append", metavar="[NAME=]PATH", help="an ONNX made elsewhere (repeatable)")
    g.add_argument("--artifact", action="append", metavar="[NAME=]DIR", help="a directory `segedge export` wrote")
    g.add_argument("--model", action="append", metavar="[NAME=]REF", help="package.module:function, hf:DIR, "
                   "torchvision:NAME, smp:DIR, FILE.pt2 or a TorchScript file (repeatable)")
    g.add_argument("--data", default="synthetic", help=f"evaluation and calibration data: {DATA_KINDS}")
    g.add_argument("--calib-data", help="calibrate INT8 on this dataset's training split instead (KIND:ROOT)")
    g.add_argument("--calib-images", type=positive_int, help="INT8 calibration images (default 32)")
    g.add_argument("--quantize-classifier", action="store_true", help="INT8 candidates quantize the classifier too")
    add_own_model(g)
    p.add_argument("--results", default="export/results.sqlite", help="SQLite results store (rows are reused)")
    p.add_argument("--artifacts", default="export", help="artifact store (default ./export)")
    p.add_argument("--out", default="ship", help="where the bundle is written (default ./ship)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.backends.profiles import list_profiles, load_profile, require_runnable
    from segedge.cli.args import class_names
    from segedge.cli.bench import _checkpoints, own_sources
    from segedge.core.hardware import detect_machine
    from segedge.core.precision import parse_precisions
    from segedge.flows.bench import BenchConfig
    from segedge.flows.ship import ShipConfig, ship_search, write_bundle
    from segedge.models.registry import get_spec

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SegedgeError(f"--out {out} is a file; give a folder for the bundle")
    sources = own_sources(args)
    given = args.models or ("" if sources else "bisenet")
    models = tuple(get_spec(m.strip()).name for m in given.split(",") if m.strip())
    machine = detect_machine()
    profile = load_profile(args.profile, machine)
    backend = require_runnable(profile, machine, list_profiles())
    precisions = parse_precisions(args.precisions) if args.precisions else profile.precisions
    own_names = {s.name for s in sources}
    bench = BenchConfig(
        models=models, precisions=tuple(precisions), input_size=args.input_size, store=Path(args.results),
        artifacts=Path(args.artifacts), eval_images=args.eval_images, quick=args.quick, force=args.force,
        checkpoints={get_spec(k).name: v for k, v in _checkpoints(args).items() if k not in own_names},
        sources=sources, data=args.data, calib_data=args.calib_data, calib_images=args.calib_images,
        quantize_classifier=args.quantize_classifier, mean=args.mean, std=args.std, num_classes=args.num_classes,
        class_names=class_names(args.classes), layout=args.layout.upper() if args.layout else None,
        output=args.output, threshold=args.threshold, output_key=args.output_key)
    config = ShipConfig(bench=bench, budget_ms=args.budget_ms, max_drop=args.max_drop, sizes=args.sizes or (),
                        scales=args.scales or (), time_limit_s=args.time_limit, out=out)
    log(f"ship on profile {profile.name} ({machine.describe()}) with {backend}: within {args.budget_ms:g} ms and a "
        f"drop of {args.max_drop:g} points")
    result = ship_search(profile, backend, machine, config, log=log, progress=not args.quiet)
    print(fates_table(result))
    if result.pick is None:
        raise SegedgeError(result.answer(args.budget_ms, args.max_drop))
    bundle = write_bundle(result, config, profile, backend)
    row = result.pick.row
    print(f"ship {result.pick.label} on {backend}: {row['median_ms']:.1f} ms median, mIoU drop {row['miou_drop']:+.2f} "
          f"[{row['drop_low']:+.2f}, {row['drop_high']:+.2f}] on {row['eval_images']} images"
          + (f" ({result.stopped})" if result.stopped else ""))
    print(f"bundle {bundle} (segedge predict {bundle} --source FRAMES, or segedge.Predictor({str(bundle)!r}))")
    return 0


def fates_table(result) -> str:
    lines = ["| model | size | precision | quick ms | median ms | drop [95 % interval] | fate | why |",
             "|---|---|---|---:|---:|---|---|---|"]
    for c in sorted(result.candidates, key=lambda c: (c.source.name, c.pixels, c.precision)):
        row = c.row or {}
        drop = (f"{row['miou_drop']:+.2f} [{row['drop_low']:+.2f}, {row['drop_high']:+.2f}]"
                if row.get("drop_low") is not None else "")
        quick = "" if c.quick_ms is None else f"{c.quick_ms:.1f}"
        median = "" if row.get("median_ms") is None else f"{row['median_ms']:.1f}"
        lines.append(f"| {c.source.name} | {c.size[0]}x{c.size[1]} | {c.precision} | {quick} | {median} | {drop} | "
                     f"{c.fate} | {c.why} |")
    return "\n".join(lines)
