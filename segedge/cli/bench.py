"""``segedge bench``: latency, FPS and mIoU drop per model × precision on a hardware profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from segedge.cli.args import add_remote, add_sweep, checkpoint_map, comma_list, local_only, log


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="latency, FPS and mIoU drop per model × precision on a hardware profile",
        description="Measure each model × precision of a profile: latency percentiles, FPS, memory, and the mIoU "
        "drop against torch FP32. Rows are committed to a SQLite store as they finish; a rerun resumes. On hardware "
        "that does not match the profile it refuses and says what is missing.",
    )
    p.add_argument("--profile", required=True, help="profile name (see `segedge profiles`), `jetson`, or a .toml path")
    add_sweep(p)
    local_only(p.add_argument("--out", default="export", help="artifact store (with --remote: where the ONNX artifacts are exported here)"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="only check that the profile runs on this machine, and with which backend")
    add_remote(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segedge.backends.profiles import list_profiles, load_profile, require_runnable
    from segedge.core.hardware import detect_machine
    from segedge.core.precision import parse_precisions
    from segedge.flows.bench import BenchConfig, run_sweep
    from segedge.flows.report import render
    from segedge.models.registry import get_spec

    models = tuple(get_spec(m.strip()).name for m in args.models.split(",") if m.strip())
    if args.remote:
        from segedge.cli.args import ssh_target
        from segedge.flows.remote import bench_on_device

        rows, code = bench_on_device(
            ssh_target(args), args.profile, models, comma_list(args.precisions), args.input_size, args.eval_images,
            args.quick, args.force, checkpoint_map(args.checkpoint), Path(args.results), Path(args.out), log=log,
            progress=not args.quiet)
        if rows:
            print(render(rows, "md"), end="")
        print(f"results in {args.results}")
        return code
    machine = detect_machine()
    profile = load_profile(args.profile, machine)
    backend = require_runnable(profile, machine, list_profiles())
    if args.dry_run:
        print(f"profile {profile.name} runs here ({machine.describe()}) with {backend}; "
              f"INT8 scheme {profile.int8_scheme_on(backend, machine)}")
        return 0
    precisions = parse_precisions(args.precisions) if args.precisions else profile.precisions
    config = BenchConfig(
        models=models, precisions=precisions, input_size=args.input_size or profile.input_size,
        store=Path(args.results), artifacts=Path(args.out), eval_images=4 if args.quick else args.eval_images,
        quick=args.quick, force=args.force, checkpoints=checkpoint_map(args.checkpoint),
    )
    log(f"profile {profile.name} on {machine.describe()} with {backend}")
    rows = run_sweep(profile, backend, machine, config, log=log, progress=not args.quiet)
    if rows:
        print(render(rows, "md"), end="")
    print(f"results in {config.store}")
    _figures(config.store, profile.name, machine.machine_id)
    return 0 if all(r["status"] != "failed" and "unsaved" not in r for r in rows) else 1


def _figures(store_path: Path, profile: str, machine_id: str) -> None:
    """The Pareto plot and overlays of everything this machine measured on the profile (resumed rows too)."""
    from segedge.core.results import ResultsStore
    from segedge.flows.report import pareto_plot, write_overlays

    with ResultsStore(store_path) as store:
        rows = [r for r in store.latest_rows() if r["profile"] == profile and r["machine_id"] == machine_id]
    if not any(r["status"] != "failed" for r in rows):
        return
    folder = store_path.parent
    print(f"Pareto plot {pareto_plot(rows, folder / f'pareto-{profile}.png')}")
    for path in write_overlays(rows, folder / "overlays"):
        print(f"overlay {path}")
