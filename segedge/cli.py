"""``segedge`` command line: argument parsing only; each subcommand calls the Python API.

A user mistake prints one line (``segedge: error: ...``) and exits 1; argparse's own usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from segedge import __version__
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


def _scale_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (e.g. 0.75,1.5)") from None
    return low, high


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three comma-separated numbers (R,G,B on the 0–1 scale)")
    return values


def _class_names(path: str | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    try:
        names = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    except OSError as exc:
        raise SegedgeError(f"cannot read class list {path}: {exc.strerror or exc}") from None
    if not names:
        raise SegedgeError(f"class list {path} is empty")
    return names


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# subcommands ---------------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> int:
    from segedge.registry import get_spec, list_models

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


def cmd_train(args: argparse.Namespace) -> int:
    from segedge.registry import get_spec
    from segedge.train import TrainConfig, train

    spec = get_spec(args.model)
    fields = {"model": spec.name, "width": args.width, "seed": args.seed, "threads": args.threads,
              "optimizer": args.optimizer, "schedule": args.schedule, "loss": args.loss, "data": args.data,
              "jitter": args.jitter, "eval_every": args.eval_every}
    for name in ("iterations", "batch_size", "crop", "lr", "scene_size", "train_scenes", "val_images"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.scale_range is not None:
        fields["scale_range"] = args.scale_range
    config = TrainConfig(**fields)
    from segedge.losses import build_loss

    build_loss(config.loss, 2)  # a bad --loss spec fails before any data is touched
    ckpt = train(config, out=args.out, progress=not args.quiet, resume=args.resume)
    info = ckpt.train_info
    print(f"checkpoint {ckpt.path}")
    print(f"val mIoU {100 * info['val_miou']:.2f} on {info['val_images']} synthetic val images "
          f"(pixel accuracy {100 * info['val_pixel_accuracy']:.2f}); trained in {info['seconds']:.0f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from segedge.pipeline import ExportConfig, export_model
    from segedge.quantize import Int8Config

    if args.remote:
        files = {"checkpoint": args.checkpoint, "onnx": args.onnx, "classes": args.classes}
        argv = ["export", *_argv_from(args, EXPORT_FLAGS, files={k: v for k, v in files.items() if v})]
        return _passthrough(args, argv, {f"\0{k}": Path(v) for k, v in files.items() if v})
    int8_only = (args.calib_images, args.calib_method, args.calib_select, args.activation, args.int8_scheme,
                 args.max_drop, args.max_search_steps, args.equalize, args.search_order)
    if not args.int8 and any(v is not None for v in int8_only):
        raise SegedgeError("--calib-images, --calib-method, --calib-select, --activation, --int8-scheme, --max-drop, "
                           "--max-search-steps, --search-order and --equalize only apply with --int8")
    if args.checkpoint is not None and args.untrained:
        raise SegedgeError("--checkpoint and --untrained exclude each other")
    if (args.model is None) == (args.onnx is None):
        raise SegedgeError("give either --model NAME (a zoo name or package.module:function) or --onnx FILE")
    int8 = Int8Config(
        calib_images=args.calib_images or Int8Config.calib_images,
        calib_method=args.calib_method or Int8Config.calib_method,
        calib_select=args.calib_select or Int8Config.calib_select,
        equalize=bool(args.equalize),
        activation=args.activation or Int8Config.activation,
        scheme=args.int8_scheme,
        max_drop=args.max_drop,
        max_search_steps=args.max_search_steps or Int8Config.max_search_steps,
        search_order=args.search_order or Int8Config.search_order,
    )
    config = ExportConfig(
        model=args.model or "",
        onnx=Path(args.onnx) if args.onnx else None,
        data=args.data,
        mean=args.mean,
        std=args.std,
        num_classes=args.num_classes,
        class_names=_class_names(args.classes),
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
        backend = manifest.get("reference", {}).get("backend", "torch")
        print(f"{backend} FP32 reference mIoU {100 * ref:.2f} on {manifest['config']['eval']['images']} "
              f"{manifest['config']['eval']['data']} val images")
    int8_entry = manifest["stages"].get("int8", {})
    if int8_entry.get("mixed_precision", {}).get("message"):
        print(int8_entry["mixed_precision"]["message"])
    for warning in int8_entry.get("warnings", []):
        print(f"warning: {warning}")
    if args.json:
        print(json.dumps(manifest, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from segedge.evaluate import evaluate, manifest_beside
    from segedge.metrics import format_table
    from segedge.registry import IMAGENET_MEAN, IMAGENET_STD

    given = [x for x in (args.model, args.onnx, args.engine) if x]
    if len(given) != 1:
        raise SegedgeError("give exactly one of --model NAME, --onnx FILE, --engine FILE")
    mean, std, names = args.mean, args.std, _class_names(args.classes)
    size = args.input_size
    if args.model:
        from segedge.pipeline import ExportConfig, resolve_source

        source = resolve_source(ExportConfig(model=args.model, checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                                             input_size=size, mean=mean, std=std, num_classes=args.num_classes,
                                             class_names=names), log=_log, progress=not args.quiet)
        runner = source.reference_runner(args.threads or os.cpu_count() or 1)
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
        if args.onnx:
            from segedge.runners.onnxrt import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner(path, threads=args.threads)
        else:
            from segedge.runners.tensorrt import TensorRTRunner

            runner = TensorRTRunner(path)
    crf = None
    if args.crf:
        from segedge.crf import CrfParams

        crf = CrfParams(iterations=args.crf_iterations)
    result = evaluate(runner, args.data, args.split, size, args.images, mean, std, names, progress=not args.quiet, crf=crf)
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


def cmd_check(args: argparse.Namespace) -> int:
    from segedge.check import check_model, check_onnx, format_report

    target = args.target
    if args.remote:
        from segedge.remote import profile_file_for

        files = {"target": Path(target)} if target.endswith(".onnx") or Path(target).is_file() else {}
        if args.profile != "jetson":  # the device checks against this machine's definition of the profile
            files["profile"] = profile_file_for(args.profile)
        argv = ["check", "\0target" if "target" in files else target,
                "--profile", "\0profile" if "profile" in files else args.profile,
                *_argv_from(args, {"input_size": "size", "width": "value", "dla": "bool"})]
        return _passthrough(args, argv, {f"\0{k}": v for k, v in files.items()})
    if target.endswith(".onnx") or Path(target).is_file():
        report = check_onnx(target, args.profile, dla=args.dla)
    else:
        report = check_model(target, args.profile, input_size=args.input_size, width=args.width, dla=args.dla)
    print(format_report(report))
    return 0 if report.ok else 1


def cmd_profiles(args: argparse.Namespace) -> int:
    from segedge.hardware import detect_machine
    from segedge.profiles import list_profiles

    machine = detect_machine()
    print(f"this machine: {machine.describe()}")
    for profile in list_profiles():
        lacks = profile.missing(machine)
        state = f"runs here ({profile.usable_backend(machine)})" if not lacks else "lacks " + "; ".join(lacks)
        print(f"{profile.name:18s} {profile.description}\n{'':18s} {state}")
    print(f"{'jetson':18s} the profile of the Jetson module segedge runs on")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from segedge.hardware import detect_machine
    from segedge.profiles import PRECISIONS, list_profiles, load_profile, require_runnable
    from segedge.registry import get_spec
    from segedge.report import render
    from segedge.sweep import BenchConfig, run_sweep

    models = tuple(get_spec(m.strip()).name for m in args.models.split(",") if m.strip())
    if args.remote:
        from segedge.remote import bench_on_device

        target = _ssh_target(args)
        rows, code = bench_on_device(
            target, args.profile, models, _list(args.precisions), args.input_size, args.eval_images, args.quick,
            args.force, _checkpoint_map(args.checkpoint or []), Path(args.results), Path(args.out), log=_log,
            progress=not args.quiet)
        if rows:
            print(render(rows, "md"), end="")
        print(f"results in {args.results}")
        return code
    machine = detect_machine()
    profile = load_profile(args.profile, machine)
    backend = require_runnable(profile, machine, list_profiles())
    if args.dry_run:
        print(f"profile {profile.name} runs here ({machine.describe()}) with {backend}")
        return 0
    precisions = tuple(p.strip() for p in args.precisions.split(",")) if args.precisions else profile.precisions
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise SegedgeError(f"unknown precision {bad[0]!r}; choose from {', '.join(PRECISIONS)}")
    config = BenchConfig(
        models=models, precisions=precisions, input_size=args.input_size or profile.input_size,
        store=Path(args.results), artifacts=Path(args.out), eval_images=4 if args.quick else args.eval_images,
        quick=args.quick, force=args.force, checkpoints=_checkpoint_map(args.checkpoint or []),
    )
    _log(f"profile {profile.name} on {machine.describe()} with {backend}")
    rows = run_sweep(profile, backend, machine, config, log=_log, progress=not args.quiet)
    if rows:
        print(render(rows, "md"), end="")
    print(f"results in {config.store}")
    _bench_figures(config.store, profile.name, machine.machine_id)
    return 0 if all(r["status"] != "failed" for r in rows) else 1


def _bench_figures(store_path: Path, profile: str, machine_id: str) -> None:
    """The Pareto plot and overlays of everything this machine measured on the profile (resumed rows too)."""
    from segedge.report import pareto_plot, write_overlays
    from segedge.results import ResultsStore

    with ResultsStore(store_path) as store:
        rows = [r for r in store.latest_rows() if r["profile"] == profile and r["machine_id"] == machine_id]
    if not any(r["status"] != "failed" for r in rows):
        return
    folder = store_path.parent
    print(f"Pareto plot {pareto_plot(rows, folder / f'pareto-{profile}.png')}")
    for path in write_overlays(rows, folder / "overlays"):
        print(f"overlay {path}")


def _list(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def cmd_sweep(args: argparse.Namespace) -> int:
    from segedge.fleet import sweep_on_ray
    from segedge.report import render

    result = sweep_on_ray(
        args.ray, list(_list(args.profiles) or ()), _list(args.models) or (), _list(args.precisions), args.input_size,
        Path(args.results), checkpoints=_checkpoint_map(args.checkpoint or []), eval_images=args.eval_images,
        quick=args.quick, force=args.force, device_dir=args.device_dir, timeout_s=args.timeout, log=_log)
    if result.rows:
        print(render(result.rows, "md"), end="")
    print(f"results in {args.results}")
    return 0 if all(r["status"] != "failed" for r in result.rows) else 1


# --remote: the same command on a device over ssh -----------------------------------------------------

EXPORT_FLAGS = {
    "model": "value", "data": "value", "mean": "triple", "std": "triple", "num_classes": "value",
    "untrained": "flag", "width": "value", "input_size": "size", "dynamic": "flag", "fp16": "flag", "int8": "flag",
    "calib_images": "value", "calib_method": "value", "calib_select": "value", "activation": "value",
    "int8_scheme": "value", "max_drop": "value", "max_search_steps": "value", "search_order": "value", "equalize": "flag", "eval_images": "value",
    "threads": "value", "json": "flag", "quiet": "flag",
}


def _argv_from(args: argparse.Namespace, kinds: dict[str, str], files: dict[str, str] | None = None) -> list[str]:
    """Flags that rebuild ``args`` for the device; a file option becomes a ``\\0name`` token for its device path."""
    argv = []
    for dest, kind in kinds.items():
        value, flag = getattr(args, dest), "--" + dest.replace("_", "-")
        if value is None or value is False:
            continue
        if kind == "flag":
            argv.append(flag)
        elif kind == "bool":
            argv.append(flag if value else "--no-" + flag[2:])
        elif kind == "size":
            argv += [flag, f"{value[0]}x{value[1]}"]
        elif kind == "triple":
            argv += [flag, ",".join(repr(v) for v in value)]
        else:
            argv += [flag, str(value)]
    for dest in files or {}:
        argv += ["--" + dest.replace("_", "-"), f"\0{dest}"]
    return argv


def _ssh_target(args: argparse.Namespace):
    from segedge.remote import SshTarget

    return SshTarget.from_options(args.remote, args.remote_segedge, args.remote_dir, args.ssh_config)


def _passthrough(args: argparse.Namespace, argv: list[str], files: dict[str, Path]) -> int:
    from segedge.remote import passthrough

    for path in files.values():
        if not path.is_file():
            raise SegedgeError(f"{path} does not exist (it is copied to the device for --remote)")
    return passthrough(_ssh_target(args), argv, files, log=_log)


def _add_remote_options(p: argparse.ArgumentParser) -> None:
    from segedge.remote import DEFAULT_REMOTE_DIR, SSH_CONFIG_ENV

    g = p.add_argument_group("on a device over ssh")
    g.add_argument("--remote", metavar="USER@HOST", help="run this on that device through the system ssh client "
                   "(~/.ssh/config, keys and jump hosts apply; it never prompts)")
    g.add_argument("--remote-segedge", metavar="COMMAND", help="segedge on the device, e.g. ~/venv/bin/segedge "
                   "(default: segedge on the ssh session's PATH)")
    g.add_argument("--remote-dir", metavar="DIR", help=f"the device's content-addressed cache (default {DEFAULT_REMOTE_DIR})")
    g.add_argument("--ssh-config", metavar="FILE", help=f"ssh -F FILE (default ${SSH_CONFIG_ENV}, else ssh's own)")


def _checkpoint_map(items: list[str]) -> dict[str, Path]:
    from segedge.registry import get_spec

    mapping = {}
    for item in items:
        model, sep, path = item.partition("=")
        if not sep or not path:
            raise SegedgeError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        mapping[get_spec(model).name] = Path(path)
    return mapping


def cmd_report(args: argparse.Namespace) -> int:
    from segedge.report import pareto_plot, pick_under_budget, render, summarize_budget
    from segedge.results import ResultsStore

    if not Path(args.results).is_file():
        raise SegedgeError(f"no results store at {args.results}; run `segedge bench` first")
    with ResultsStore(args.results) as store:
        for other in args.merge or []:
            _log(f"merged {store.merge(other)} rows from {other}")
        rows = store.latest_rows()
    if args.profile:
        rows = [r for r in rows if r["profile"] == args.profile]
    if not rows:
        raise SegedgeError("the results store holds no rows" + (f" for profile {args.profile}" if args.profile else ""))
    print(render(rows, args.format), end="")
    if args.budget_ms is not None:
        print(summarize_budget(pick_under_budget(rows, args.budget_ms), args.budget_ms))
    if args.plot:
        _log(f"wrote {pareto_plot(rows, args.plot)}")
    if args.overlays:
        from segedge.report import write_overlays

        for path in write_overlays(rows, args.overlays):
            _log(f"wrote {path}")
    return 0


# parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segedge",
        description="Take a segmentation model from PyTorch to a verified, benchmarked edge deployment.",
    )
    parser.add_argument("--version", action="version", version=f"segedge {__version__}")
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
    p.add_argument("--scene-size", type=_size, help="HxW the training scenes are rendered or resized to (default 512x1024)")
    p.add_argument("--train-scenes", type=_positive_int, help="synthetic scenes rendered once to crop from (default 160)")
    p.add_argument("--val-images", type=_positive_int, help="validation images scored (default 8)")
    p.add_argument("--data", default="synthetic", help="synthetic, or KIND:ROOT with KIND one of cityscapes, voc, ade20k, camvid, folder, auto")
    p.add_argument("--loss", default="ce", help="loss spec, e.g. ce, ce+dice, 0.5*ce+1.0*lovasz, focal:gamma=2, tversky:alpha=0.3,beta=0.7")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--schedule", choices=("poly", "cosine", "plateau"), default="poly", help="learning-rate schedule (plateau steps on val mIoU; needs --eval-every)")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate")
    p.add_argument("--scale-range", type=_scale_range, help="random scale range LOW,HIGH, e.g. 0.75,1.5 (default none)")
    p.add_argument("--jitter", type=float, default=0.0, help="colour jitter strength in [0, 1) (default 0)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N iterations and keep the best weights (default: at the end only)")
    p.add_argument("--resume", help="a training state (*.state.pt, written beside the checkpoint) to continue from")
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
    p.add_argument("--model", help="zoo model name (see `segedge models`), or package.module:function building any nn.Module")
    p.add_argument("--onnx", help="bring your own ONNX (float32 N×3×H×W → N×C×H×W): it is the FP32 reference")
    p.add_argument("--checkpoint", help="a segedge checkpoint, or a state dict for a package.module:function model "
                   "(default: cached trained weights, trained once if missing)")
    p.add_argument("--data", default="synthetic", help="evaluation/calibration data: synthetic, or KIND:ROOT (cityscapes, voc, ade20k, camvid, folder, auto)")
    p.add_argument("--mean", type=_triple, help="input mean R,G,B on the 0–1 scale (own models; default ImageNet's)")
    p.add_argument("--std", type=_triple, help="input std R,G,B (own models; default ImageNet's)")
    p.add_argument("--num-classes", type=_positive_int, help="own models: the class count, checked against the output")
    p.add_argument("--classes", help="own models: a text file of class names, one per line")
    p.add_argument("--untrained", action="store_true", help="random weights (smoke tests only: figures mean nothing)")
    p.add_argument("--width", type=_positive_float, default=1.0, help="width multiplier when no checkpoint is given")
    p.add_argument("--input-size", type=_size, help="HxW of the exported input (default: the model's)")
    p.add_argument("--dynamic", action="store_true", help="dynamic H and W, proven by running a second size")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 graph (FP32 inputs/outputs)")
    p.add_argument("--int8", action="store_true", help="also write a static Q/DQ INT8 graph")
    p.add_argument("--calib-images", type=_positive_int, help="calibration images (default 32)")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), help="default minmax")
    p.add_argument("--calib-select", choices=("first", "balanced"),
                   help="which calibration images: the split's first N (default) or a class-balanced pick favouring rare classes")
    p.add_argument("--equalize", action="store_const", const=True, default=None,
                   help="cross-layer equalization before calibration (depthwise-heavy nets: MobileNet, ENet)")
    p.add_argument("--activation", choices=("u8", "s8"), help="INT8 activation type: u8 for x86 onnxruntime (default), s8 symmetric for TensorRT")
    p.add_argument("--int8-scheme", choices=("x86", "arm", "tensorrt"), help="INT8 scheme of the target (default x86; arm: s8 symmetric; tensorrt: s8 symmetric, zero points 0, float biases)")
    p.add_argument("--max-drop", type=float, help="mIoU budget in points: keep the most sensitive layers in float until the INT8 drop meets it")
    p.add_argument("--search-order", choices=("sensitivity", "output-first"),
                   help="--max-drop keeps float first the layers most costly alone (default; measures each layer) "
                        "or those nearest the output (no per-layer measuring: for heavy nets)")
    p.add_argument("--max-search-steps", type=_positive_int, help="how many exclusion steps the --max-drop search may try (default 10)")
    p.add_argument("--eval-images", type=_positive_int, default=8, help="held-out images for parity and mIoU (default 8)")
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: all cores)")
    p.add_argument("--out", default="export", help="artifact store (default ./export)")
    p.add_argument("--json", action="store_true", help="also print the manifest as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_remote_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="all metrics per class of a zoo model, checkpoint, ONNX file or TensorRT engine")
    p.add_argument("--model", help="zoo name (cached trained weights or --checkpoint) or package.module:function")
    p.add_argument("--checkpoint", help="weights for --model")
    p.add_argument("--onnx", help="an ONNX file (normalisation and class names come from its segedge manifest if it has one)")
    p.add_argument("--engine", help="a TensorRT engine built by segedge")
    p.add_argument("--data", default="synthetic", help="synthetic, or KIND:ROOT (cityscapes, voc, ade20k, camvid, folder, auto)")
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--images", type=_positive_int, default=16, help="images to score (default 16)")
    p.add_argument("--input-size", type=_size, help="HxW (default: the model's)")
    p.add_argument("--mean", type=_triple, help="input mean R,G,B on the 0–1 scale")
    p.add_argument("--std", type=_triple, help="input std R,G,B")
    p.add_argument("--num-classes", type=_positive_int, help="own models: the class count")
    p.add_argument("--classes", help="a text file of class names, one per line")
    p.add_argument("--threads", type=_positive_int, help="inference threads (default: all cores)")
    p.add_argument("--crf", action="store_true",
                   help="refine each output with DeepLab v1's dense CRF on the CPU (needs pip install \"segedge[crf]\")")
    p.add_argument("--crf-iterations", type=_positive_int, default=10, help="mean-field iterations of --crf (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "check",
        help="will a profile's TensorRT accept this model? (static check, runs on any CPU)",
        description="List what a profile's TensorRT ONNX parser cannot take (ops, opset, Resize modes, Q/DQ), DLA "
        "fallbacks, dynamic-shape traps and FP16 overflow risks. Exit code 1 when the profile cannot build the model.",
    )
    p.add_argument("target", metavar="MODEL_OR_ONNX", help="a zoo model name or an .onnx file")
    p.add_argument("--profile", required=True, help="profile name (see `segedge profiles`) or a .toml path")
    p.add_argument("--input-size", type=_size, help="HxW to export a zoo model at (default: the profile's)")
    p.add_argument("--width", type=_positive_float, default=0.25, help="width to export a zoo model at (structure only; default 0.25)")
    p.add_argument("--dla", action=argparse.BooleanOptionalAction, default=None, help="check DLA compatibility (default: as the profile says)")
    _add_remote_options(p)
    p.set_defaults(func=cmd_check)

    from segedge.sensitivity import add_cli as add_sensitivity_cli

    add_sensitivity_cli(sub)

    p = sub.add_parser("profiles", help="list hardware profiles and what this machine has or lacks for each")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser(
        "bench",
        help="latency, FPS and mIoU drop per model × precision on a hardware profile",
        description="Measure each model × precision of a profile: latency percentiles, FPS, memory, and the mIoU "
        "drop against torch FP32. Rows are committed to a SQLite store as they finish; a rerun resumes. On hardware "
        "that does not match the profile it refuses and says what is missing.",
    )
    p.add_argument("--profile", required=True, help="profile name (see `segedge profiles`), `jetson`, or a .toml path")
    p.add_argument("--models", default="bisenet", help="comma-separated zoo models (default bisenet)")
    p.add_argument("--precisions", help="comma-separated subset of fp32,fp16,int8 (default: the profile's)")
    p.add_argument("--input-size", type=_size, help="HxW (default: the profile's)")
    p.add_argument("--eval-images", type=_positive_int, default=8, help="held-out images for mIoU (default 8)")
    p.add_argument("--quick", action="store_true", help="fewer timed runs and eval images: a smoke test, not figures to quote")
    p.add_argument("--force", action="store_true", help="measure again rows this machine already has")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH", help="weights for a model (default: cached trained weights)")
    p.add_argument("--results", default="export/results.sqlite", help="SQLite results store")
    p.add_argument("--out", default="export", help="artifact store (with --remote: where the ONNX artifacts are exported here)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="only check that the profile runs on this machine, and with which backend")
    _add_remote_options(p)
    p.set_defaults(func=cmd_bench)

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
    p.add_argument("--models", default="bisenet", help="comma-separated zoo models (default bisenet)")
    p.add_argument("--precisions", help="comma-separated subset of fp32,fp16,int8 (default: each profile's)")
    p.add_argument("--input-size", type=_size, help="HxW (default: each profile's)")
    p.add_argument("--eval-images", type=_positive_int, default=8, help="held-out images for mIoU (default 8)")
    p.add_argument("--quick", action="store_true", help="fewer timed runs and eval images: a smoke test")
    p.add_argument("--force", action="store_true", help="measure again rows a device already has")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH", help="weights for a model, sent to the devices")
    p.add_argument("--results", default="export/results.sqlite", help="local SQLite results store")
    p.add_argument("--device-dir", default="~/.cache/segedge/fleet", help="artifacts and store on each device")
    p.add_argument("--timeout", type=_positive_float, help="stop waiting after this many seconds (finished rows are kept)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="tables, Pareto front, budget pick and plot from the results store")
    p.add_argument("--results", default="export/results.sqlite", help="SQLite results store")
    p.add_argument("--merge", action="append", help="merge another machine's store first (repeatable)")
    p.add_argument("--profile", help="only this profile's rows")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--budget-ms", type=_positive_float, help="name the most accurate model × precision under this latency")
    p.add_argument("--plot", help="write the latency-vs-mIoU Pareto plot to this PNG")
    p.add_argument("--overlays", help="write per model and precision image | FP32 | FP16/INT8 | disagreement PNGs into this folder")
    p.set_defaults(func=cmd_report)
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
