"""``segedge eval``: every metric per class of a model, ONNX file or TensorRT engine on a dataset split."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from segedge.cli.args import DATA_KINDS, add_run, add_source, class_names, log, positive_int
from segedge.core.errors import SegedgeError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="all metrics per class of a zoo model, checkpoint, ONNX file or TensorRT engine")
    add_source(p, model_help="zoo name (cached trained weights or --checkpoint) or package.module:function "
               "(it is imported and run: only name code you trust; the current folder is not on the import path: set PYTHONPATH)", width_default=None)
    p.add_argument("--onnx", help="an ONNX file (normalisation and class names come from its segedge manifest if it has one)")
    p.add_argument("--engine", help="a TensorRT engine built by segedge")
    p.add_argument("--data", default="synthetic", help=DATA_KINDS)
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--images", type=positive_int, default=16, help="images to score (default 16)")
    p.add_argument("--crf", action="store_true",
                   help="refine each output with DeepLab v1's dense CRF on the CPU (needs pip install \"segedge[crf]\")")
    p.add_argument("--crf-iterations", type=positive_int, default=10, help="mean-field iterations of --crf (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_run(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.core.metrics import format_table
    from segedge.data.model_io import ModelIO
    from segedge.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from segedge.verify.evaluate import evaluate, manifest_beside

    given = [x for x in (args.model, args.onnx, args.engine) if x]
    if len(given) != 1:
        raise SegedgeError("give exactly one of --model NAME, --onnx FILE, --engine FILE")
    mean, std, names = args.mean, args.std, class_names(args.classes)
    size = args.input_size
    if args.model:
        from segedge.flows.export import ExportConfig, resolve_source

        source = resolve_source(ExportConfig(model=args.model, checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                                             input_size=size, mean=mean, std=std, num_classes=args.num_classes,
                                             class_names=names, output_key=getattr(args, "output_key", None)),
                                 log=log, progress=not args.quiet)
        runner = source.reference_runner(args.threads or os.cpu_count() or 1)
        io = source.io
        mean, std = source.spec.mean, source.spec.std
        size = size or source.spec.default_input_size
        names = names or source.class_names
    else:
        path = Path(args.onnx or args.engine)
        manifest = manifest_beside(path)
        norm = manifest.get("normalization", {})
        mean = mean or tuple(norm.get("mean", IMAGENET_MEAN))
        std = std or tuple(norm.get("std", IMAGENET_STD))
        names = names or tuple(manifest.get("class_names", ())) or None
        io = ModelIO.from_dict(manifest.get("io"))
        if args.onnx and not manifest:  # an ONNX from elsewhere: read what it takes and gives
            import onnx

            from segedge.data.model_io import model_io_from_onnx

            io, _ = model_io_from_onnx(onnx.load(str(path), load_external_data=False), str(path),
                                       args.layout.upper() if args.layout else None, args.output, args.threshold)
            if io.channels == 1 and mean is None:
                mean, std = (0.449,), (0.226,)
        if args.onnx:
            from segedge.backends.onnxruntime import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner(path, threads=args.threads)
        else:
            from segedge.backends.tensorrt.runner import TensorRTRunner

            runner = TensorRTRunner(path)
    crf = None
    if args.crf:
        from segedge.verify.crf import CrfParams

        crf = CrfParams(iterations=args.crf_iterations)
    result = evaluate(runner, args.data, args.split, size, args.images, mean, std, names, progress=not args.quiet, crf=crf,
                      io=io)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{result.backend} on {result.images} {result.data} {result.split} images"
              + (", refined by the dense CRF" if crf else ""))
        if crf:
            before = result.crf["without_crf"]
            print(f"dense CRF ({crf.iterations} mean-field iterations): mIoU {100 * before['miou']:.2f} -> "
                  f"{100 * result.scores.mean_iou:.2f}, pixel accuracy {100 * before['pixel_accuracy']:.2f} -> "
                  f"{100 * result.scores.pixel_accuracy:.2f}")
        print(format_table(result.scores, result.class_names or tuple(f"class_{i}" for i in range(len(result.scores.iou)))))
    return 0
