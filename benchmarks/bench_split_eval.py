"""Split evaluation on a local Ray cluster: bytes shipped on a first and a second run, and the wall time of one
row's evaluation on two devices (``--split-eval``) against one.

A head and two worker nodes on this machine, each worker advertising the profile once (one job at a time per
"device", one inference thread each). The user's model is an outside ONNX (the zoo's BiSeNet, random weights,
two classes, exported here) and the data a generated ``cells`` folder (``make_cells.py``): the route of the
user's own model and data, exported here, sent through Ray's object store, each node keeping what it fetched.

Runs, in this order, with the store of rows reset between timed runs (``--force``):
1. split, first run: what each node fetches (the artifact and the packed evaluation split);
2. split and unsplit, alternating, ``--repeats`` times each: the wall time of the whole sweep (export reused
   here, timing on one device, the evaluation on one device or cut over two), and the bytes fetched (none).

    python benchmarks/bench_split_eval.py --images 320 --size 256x512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

PROFILE = """
name = "split-bench"
description = "two local Ray worker nodes advertise it (benchmarks/bench_split_eval.py)"
backend = "onnxruntime"
providers = ["CPUExecutionProvider"]
precisions = ["fp32"]
input_size = [{h}, {w}]
threads = 1
warmup_runs = 2
min_runs = 10
min_seconds = 0.0
"""


def export_bisenet(path: Path, size: tuple[int, int]) -> Path:
    import torch

    from segedge.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("bisenet", num_classes=2).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, *size),), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320, help="cells images generated (a 25 %% holdout is scored)")
    parser.add_argument("--size", default="256x512", help="HxW of images and model")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    import ray
    from ray.cluster_utils import Cluster

    from make_cells import write_cells
    from segedge.core.artifacts import tool_versions
    from segedge.core.hardware import cpu_flags, cpu_model
    from segedge.flows.bench import BenchConfig, BenchSource
    from segedge.flows.fleet import sweep_on_ray

    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="segedge-split-bench-"))
    data = write_cells(work / "cells", args.images, size)
    onnx = export_bisenet(work / "bisenet-random.onnx", size)
    (work / "split-bench.toml").write_text(PROFILE.format(h=size[0], w=size[1]))
    node = dict(node_ip_address="127.0.0.1", object_store_memory=300 * 1024 * 1024)
    cluster = Cluster(initialize_head=True, head_node_args=dict(**node, num_cpus=0, include_dashboard=False))
    runs: dict[str, list[dict]] = {"split": [], "one device": []}
    try:
        for _ in range(2):
            cluster.add_node(**node, num_cpus=1, resources={"split-bench": 1})
        cluster.wait_for_nodes()

        def sweep(split: bool, force: bool) -> dict:
            own = BenchConfig(models=(), precisions=("fp32",), input_size=None, store=work / "rows.sqlite",
                              artifacts=work / "export", sources=(BenchSource("bisenet", onnx=onnx),),
                              data=f"folder:{data}", mean=(0.5,) * 3, std=(0.25,) * 3, force=force)
            started = time.perf_counter()
            result = sweep_on_ray(cluster.address, [str(work / "split-bench.toml")], (), None, None, own.store,
                                  device_dir=str(work / "devices"), timeout_s=3600, log=log, own=own, split_eval=split)
            seconds = time.perf_counter() - started
            (row,) = result.rows
            return {"seconds": seconds, "fetched_mb": sum(j.fetched_bytes or 0 for j in result.jobs) / 1e6,
                    "jobs": len(result.jobs), "eval_images": row["eval_images"], "miou": row["miou"],
                    "drop_low": row["drop_low"], "drop_high": row["drop_high"], "median_ms": row["median_ms"]}

        first = sweep(split=True, force=False)
        second = sweep(split=True, force=True)
        for _ in range(args.repeats):  # round robin: both ways on the same warm nodes, in turn
            runs["one device"].append(sweep(split=False, force=True))
            runs["split"].append(sweep(split=True, force=True))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    same = all(r["miou"] == runs["split"][0]["miou"] and r["drop_low"] == runs["split"][0]["drop_low"]
               and r["drop_high"] == runs["split"][0]["drop_high"] for r in runs["split"] + runs["one device"])
    median = {name: statistics.median(r["seconds"] for r in rows) for name, rows in runs.items()}
    facts = {"cpu": cpu_model(), "flags": list(cpu_flags()), "arch": platform.machine(), "cores": os.cpu_count(),
             "versions": tool_versions(), "ray": ray.__version__, "images": args.images, "size": list(size),
             "eval_images": first["eval_images"]}
    stem = f"split-eval-2-nodes-{size[0]}x{size[1]}-{platform.machine()}"
    out = Path(args.results)
    summary = {"title": f"Split evaluation on two Ray nodes against one ({size[0]}x{size[1]})",
               "date": time.strftime("%Y-%m-%d"), "machine": facts, "first_run": first, "second_run": second, "runs": runs, "median_s": median,
               "speedup": median["one device"] / median["split"], "same_figures": same}
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"Split evaluation, two local Ray worker nodes (1 thread each) against one, BiSeNet (random weights, 2 "
             f"classes) as an outside ONNX at {size[0]}x{size[1]}, {first['eval_images']} evaluation images of a "
             f"generated cells folder; {facts['cpu']}, {facts['cores']} cores (flags: {' '.join(facts['flags'])}); "
             f"ray {ray.__version__}", "",
             f"- fetched from the object store: first run {first['fetched_mb']:.2f} MB (both nodes), second run "
             f"{second['fetched_mb']:.2f} MB",
             f"- wall time of the sweep (medians of {args.repeats}, alternating): one device "
             f"{median['one device']:.1f} s, split over two {median['split']:.1f} s: "
             f"{summary['speedup']:.2f}x",
             f"- the same mIoU and drop interval in every run, split or not: {same}", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
