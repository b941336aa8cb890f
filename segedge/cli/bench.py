"""``segedge bench``: latency, FPS and mIoU drop per model × precision on a hardware profile."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from segedge.cli.args import (DATA_KINDS, add_own_model, add_remote, add_sweep, class_names, local_only, log,
                              positive_int)
from segedge.core.errors import SegedgeError


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
    g = add_models_and_data(p)
    # the workstation's side of a --remote bench, for the device: not for users
    g.add_argument("--expect-data-fingerprint", type=_expected_data, help=argparse.SUPPRESS)
    g.add_argument("--data-label", help=argparse.SUPPRESS)
    local_only(p.add_argument("--out", default="export", help="artifact store (with --remote: where the ONNX artifacts are exported here)"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="only check that the profile runs on this machine, and with which backend")
    add_remote(p).add_argument(
        "--device-data", metavar="KIND:ROOT", help="with --remote and --data: the device's own copy of the same files "
        "(checked against the data scored here before any row; default: the evaluation split is sent, once)")
    p.set_defaults(func=run)


def add_models_and_data(p: argparse.ArgumentParser):
    """The user's models and data, as ``bench`` and ``sweep`` take them."""
    g = p.add_argument_group("your models and data (as `segedge export` takes them)")
    g.add_argument("--onnx", action="append", metavar="[NAME=]PATH", help="an ONNX made elsewhere (repeatable); the row's "
                   "model is NAME, else the file's stem")
    g.add_argument("--artifact", action="append", metavar="[NAME=]DIR", help="a directory `segedge export` wrote, run "
                   "as it is (repeatable): nothing rebuilt and no torch needed (the device's light install); its "
                   "reference is its own FP32 ONNX; the row's model is NAME, else the manifest's")
    g.add_argument("--model", action="append", metavar="[NAME=]PACKAGE.MODULE:FUNCTION", help="any nn.Module (repeatable; "
                   "imported and run: only name code you trust); weights with --checkpoint NAME=PATH")
    g.add_argument("--data", default="synthetic", help=f"evaluation and calibration data: {DATA_KINDS}")
    g.add_argument("--calib-data", help="calibrate INT8 on this dataset's training split instead (KIND:ROOT)")
    g.add_argument("--calib-images", type=positive_int, help="INT8 calibration images (default 32)")
    g.add_argument("--quantize-classifier", action="store_true", help="INT8 rows quantize the classifier too "
                   "(default: it stays float; a model whose only layer is its classifier then stays FP32)")
    add_own_model(g)
    return g


def run(args: argparse.Namespace) -> int:
    from segedge.backends.profiles import list_profiles, load_profile, require_runnable
    from segedge.core.hardware import detect_machine
    from segedge.core.precision import parse_precisions
    from segedge.flows.bench import run_sweep
    from segedge.flows.report import render

    if args.device_data and not args.remote:
        raise SegedgeError("--device-data names the data's copy on a --remote device; here give --data KIND:ROOT")
    if args.remote:
        from segedge.cli.args import ssh_target
        from segedge.flows.remote import bench_on_device

        precisions = parse_precisions(args.precisions) if args.precisions else ()
        rows, code = bench_on_device(ssh_target(args), args.profile, bench_config(args, precisions, args.eval_images), log=log,
                                     progress=not args.quiet, device_data=args.device_data)
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
    config = bench_config(args, precisions, args.eval_images or (4 if args.quick and args.data == "synthetic" else None))
    log(f"profile {profile.name} on {machine.describe()} with {backend}")
    rows = run_sweep(profile, backend, machine, config, log=log, progress=not args.quiet)
    if rows:
        print(render(rows, "md"), end="")
    print(f"results in {config.store}")
    _figures(config.store, profile.name, machine.machine_id)
    return 0 if all(r["status"] != "failed" and "unsaved" not in r for r in rows) else 1


def bench_config(args: argparse.Namespace, precisions: tuple[str, ...], eval_images: int | None):
    """The sweep ``args`` ask for: zoo names with their checkpoints, the user's own models, data and options."""
    from segedge.flows.bench import BenchConfig
    from segedge.models.registry import get_spec

    sources = own_sources(args)
    given = args.models or ("" if sources else "bisenet")
    models = tuple(get_spec(m.strip()).name for m in given.split(",") if m.strip())
    own_names = {s.name for s in sources}
    zoo_checkpoints = {get_spec(k).name: v for k, v in _checkpoints(args).items() if k not in own_names}
    return BenchConfig(
        models=models, precisions=precisions, input_size=args.input_size,
        store=Path(args.results), artifacts=Path(args.out), eval_images=eval_images,
        quick=args.quick, force=args.force, checkpoints=zoo_checkpoints,
        sources=sources, data=args.data, calib_data=args.calib_data, calib_images=args.calib_images,
        quantize_classifier=args.quantize_classifier,
        mean=args.mean, std=args.std, num_classes=args.num_classes, class_names=class_names(args.classes),
        layout=args.layout.upper() if args.layout else None, output=args.output, threshold=args.threshold,
        output_key=args.output_key, expect_data=getattr(args, "expect_data_fingerprint", None),
        data_label=getattr(args, "data_label", None),
    )


def _expected_data(text: str) -> dict[tuple[int, int], str]:
    """``HxW=FINGERPRINT[,HxW=FINGERPRINT]``: what the workstation scored at each input size."""
    expected = {}
    for item in text.split(","):
        size, _, fingerprint = item.partition("=")
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        if not match or not re.fullmatch(r"[0-9a-f]{16}", fingerprint):
            raise argparse.ArgumentTypeError(f"expected HxW=FINGERPRINT, got {item!r}")
        expected[(int(match.group(1)), int(match.group(2)))] = fingerprint
    return expected


def _figures(store_path: Path, profile: str, machine_id: str) -> None:
    """The Pareto plot, overlays and HTML report of everything this machine measured on the profile (resumed rows too)."""
    from segedge.core.results import ResultsStore
    from segedge.flows.html_report import write_html
    from segedge.flows.report import pareto_plot, write_overlays

    with ResultsStore(store_path, read_only=True) as store:  # reading: the figures never write the store
        rows = [r for r in store.latest_rows() if r["profile"] == profile and r["machine_id"] == machine_id]
    if not any(r["status"] != "failed" for r in rows):
        return
    folder = store_path.parent
    print(f"Pareto plot {pareto_plot(rows, folder / f'pareto-{profile}.png')}")
    overlays = write_overlays(rows, folder / "overlays")
    for path in overlays:
        print(f"overlay {path}")
    print(f"HTML report {write_html(rows, folder / f'report-{profile}.html', overlays=overlays)}")


def _checkpoints(args: argparse.Namespace) -> dict[str, Path]:
    mapping = {}
    for item in args.checkpoint or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise SegedgeError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        mapping[name] = Path(path)
    return mapping


def own_sources(args: argparse.Namespace):
    """--onnx [NAME=]PATH and --model [NAME=]pkg.mod:fn as bench sources, each with its --checkpoint NAME=PATH."""
    from segedge.flows.bench import BenchSource
    from segedge.flows.sources import default_name

    checkpoints = _checkpoints(args)
    sources = []
    for item in args.onnx or []:
        name, sep, path = item.partition("=")
        path = Path(path if sep else item)
        sources.append(BenchSource(name if sep else path.stem, onnx=path))
    for item in args.model or []:
        name, sep, reference = item.partition("=")
        if not sep or ":" in name or "/" in name:  # no NAME=: the whole is the reference (a path may hold '=')
            name, reference = default_name(item), item
        sources.append(BenchSource(name, model=reference, checkpoint=checkpoints.get(name)))
    for item in args.artifact or []:
        name, sep, path = item.partition("=")
        directory = Path(path if sep else item)
        if not (directory / "manifest.json").is_file():
            raise SegedgeError(f"{directory} holds no segedge manifest.json; --artifact takes a directory `segedge "
                               f"export` wrote (export/<model>/<hash>)")
        if not sep:
            import json

            try:
                name = json.loads((directory / "manifest.json").read_text()).get("model") or directory.parent.name
            except (OSError, ValueError) as exc:
                raise SegedgeError(f"{directory / 'manifest.json'} is unreadable ({exc})") from None
        sources.append(BenchSource(name, artifact=directory))
    for source in sources:
        row_name(source.name)
        if source.onnx is not None and source.onnx.is_dir():
            raise SegedgeError(f"--onnx {source.onnx} is a directory; give the .onnx file in it (or --artifact DIR for "
                               f"a directory `segedge export` wrote)")
        if source.onnx is not None and not source.onnx.is_file():
            raise SegedgeError(f"ONNX file {source.onnx} does not exist")
    return tuple(sources)


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def row_name(name: str) -> str:
    """A row's model name becomes part of file names (overlays, plots) and of the store's keys: checked once, here.
    Letters, digits, ``_ . + -``, starting with a letter or digit (no ``/``, no ``..``)."""
    if not NAME.fullmatch(name) or ".." in name:
        raise SegedgeError(f"model name {name!r} is not a plain name: use letters, digits and _ . + - (at most 100, "
                           f"starting with a letter or digit), e.g. --onnx mine=path/to/model.onnx")
    return name
