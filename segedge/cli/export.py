"""``segedge export``: the stage chain (ONNX → simplified → FP16 / INT8), each stage parity-gated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segedge.cli.args import (INT8_FLAGS, add_data, add_int8, add_precision_flags, add_remote, add_run, add_source,
                              add_store, class_names, device_argv, device_file, int8_config, log, on_device,
                              wanted_precisions)
from segedge.core.errors import SegedgeError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX, simplify, optionally FP16 / INT8, each checked against torch FP32",
        description="Export a zoo model stage by stage (ONNX → simplified → FP16 / INT8). Every artifact is "
        "compared with the torch FP32 model on held-out synthetic images; one that fails its gate is not kept.",
    )
    add_source(p, model_help="zoo model name (see `segedge models`), or package.module:function building any "
               "nn.Module (it is imported and run: only name code you trust; the current folder is not on the import path: set PYTHONPATH)")
    device_file(p.add_argument("--onnx", help="bring your own ONNX (float32 N×3×H×W → N×C×H×W): it is the FP32 reference"))
    p.add_argument("--untrained", action="store_true", help="random weights (smoke tests only: figures mean nothing)")
    p.add_argument("--dynamic", action="store_true", help="dynamic H and W, proven by running a second size")
    add_precision_flags(p)
    add_int8(p)
    add_data(p)
    add_run(p)
    add_store(p)
    p.add_argument("--json", action="store_true", help="also print the manifest as JSON")
    add_remote(p)
    p.set_defaults(func=run, command_parser=p)


def run(args: argparse.Namespace) -> int:
    from segedge.flows.export import ExportConfig, export_model

    if args.remote:
        argv, files = device_argv(args.command_parser, args)
        return on_device(args, ["export", *argv], files)
    precisions = wanted_precisions(args)
    if "int8" not in precisions and any(getattr(args, name) is not None for name in INT8_FLAGS):
        flags = [f"--{name.replace('_', '-')}" for name in INT8_FLAGS]
        raise SegedgeError(f"{', '.join(flags[:-1])} and {flags[-1]} only apply with --int8")
    if args.checkpoint is not None and args.untrained:
        raise SegedgeError("--checkpoint and --untrained exclude each other")
    if (args.model is None) == (args.onnx is None):
        raise SegedgeError("give either --model NAME (a zoo name or package.module:function) or --onnx FILE")
    config = ExportConfig(
        model=args.model or "",
        onnx=Path(args.onnx) if args.onnx else None,
        data=args.data,
        mean=args.mean,
        std=args.std,
        num_classes=args.num_classes,
        class_names=class_names(args.classes),
        layout=args.layout.upper() if args.layout else None,
        output=args.output,
        threshold=args.threshold,
        output_key=args.output_key,
        calib_data=args.calib_data,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        untrained=args.untrained,
        width=args.width,
        input_size=args.input_size,
        dynamic=args.dynamic,
        precisions=precisions,
        int8_config=int8_config(args),
        eval_images=args.eval_images,
        store=Path(args.out),
        threads=args.threads,
    )
    result = export_model(config, log=log, progress=not args.quiet)
    manifest = result.manifest
    print(f"artifacts in {result.directory}")
    ref = manifest.get("reference", {}).get("miou")
    print(f"{'stage':9s} {'file':21s} {'agree %':>8s} {'mIoU':>6s} {'drop':>6s} {'max|Δ|':>9s}")
    for stage, entry in manifest["stages"].items():
        p = entry["parity"]
        print(f"{stage:9s} {entry['file']:21s} {100 * p['argmax_agreement']:8.3f} {100 * p['miou']:6.2f} "
              f"{p['miou_drop_points']:+6.2f} {p['max_abs_diff']:9.2e}")
    if ref is not None:
        backend = manifest.get("reference", {}).get("backend", "torch")
        print(f"{backend} FP32 reference mIoU {100 * ref:.2f} on {manifest['config']['eval']['images']} "
              f"{manifest['config']['eval']['data']} val images")
    int8_entry = manifest["stages"].get(config.stage_of("int8"), {})
    if int8_entry.get("mixed_precision", {}).get("message"):
        print(int8_entry["mixed_precision"]["message"])
    for warning in int8_entry.get("warnings", []):
        print(f"warning: {warning}")
    if args.json:
        print(json.dumps(manifest, indent=2))
    return 0
