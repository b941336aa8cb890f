"""``segedge models``: the zoo with its size, cost and capabilities."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.models.registry import get_spec, list_models

    print(f"{'model':24s} {'params':>8s} {'GMACs':>7s} {'size':>9s} {'stride':>6s} {'H,W ×':>5s}  {'flags':20s} description")
    for name in list_models():
        spec = get_spec(name)
        h, w = spec.default_input_size
        params, gmacs = spec.complexity()
        print(f"{name:24s} {params / 1e6:7.2f}M {gmacs:7.1f} {f'{h}x{w}':>9s} {spec.output_stride:6d} "
              f"{spec.size_multiple:5d}  {spec.flags():20s} {spec.description.splitlines()[0][:80]}")
    print("GMACs at the default size, width 1.0; flags: dynamic = dynamic H/W export, int8 = INT8-safe, "
          "trt = TensorRT's ONNX parser takes it")
    return 0
