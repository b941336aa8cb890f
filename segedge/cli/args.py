"""Argument types and the groups of flags the subcommands share: each flag is defined here once.

``--remote`` rebuilds a command line for the device from the parser itself (:func:`device_argv`), so a flag
added to a group travels to the device without a second list to keep in step. Flags that name a local file
are marked with :func:`device_file` and shipped; flags marked :func:`local_only` stay on this machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from segedge.core.errors import SegedgeError
from segedge.core.precision import PRECISIONS

# types --------------------------------------------------------------------------------------------------


def size(text: str) -> tuple[int, int]:
    """'512x1024' → (512, 1024)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write HxW, e.g. 512x1024")
    h, w = (int(p) for p in parts)
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def _number(text: str, cast, ok, must: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be {must}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, ">= 1")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "> 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, ">= 0")


def probability(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "between 0 and 1")


def scale_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (e.g. 0.75,1.5)") from None
    return low, high


def channel_values(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r} is not one value (grey, or all channels) or three (R,G,B), on the 0–1 scale")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} holds a value that is not a finite number")
    return values


def std_values(text: str) -> tuple[float, ...]:
    """--std: like --mean, and every value above 0 (a zero std divides by zero)."""
    values = channel_values(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: a std must be above 0 (--std 1 leaves the input as it is)")
    return values


# how a parsed value is written back on a command line (device_argv); str() for the rest
_FORMATS = {
    size: lambda v: f"{v[0]}x{v[1]}",
    channel_values: lambda v: ",".join(repr(x) for x in v),
    std_values: lambda v: ",".join(repr(x) for x in v),
    scale_range: lambda v: ",".join(repr(x) for x in v),
}


# helpers for the commands -------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def writable_file(path: str | None, what: str) -> None:
    """Refuse an output path that cannot be written before any work is done, not after it."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise SegedgeError(f"cannot write the {what} to {target}: it is a directory; give a file name")
    if not folder.is_dir():
        raise SegedgeError(f"cannot write the {what} to {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise SegedgeError(f"cannot write the {what} to {target}: the folder {folder} is not writable")


def writable_folder(path: str | None, what: str) -> None:
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise SegedgeError(f"cannot write the {what} into {target}: it is a file, not a folder")
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise SegedgeError(f"cannot write the {what} into {target}: {existing} is not a writable folder")


def class_names(path: str | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    try:
        names = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    except OSError as exc:
        raise SegedgeError(f"cannot read class list {path}: {exc.strerror or exc}") from None
    if not names:
        raise SegedgeError(f"class list {path} is empty")
    return names


def comma_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def checkpoint_map(items: list[str] | None) -> dict[str, Path]:
    from segedge.models.registry import get_spec

    mapping = {}
    for item in items or []:
        model, sep, path = item.partition("=")
        if not sep or not path:
            raise SegedgeError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        mapping[get_spec(model).name] = Path(path)
    return mapping


# marks on actions ---------------------------------------------------------------------------------------


def device_file(action: argparse.Action) -> argparse.Action:
    """A flag naming a local file: with --remote the file is copied and the flag points at the device's copy."""
    action.device_file = True
    return action


def local_only(action: argparse.Action) -> argparse.Action:
    """A flag that means something on this machine only (an output folder here): never sent to the device."""
    action.local_only = True
    return action


# shared groups ------------------------------------------------------------------------------------------

DATA_KINDS = "synthetic, or KIND:ROOT (cityscapes, voc, ade20k, camvid, folder, packed, auto)"


def add_source(p: argparse.ArgumentParser, *, model_help: str, required: bool = False, own: bool = True,
               width_default: float | None = 1.0) -> None:
    """What the FP32 reference is: a zoo model or package.module:function with its weights, and for models
    from outside the zoo, how to feed them."""
    g = p.add_argument_group("the model")
    g.add_argument("--model", required=required, help=model_help)
    device_file(g.add_argument("--checkpoint", help="a segedge checkpoint, or a state dict for a package.module:function "
                               "model (default: cached trained weights, trained once if missing)"))
    if width_default is not None:
        g.add_argument("--width", type=positive_float, default=width_default,
                       help=f"width multiplier when no checkpoint is given (default {width_default})")
    g.add_argument("--input-size", type=size, help="HxW of the network input (default: the model's)")
    if own:
        add_own_model(g)


def add_own_model(g) -> None:
    """How to feed and read a model segedge did not define (read from the graph where it can be)."""
    g.add_argument("--mean", type=channel_values, help="own models: input mean per channel on the 0–1 scale, R,G,B or one "
                   "value (default ImageNet's; 0 with --std 1 for a model that takes 0..1)")
    g.add_argument("--std", type=std_values, help="own models: input std per channel (default ImageNet's)")
    g.add_argument("--num-classes", type=positive_int, help="own models: the class count, checked against the output")
    device_file(g.add_argument("--classes", help="own models: a text file of class names, one per line"))
    g.add_argument("--layout", choices=("nchw", "nhwc"), help="own ONNX: input (and output) layout, where the graph "
                   "cannot tell (default: read from the input's shape)")
    g.add_argument("--output", choices=("scores", "sigmoid", "logit"), help="own ONNX: class scores (argmax), or one "
                   "channel: a sigmoid probability or a raw logit, scored as two classes (default: read from the graph)")
    g.add_argument("--threshold", type=probability, default=0.5, help="one-channel outputs: foreground above this "
                   "probability (default 0.5)")
    g.add_argument("--output-key", help="own torch models returning a mapping: the key of the class scores (default: "
                   "'out', else the only tensor; 'aux' is never used)")


def add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic", help=f"evaluation/calibration data: {DATA_KINDS}")
    g.add_argument("--eval-images", type=positive_int, help="held-out images for parity and mIoU (default: 8 "
                   "synthetic images, or the whole evaluation split of real data)")
    g.add_argument("--calib-data", help="calibrate INT8 on this dataset's training split instead (KIND:ROOT)")


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """``--fp16``, ``--int8``, …: one flag per optional precision of :data:`PRECISIONS`."""
    g = p.add_argument_group("precisions (FP32 is always built)")
    for precision in PRECISIONS.values():
        if precision.optional:
            g.add_argument(f"--{precision.name}", action="store_true", help=precision.summary)


def wanted_precisions(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p.name for p in PRECISIONS.values() if p.optional and getattr(args, p.name, False))


def add_precisions_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--precisions", help=f"comma-separated subset of {','.join(PRECISIONS)} (default: {default})")


# INT8 flags; the order is that of the "only apply with --int8" message
INT8_FLAGS = ("calib_images", "calib_method", "calib_select", "activation", "int8_scheme", "max_drop",
              "max_search_steps", "search_order", "equalize", "quantize_classifier", "op_set")


def add_int8(p: argparse.ArgumentParser, *, search: bool = True) -> None:
    """INT8 calibration and scheme; ``search``: also the ``--max-drop`` mixed-precision search. Defaults are
    None so a command can tell a flag given from one left out (Int8Config fills in the defaults)."""
    from segedge.graph.int8 import CALIB_METHODS, CALIB_SELECTIONS, INT8_SCHEMES, OP_SETS, SEARCH_ORDERS

    g = p.add_argument_group("INT8")
    g.add_argument("--calib-images", type=positive_int, help="calibration images (default 32)")
    g.add_argument("--calib-method", choices=CALIB_METHODS, help="default minmax")
    g.add_argument("--calib-select", choices=CALIB_SELECTIONS,
                   help="which calibration images: the split's first N (default) or a class-balanced pick favouring rare classes")
    g.add_argument("--equalize", action="store_const", const=True, default=None,
                   help="cross-layer equalization before calibration (depthwise-heavy nets: MobileNet, ENet)")
    g.add_argument("--int8-scheme", choices=tuple(INT8_SCHEMES),
                   help="INT8 scheme of the target (default x86, for CPUs with VNNI; x86-novnni: 7-bit weights for x86 without VNNI; "
                        "arm: s8 symmetric; tensorrt: s8 symmetric, zero points 0, float biases)")
    g.add_argument("--op-set", choices=OP_SETS, help="which ops get Q/DQ: all (onnxruntime's set), layers "
                   "(Conv/MatMul/Gemm only) or auto (default: the zoo's measured choice, else layers unless all is more than 3 %% "
                   "faster and agrees with the float graph within 0.2 %%; recorded)")
    g.add_argument("--quantize-classifier", action="store_const", const=True, default=None,
                   help="quantize the classifier too (default: it stays float, recorded in the manifest)")
    if not search:
        return
    g.add_argument("--activation", choices=("u8", "s8"),
                   help="INT8 activation type: u8 for x86 onnxruntime (default), s8 symmetric for TensorRT")
    g.add_argument("--max-drop", type=non_negative_float, help="mIoU budget in points: keep the most sensitive layers in float until the INT8 drop meets it")
    g.add_argument("--search-order", choices=SEARCH_ORDERS,
                   help="--max-drop keeps float first the layers most costly alone (default; measures each layer) "
                        "or those nearest the output (no per-layer measuring: for heavy nets)")
    g.add_argument("--max-search-steps", type=positive_int, help="how many exclusion steps the --max-drop search may try (default 10)")


def int8_config(args: argparse.Namespace):
    """The Int8Config the INT8 flags describe (defaults where a flag was left out)."""
    from segedge.graph.int8 import Int8Config

    given = {name: getattr(args, name, None) for name in INT8_FLAGS}
    return Int8Config(
        calib_images=given["calib_images"] or Int8Config.calib_images,
        calib_method=given["calib_method"] or Int8Config.calib_method,
        calib_select=given["calib_select"] or Int8Config.calib_select,
        equalize=bool(given["equalize"]),
        activation=given["activation"] or Int8Config.activation,
        scheme=given["int8_scheme"],
        max_drop=given["max_drop"],
        max_search_steps=given["max_search_steps"] or Int8Config.max_search_steps,
        search_order=given["search_order"] or Int8Config.search_order,
        quantize_classifier=bool(given["quantize_classifier"]),
        op_set=given["op_set"] or Int8Config.op_set,
    )


def add_sweep(p: argparse.ArgumentParser, *, each: str = "the profile's") -> None:
    """What ``bench`` and ``sweep`` measure: models × precisions at a size, and how."""
    p.add_argument("--models", help="comma-separated zoo models (default bisenet when no other model is given)")
    add_precisions_option(p, each)
    p.add_argument("--input-size", type=size, help=f"HxW (default: {each})")
    p.add_argument("--eval-images", type=positive_int, help="held-out images for mIoU (default: 8 synthetic images, "
                   "or the whole evaluation split of --data)")
    p.add_argument("--quick", action="store_true", help="3 timed runs (and 4 synthetic images): a smoke test, not figures to quote")
    p.add_argument("--force", action="store_true", help="measure again rows already measured")
    p.add_argument("--checkpoint", action="append", metavar="MODEL=PATH", help="weights for a model (default: cached trained weights)")
    p.add_argument("--results", default="export/results.sqlite", help="SQLite results store")


def add_run(p: argparse.ArgumentParser, *, threads: str = "inference threads (default: all cores)") -> None:
    if threads:
        p.add_argument("--threads", type=positive_int, help=threads)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_store(p: argparse.ArgumentParser, help: str = "artifact store (default ./export)") -> None:
    local_only(p.add_argument("--out", default="export", help=help))


REMOTE_FLAGS = ("remote", "remote_segedge", "remote_dir", "ssh_config")


def add_remote(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    from segedge.flows.remote import DEFAULT_REMOTE_DIR, SSH_CONFIG_ENV

    g = p.add_argument_group("on a device over ssh")
    g.add_argument("--remote", metavar="USER@HOST", help="run this on that device through the system ssh client "
                   "(~/.ssh/config, keys and jump hosts apply; it never prompts)")
    g.add_argument("--remote-segedge", metavar="COMMAND", help="segedge on the device, e.g. ~/venv/bin/segedge "
                   "(default: segedge on the ssh session's PATH)")
    g.add_argument("--remote-dir", metavar="DIR", help=f"the device's content-addressed cache (default {DEFAULT_REMOTE_DIR})")
    g.add_argument("--ssh-config", metavar="FILE", help=f"ssh -F FILE (default ${SSH_CONFIG_ENV}, else ssh's own)")
    return g


# --remote: the same command on the device -----------------------------------------------------------------


def device_argv(parser: argparse.ArgumentParser, args: argparse.Namespace,
                skip: tuple[str, ...] = ()) -> tuple[list[str], dict[str, Path]]:
    """The optional flags of ``args`` as a command line for the device, derived from ``parser``'s actions.

    A :func:`device_file` flag becomes a ``\\0dest`` token that the remote flow replaces with the device path
    of its copy (returned as ``{token: local path}``). Positionals, ``skip``, the ssh flags and
    :func:`local_only` flags are left out.
    """
    argv: list[str] = []
    files: dict[str, Path] = {}
    for action in parser._actions:
        dest = action.dest
        if (not action.option_strings or dest in skip or dest in REMOTE_FLAGS or getattr(action, "local_only", False)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            continue
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        flag = max(action.option_strings, key=len)
        if getattr(action, "device_file", False):
            files[f"\0{dest}"] = Path(value)
            argv += [flag, f"\0{dest}"]
        elif isinstance(action, argparse.BooleanOptionalAction):
            argv.append(f"--{dest.replace('_', '-')}" if value else f"--no-{dest.replace('_', '-')}")
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction)):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, _FORMATS.get(action.type, str)(item)]
        else:
            argv += [flag, _FORMATS.get(action.type, str)(value)]
    return argv, files


def ssh_target(args: argparse.Namespace):
    from segedge.flows.remote import SshTarget

    return SshTarget.from_options(args.remote, args.remote_segedge, args.remote_dir, args.ssh_config)


def on_device(args: argparse.Namespace, argv: list[str], files: dict[str, Path]) -> int:
    """Run ``segedge ARGV`` on ``--remote``'s device, its files copied there first."""
    from segedge.flows.remote import passthrough

    for path in files.values():
        if not path.is_file():
            raise SegedgeError(f"{path} does not exist (it is copied to the device for --remote)")
    return passthrough(ssh_target(args), argv, files, log=log)
