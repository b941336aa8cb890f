"""``segedge`` command line: argument parsing only; each subcommand calls the Python API.

A user mistake prints one line (``segedge: error: ...``) and exits 1; argparse's own usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from segedge.errors import SegedgeError


def _size(text: str) -> tuple[int, int]:
    """'512x1024' → (512, 1024)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write HxW, e.g. 512x1024")
    h, w = (int(p) for p in parts)
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# subcommands ---------------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> int:
    from segedge.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        h, w = spec.default_input_size
        print(f"{name:12s} stride {spec.output_stride:<3d} default {h}x{w:<6d} {spec.description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from segedge.registry import get_spec
    from segedge.train import TrainConfig, train

    spec = get_spec(args.model)
    fields = {"model": spec.name, "width": args.width, "seed": args.seed, "threads": args.threads,
              "optimizer": args.optimizer}
    for name in ("iterations", "batch_size", "crop", "lr"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    config = TrainConfig(**fields)
    ckpt = train(config, out=args.out, progress=not args.quiet)
    info = ckpt.train_info
    print(f"checkpoint {ckpt.path}")
    print(f"val mIoU {100 * info['val_miou']:.2f} on {info['val_images']} synthetic val images "
          f"(pixel accuracy {100 * info['val_pixel_accuracy']:.2f}); trained in {info['seconds']:.0f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from segedge.pipeline import ExportConfig, export_model
    from segedge.quantize import Int8Config

    if not args.int8 and (args.calib_images is not None or args.calib_method is not None or args.activation is not None):
        raise SegedgeError("--calib-images, --calib-method and --activation only apply with --int8")
    if args.checkpoint is not None and args.untrained:
        raise SegedgeError("--checkpoint and --untrained exclude each other")
    int8 = Int8Config(
        calib_images=args.calib_images or Int8Config.calib_images,
        calib_method=args.calib_method or Int8Config.calib_method,
        activation=args.activation or Int8Config.activation,
    )
    config = ExportConfig(
        model=args.model,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        untrained=args.untrained,
        width=args.width,
        input_size=args.input_size,
        dynamic=args.dynamic,
        fp16=args.fp16,
        int8=args.int8,
        int8_config=int8,
        eval_images=args.eval_images,
        store=Path(args.out),
        threads=args.threads,
    )
    result = export_model(config, log=_log, progress=not args.quiet)
    manifest = result.manifest
    print(f"artifacts in {result.directory}")
    ref = manifest.get("reference", {}).get("miou")
    header = f"{'stage':6s} {'file':18s} {'agree %':>8s} {'mIoU':>6s} {'drop':>6s} {'max|Δ|':>9s}"
    print(header)
    for stage, entry in manifest["stages"].items():
        p = entry["parity"]
        print(f"{stage:6s} {entry['file']:18s} {100 * p['argmax_agreement']:8.3f} {100 * p['miou']:6.2f} "
              f"{p['miou_drop_points']:+6.2f} {p['max_abs_diff']:9.2e}")
    if ref is not None:
        print(f"torch FP32 reference mIoU {100 * ref:.2f} on {manifest['config']['eval']['images']} synthetic val images")
    if args.json:
        print(json.dumps(manifest, indent=2))
    return 0


# parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segedge",
        description="Take a segmentation model from PyTorch to a verified, benchmarked edge deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a zoo model on the built-in synthetic scenes (cached for export)")
    p.add_argument("--model", required=True, help="zoo model name (see `segedge models`)")
    p.add_argument("--width", type=_positive_float, default=1.0, help="channel width multiplier (default 1.0)")
    p.add_argument("--iterations", type=_positive_int, help="optimizer steps (default: the cached recipe's)")
    p.add_argument("--batch-size", type=_positive_int, help="crops per step")
    p.add_argument("--crop", type=_size, help="training crop HxW")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate (poly schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    p.add_argument("--out", help="checkpoint path (default: the weight cache, where export finds it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "export",
        help="export to ONNX, simplify, optionally FP16 / INT8, each checked against torch FP32",
        description="Export a zoo model stage by stage (ONNX → simplified → FP16 / INT8). Every artifact is "
        "compared with the torch FP32 model on held-out synthetic images; one that fails its gate is not kept.",
    )
    p.add_argument("--model", required=True, help="zoo model name (see `segedge models`)")
    p.add_argument("--checkpoint", help="a segedge checkpoint (default: cached trained weights, trained once if missing)")
    p.add_argument("--untrained", action="store_true", help="random weights (smoke tests only: figures mean nothing)")
    p.add_argument("--width", type=_positive_float, default=1.0, help="width multiplier when no checkpoint is given")
    p.add_argument("--input-size", type=_size, help="HxW of the exported input (default: the model's)")
    p.add_argument("--dynamic", action="store_true", help="dynamic H and W, proven by running a second size")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 graph (FP32 inputs/outputs)")
    p.add_argument("--int8", action="store_true", help="also write a static Q/DQ INT8 graph")
    p.add_argument("--calib-images", type=_positive_int, help="calibration images (default 32)")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), help="default minmax")
    p.add_argument("--activation", choices=("u8", "s8"), help="INT8 activation type: u8 for x86 onnxruntime (default), s8 symmetric for TensorRT")
    p.add_argument("--eval-images", type=_positive_int, default=8, help="held-out images for parity and mIoU (default 8)")
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: all cores)")
    p.add_argument("--out", default="export", help="artifact store (default ./export)")
    p.add_argument("--json", action="store_true", help="also print the manifest as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SegedgeError as exc:
        print(f"segedge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segedge: interrupted; finished artifacts are kept, unfinished ones were discarded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
