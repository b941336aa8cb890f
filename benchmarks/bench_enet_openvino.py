"""ENet's unpooling export forms side by side: MaxPool indices (old ``enet``) against the index-free first-maximum
mask (``enet`` and ``enet-trt`` now) and the DepthToSpace form, on ONNX Runtime FP32, OpenVINO f32 and bf16.

OpenVINO's CPU plugin runs MaxPool with an indices output as a reference kernel, which made ENet ~3-4x slower
there than on ONNX Runtime and hid bf16's gain. One ENet (untrained weights, seeded, BN statistics spread so the
activations are not all alike), exported once per form with segedge's exporter and simplifier, 512x1024, batch 1;
every runner timed round-robin in one loop (``interleaved_latencies``) so the machine's noise hits all alike: read
the ratios. Also prints each form's largest output difference from the indexed torch model.

    python benchmarks/bench_enet_openvino.py [--rounds 15] [--threads 2] [--forms indexed,index_free,depth_to_space]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMS = {"indexed": "old enet (MaxPool indices + ScatterND)", "index_free": "enet, enet-trt (first-max mask)",
         "depth_to_space": "winners + DepthToSpace (unused)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--num-classes", type=int, default=19)
    args = parser.parse_args()

    import torch

    from segedge.backends.onnxruntime import OnnxRuntimeRunner
    from segedge.backends.openvino import OpenVinoRunner
    from segedge.core.hardware import cpu_flags, cpu_model
    from segedge.graph.export import onnx_from_torch
    from segedge.graph.simplify import simplified_onnx
    from segedge.models.enet import ENet
    from segedge.models.registry import get_spec
    from segedge.verify.timing import side_by_side_latencies

    import onnxruntime
    import openvino

    height, width = map(int, args.size.lower().split("x"))
    forms = args.forms.split(",")
    spec = get_spec("enet")
    torch.manual_seed(0)
    reference = ENet(num_classes=args.num_classes, unpool_mode="indexed").eval()
    for module in reference.modules():  # untrained weights, but BN statistics that are not all 0/1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    batch = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(batch)).numpy()

    flags = [f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma"))]
    print(f"CPU: {cpu_model()} ({platform.machine()}), flags: {' '.join(flags)}")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}; "
          f"{height}x{width}, batch 1, {args.threads} threads, {args.rounds} rounds round-robin")

    runners = {}
    with tempfile.TemporaryDirectory(prefix="bench-enet-") as folder:
        for form in forms:
            model = ENet(num_classes=args.num_classes, unpool_mode=form).eval()
            model.load_state_dict(reference.state_dict())
            raw, sim = Path(folder) / f"{form}.onnx", Path(folder) / f"{form}.sim.onnx"
            onnx_from_torch(model, spec, raw, (height, width))
            simplified_onnx(raw, sim)
            runners[f"{form}/ort-fp32"] = OnnxRuntimeRunner(sim, threads=args.threads)
            for precision in ("f32", "bf16"):
                runners[f"{form}/ov-{precision}"] = OpenVinoRunner(sim, threads=args.threads,
                                                                   inference_precision=precision)
        for name, runner in runners.items():
            with runner:
                got = runner.infer(batch)
            diff = float(np.abs(got - expected).max())
            agree = float((got.argmax(1) == expected.argmax(1)).mean())
            print(f"  {name:26s} max |out - torch indexed| {diff:.2e}  argmax agreement {agree:.5f}")
        stats = side_by_side_latencies(runners, batch, warmup=args.warmup, rounds=args.rounds)

    med = {name: s.median_ms for name, s in stats.items()}
    print(f"\n{'runner':28s} {'median ms':>10s} {'p90 ms':>8s} {'min ms':>8s}")
    for name, s in stats.items():
        print(f"{name:28s} {s.median_ms:10.1f} {s.p90_ms:8.1f} {s.min_ms:8.1f}")
    print(f"\n{'form':16s} {'OV bf16 / OV f32':>17s} {'OV f32 / ORT':>13s} {'OV bf16 / ORT':>14s}   (speed-up = f32 ms / bf16 ms)")
    for form in forms:
        ort, f32, bf16 = (med[f"{form}/{k}"] for k in ("ort-fp32", "ov-f32", "ov-bf16"))
        print(f"{form:16s} {f32 / bf16:16.2f}x {f32 / ort:13.2f} {bf16 / ort:14.2f}   {FORMS.get(form, '')}")
    if "indexed" in forms:
        print("\nagainst the indexed form (old ms / new ms):")
        for form in forms:
            if form != "indexed":
                print(f"  {form:16s} " + "  ".join(
                    f"{k} {med[f'indexed/{k}'] / med[f'{form}/{k}']:.2f}x" for k in ("ort-fp32", "ov-f32", "ov-bf16")))


if __name__ == "__main__":
    main()
