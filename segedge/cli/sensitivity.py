"""``segedge sensitivity``: the INT8 cost of each layer (or block) quantized alone, as a table and a bar chart."""

from __future__ import annotations

import argparse
from pathlib import Path

from segedge.cli.args import add_int8, add_run, add_source, int8_config, log, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sensitivity",
        help="INT8 cost of each layer quantized alone: Markdown table and a PNG bar chart",
        description="Quantize each Conv/ConvTranspose/MatMul layer (or block) alone with one shared calibration "
                    "and measure its mIoU drop and argmax agreement against the FP32 reference.",
    )
    add_source(p, model_help="zoo name or package.module:function (it is imported and run: only name code you trust; the current folder is not on the import path: set PYTHONPATH)",
               required=True, own=False)
    add_int8(p, search=False)
    p.add_argument("--eval-images", type=positive_int, default=8, help="held-out images for mIoU (default 8)")
    p.add_argument("--block-depth", type=positive_int, default=None,
                   help="group layers by the first N components of their torch module path (e.g. 1: down1, up2)")
    p.add_argument("--top", type=positive_int, default=None, help="show the N most sensitive only")
    p.add_argument("--png", help="write the bar chart here")
    p.add_argument("--out", default=None, help="artifact store (default: export/)")
    add_run(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.cli.args import writable_file
    from segedge.core.artifacts import DEFAULT_STORE

    writable_file(args.png, "bar chart")
    from segedge.flows.export import ExportConfig
    from segedge.flows.sensitivity import model_sensitivity
    from segedge.verify.sensitivity import sensitivity_bar_chart, sensitivity_markdown

    config = ExportConfig(
        model=args.model, checkpoint=Path(args.checkpoint) if args.checkpoint else None, width=args.width,
        input_size=args.input_size, eval_images=args.eval_images, threads=args.threads,
        store=Path(args.out) if args.out else DEFAULT_STORE, int8_config=int8_config(args),
    )
    report = model_sensitivity(config, block_depth=args.block_depth, log=(lambda _: None) if args.quiet else log,
                               progress=not args.quiet)
    print(sensitivity_markdown(list(report.results), args.top, report.full_int8))
    if args.png:
        path = sensitivity_bar_chart(list(report.results), args.png, args.top,
                                     title=f"{args.model}: INT8 ({report.scheme}) sensitivity, each layer alone")
        print(f"bar chart {path}")
    return 0
