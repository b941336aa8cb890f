"""``segedge sweep``: model × precision × profile jobs on a Ray cluster of devices, one job per device at a time."""

from __future__ import annotations

import argparse
from pathlib import Path

from segedge.cli.args import add_sweep, checkpoint_map, comma_list, log, positive_float


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="model × precision × profile jobs on a Ray cluster of devices, one job per device at a time",
        description="Each device joins the cluster advertising its profile as a resource: "
        "ray start --address HEAD:6379 --resources '{\"jetson-orin-nano\": 1}'. Every job takes that whole "
        "resource, so measurements never share a device; rows stream into the local store as jobs finish. "
        "Needs pip install 'segedge[fleet]'.",
    )
    p.add_argument("--ray", required=True, metavar="ADDRESS", help="the cluster: HEAD:6379 on a node of it, "
                   "ray://HEAD:10001 from a workstation (Ray Client), or auto")
    p.add_argument("--profiles", required=True, help="comma-separated profiles (names or .toml paths); each is a resource name")
    add_sweep(p, each="each profile's")
    from segedge.cli.bench import add_models_and_data

    add_models_and_data(p).add_argument(
        "--out", default="export", help="where your models are exported here before they are sent (with --onnx, "
        "--model, --artifact or --data)")
    p.add_argument("--device-dir", default="~/.cache/segedge/fleet", help="artifacts and store on each device")
    p.add_argument("--split-eval", action="store_true", help="cut each row's evaluation images over every device of "
                   "its profile (one device times the row): the same mIoU, interval and agreement as one device, sooner")
    p.add_argument("--timeout", type=positive_float, help="stop waiting after this many seconds (finished rows are kept)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.flows.fleet import sweep_on_ray
    from segedge.flows.report import render

    from segedge.cli.bench import bench_config
    from segedge.core.precision import parse_precisions

    own = bench_config(args, parse_precisions(args.precisions) if args.precisions else (), args.eval_images)
    result = sweep_on_ray(
        args.ray, list(comma_list(args.profiles) or ()), comma_list(args.models) or ("bisenet",), comma_list(args.precisions),
        args.input_size, Path(args.results), checkpoints=checkpoint_map(args.checkpoint), eval_images=args.eval_images,
        quick=args.quick, force=args.force, device_dir=args.device_dir, timeout_s=args.timeout, log=log, own=own,
        split_eval=args.split_eval)
    if result.rows:
        print(render(result.rows, "md"), end="")
    print(f"results in {args.results}")
    return 0 if all(r["status"] != "failed" for r in result.rows) else 1
