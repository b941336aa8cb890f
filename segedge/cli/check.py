"""``segedge check``: will a profile's backend take this model? A static answer that runs on any CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from segedge.cli.args import add_remote, device_argv, on_device, positive_float, size


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check",
        help="will a profile's TensorRT accept this model? (static check, runs on any CPU)",
        description="List what a profile's TensorRT ONNX parser cannot take (ops, opset, Resize modes, Q/DQ), DLA "
        "fallbacks, dynamic-shape traps and FP16 overflow risks. Exit code 1 when the profile cannot build the model.",
    )
    p.add_argument("target", metavar="MODEL_OR_ONNX", help="a zoo model name or an .onnx file")
    p.add_argument("--profile", required=True, help="profile name (see `segedge profiles`) or a .toml path")
    p.add_argument("--input-size", type=size, help="HxW to export a zoo model at (default: the profile's)")
    p.add_argument("--width", type=positive_float, default=0.25, help="width to export a zoo model at (structure only; default 0.25)")
    p.add_argument("--dla", action=argparse.BooleanOptionalAction, default=None, help="check DLA compatibility (default: as the profile says)")
    add_remote(p)
    p.set_defaults(func=run, command_parser=p)


def _is_onnx(target: str) -> bool:
    return target.endswith(".onnx") or Path(target).is_file()


def run(args: argparse.Namespace) -> int:
    from segedge.backends.tensorrt.check import check_model, check_onnx, format_report

    target = args.target
    if args.remote:
        from segedge.flows.remote import profile_file_for

        files = {"target": Path(target)} if _is_onnx(target) else {}
        if args.profile != "jetson":  # the device checks against this machine's definition of the profile
            files["profile"] = profile_file_for(args.profile)
        flags, _ = device_argv(args.command_parser, args, skip=("profile",))
        argv = ["check", "\0target" if "target" in files else target,
                "--profile", "\0profile" if "profile" in files else args.profile, *flags]
        return on_device(args, argv, {f"\0{k}": v for k, v in files.items()})
    if _is_onnx(target):
        report = check_onnx(target, args.profile, dla=args.dla)
    else:
        report = check_model(target, args.profile, input_size=args.input_size, width=args.width, dla=args.dla)
    print(format_report(report))
    return 0 if report.ok else 1
