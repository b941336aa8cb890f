"""Where the FP32 reference comes from: a zoo model, any ``nn.Module`` (``package.module:function``), or an
ONNX file made outside segedge. The export chain and ``segedge eval`` treat all three alike.

Bring-your-own inputs carry no ModelSpec, so the input layout, normalisation and class count come from
flags and are checked against the model itself: a mismatch is a clear error, not a silent wrong figure.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segedge.core.artifacts import atomic_path, sha256_file
from segedge.core.errors import ArtifactError, CheckpointError, InputSizeError, SegedgeError, brief
from segedge.backends.base import Runner
from segedge.data.model_io import ModelIO, model_io_from_onnx, output_fits
from segedge.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


@dataclass
class Source:
    """The reference network and what the chain needs to know about it."""

    name: str
    spec: ModelSpec
    num_classes: int
    class_names: tuple[str, ...]
    weights_id: str
    checkpoint: str | None = None
    code_id: str | None = None  # hash of the source files that define the torch module (None for an ONNX)
    io: ModelIO = field(default_factory=ModelIO)  # how to feed it and read its output (canonical for torch)
    module: Any = None  # torch module, or None for an ONNX source
    onnx: Path | None = None
    extra: dict = field(default_factory=dict)

    def reference_runner(self, threads: int) -> Runner:
        if self.module is not None:
            from segedge.backends.torch import TorchRunner

            return TorchRunner(self.module, threads=threads)
        from segedge.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(self.onnx, threads=threads)

    @property
    def reference_backend(self) -> str:
        return "torch" if self.module is not None else "onnxruntime (given ONNX)"


def code_fingerprint(module, *defined_by) -> str:
    """sha256 (16 hex) of the Python source files that define ``module``'s classes and ``defined_by`` (its
    builder): edit ``forward`` or any layer the network is made of and the fingerprint changes, so the artifact
    key changes and a stale ONNX is never served. torch's own files are covered by its version in the manifest.

    File names and contents count, not their folders, so moving a checkout keeps the cache.
    """
    import inspect

    import torch

    import sys

    torch_root = Path(torch.__file__).resolve().parent
    files = set()
    objects = [*(type(m) for m in module.modules()), *defined_by]
    # and what their modules take from their own package (ENet's make_divisible from blocks.py): one level
    for obj in list(objects):
        home = sys.modules.get(getattr(obj, "__module__", None) or "")
        package = (getattr(home, "__name__", "") or "").partition(".")[0]
        for value in vars(home).values() if home is not None and package not in ("", "torch") else ():
            if (inspect.isfunction(value) or inspect.isclass(value)) and \
                    (getattr(value, "__module__", "") or "").partition(".")[0] == package:
                objects.append(value)
    for obj in objects:
        try:
            found = inspect.getsourcefile(obj)
        except TypeError:  # built-ins
            continue
        if found is None:
            continue
        path = Path(found).resolve()
        if torch_root not in path.parents and path.is_file():
            files.add(path)
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda f: (f.name, str(f))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def adhoc_spec(name: str, input_size: tuple[int, int] | None, mean, std, stride: int = 1) -> ModelSpec:
    """A ModelSpec for a model segedge did not define: no builder, no stride constraint unless given."""

    def no_builder(**_: Any):
        raise SegedgeError(f"{name} is not a zoo model: segedge cannot build it")

    return ModelSpec(
        name=name, builder=no_builder, description=f"user model {name}",
        default_input_size=tuple(input_size) if input_size else (512, 1024), mean=tuple(mean or IMAGENET_MEAN),
        std=tuple(std or IMAGENET_STD), output_stride=stride, min_input_size=(stride, stride),
    )


def import_builder(reference: str):
    """``package.module:function`` → the function (called with no arguments to build the module)."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise SegedgeError(f"--model {reference!r}: write a zoo name or package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SegedgeError(f"cannot import {module_name!r} for --model {reference}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SegedgeError(f"{module_name} has no {attr!r} (from --model {reference})") from None


def load_state_dict_into(module, path: Path) -> dict:
    """Load a raw or wrapped state dict; a mismatch lists missing / unexpected keys instead of a traceback."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__})") from None
    state = payload.get("state_dict", payload.get("model", payload)) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"shape mismatches: {show(mismatched)}" if mismatched else ""]
        raise CheckpointError(f"checkpoint {path} does not fit the model: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state)
    return {"missing": missing, "unexpected": unexpected}


@dataclass(frozen=True)
class SourceOptions:
    """What the command line says about a model segedge did not define; an adapter fills what its files know
    (a Hugging Face directory's class names, normalisation and size) where these are None."""

    checkpoint: Path | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    output_key: str | None = None


LIBRARY_PREFIXES = ("hf:", "torchvision:", "smp:")  # a library's saved model, read offline from its files
SAVED_MODULE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit")  # torch.export / TorchScript files


def is_library_model(model: str) -> bool:
    """``hf:DIR``, ``torchvision:NAME``, ``smp:DIR``, or a ``torch.export``/TorchScript file."""
    return model.startswith(LIBRARY_PREFIXES) or Path(model).suffix in SAVED_MODULE_SUFFIXES


def is_zoo_name(model: str) -> bool:
    """A name of segedge's own zoo: not ``package.module:function``, not a library's saved model."""
    return bool(model) and ":" not in model and not is_library_model(model)


def default_name(model: str) -> str:
    """The row and artifact name of a model given by reference: a library directory's or file's name, a
    torchvision builder's name, a ``module:function``'s function."""
    if model.startswith(("hf:", "smp:")):
        return Path(model.partition(":")[2].rstrip("/\\")).name or model.partition(":")[0]
    if model.startswith("torchvision:"):
        return model.partition(":")[2]
    if Path(model).suffix in SAVED_MODULE_SUFFIXES:
        return Path(model).stem
    return model.replace(":", ".").split(".")[-1]


def require_library(module: str, extra: str, what: str):
    """``import module`` or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SegedgeError(f"{what} needs {module} ({brief(exc)}): pip install 'segedge[{extra}]'") from None


def module_source(reference: str, checkpoint: Path | None, input_size: tuple[int, int] | None, mean, std,
                  num_classes: int | None, class_names, output_key: str | None = None) -> Source:
    import torch

    if input_size is None:
        raise InputSizeError(f"--model {reference} needs --input-size HxW (segedge knows nothing of its layout)")
    builder = import_builder(reference)
    if not callable(builder):
        raise SegedgeError(f"--model {reference}: {reference.partition(':')[2]!r} is a {type(builder).__name__}, "
                           "not a function that builds the model")
    try:
        module = builder()
    except Exception as exc:  # the user's code: say where it failed, in one line
        raise SegedgeError(f"{reference}() failed: {type(exc).__name__}: {brief(exc)}; --model must name a function "
                           "that takes no arguments and returns the nn.Module") from None
    if not isinstance(module, torch.nn.Module):
        raise SegedgeError(f"{reference}() returned {type(module).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        load_state_dict_into(module, Path(checkpoint))
    name = default_name(reference)
    weights = sha256_file(checkpoint) if checkpoint else "builder-" + hashlib.sha256(reference.encode()).hexdigest()[:12]
    return torch_source(module, name, reference, input_size, mean, std, num_classes, class_names, weights,
                        code_fingerprint(module, builder), checkpoint, output_key)


def torch_source(module, name: str, what: str, input_size: tuple[int, int], mean, std, num_classes: int | None,
                 class_names, weights_id: str, code_id: str | None, checkpoint: Path | None = None,
                 output_key: str | None = None, extra: dict | None = None) -> Source:
    """The one way a torch module becomes a source, whichever adapter built it: run once at ``input_size``, its
    class scores found in what it returns (a tensor, a mapping, ``.logits``, a tuple: :mod:`.outputs`), checked
    to be N×C×H×W at the input's size or a fraction of it, and the module wrapped to return only them."""
    import torch

    from segedge.flows.sources.outputs import output_key_of, pick_scores, scores_only

    module.eval()
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, 3, *input_size))
    except Exception as exc:  # the user's model at this size: one line, with the model's own words
        raise SegedgeError(f"{what} fails on a 1x3x{input_size[0]}x{input_size[1]} input: {type(exc).__name__}: "
                           f"{brief(exc)}") from None
    key = output_key_of(out, output_key)
    scores = pick_scores(out, key)
    if not isinstance(scores, torch.Tensor) or scores.ndim != 4 or not _fits(tuple(scores.shape[2:]), tuple(input_size)):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise SegedgeError(f"{what} returns {shape}{f' as {key!r}' if key else ''} for a 1x3x{input_size[0]}x"
                           f"{input_size[1]} input; segedge needs N×C×H×W class scores at the input's H×W or a "
                           "fraction of it")
    stride = input_size[0] // int(scores.shape[2])
    io = ModelIO(resized=stride != 1)
    classes = _check_classes(int(scores.shape[1]), num_classes, class_names, what)
    returned = {"returns": type(out).__name__, "scores": key or "the tensor", "stride": stride}
    return Source(name=name, spec=adhoc_spec(name, input_size, mean, std), num_classes=len(classes),
                  class_names=classes, weights_id=weights_id, checkpoint=str(checkpoint) if checkpoint else None,
                  module=scores_only(module, key), code_id=code_id, io=io,
                  extra={**(extra or {}), "output": returned})


def onnx_source(path: Path, input_size: tuple[int, int] | None, mean, std, num_classes: int | None, class_names,
                layout: str | None = None, output: str | None = None, threshold: float = 0.5) -> Source:
    """An ONNX segmentation model made elsewhere, as it comes: NCHW or NHWC, grey or RGB, class scores or one
    sigmoid/logit channel, at the input's resolution or below (:mod:`segedge.data.model_io`); weights inside the
    file or beside it (external data)."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; give the .onnx file in it (or --artifact DIR for a directory "
                            f"`segedge export` wrote)")
    if not path.is_file():
        raise ArtifactError(f"ONNX file {path} does not exist")
    if path.stat().st_size == 0:
        raise ArtifactError(f"ONNX file {path} is empty (0 bytes): an export or a copy that did not finish")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    io, dims = model_io_from_onnx(model, str(path), layout, output, threshold)
    spatial = dims[1:3] if io.input_layout == "NHWC" else dims[2:]
    static = tuple(spatial) if None not in spatial else None
    if input_size is None and static is None:
        raise InputSizeError(f"{path} has dynamic H/W: give --input-size HxW")
    if static is not None and input_size is not None and tuple(input_size) != static:
        raise InputSizeError(f"{path} takes a fixed {static[0]}x{static[1]} input, but --input-size asks for {input_size[0]}x{input_size[1]}")
    size = tuple(input_size or static)
    shape = _probe_output(path, io, size, dims)
    spatial_out = shape[1:3] if io.output_layout == "NHWC" else shape[2:]
    channels = shape[3] if io.output_layout == "NHWC" else shape[1]
    if len(shape) != 4 or not _fits(tuple(spatial_out), size):
        raise ArtifactError(f"{path} outputs {'x'.join(map(str, shape))} for a {size[0]}x{size[1]} input; segedge reads "
                            f"class scores ({io.output_layout}) at the input's size or a fraction of it")
    if channels == 1 and io.output == "scores":
        raise SegedgeError(f"{path} outputs one channel and ends in no Sigmoid: give --output sigmoid (a probability) or "
                           f"--output logit (a raw score), and --threshold if 0.5 is not the cut")
    if channels != 1 and io.output != "scores":
        raise SegedgeError(f"--output {io.output} reads one channel, but {path} outputs {channels}")
    from dataclasses import replace

    io = replace(io, resized=tuple(spatial_out) != size)
    classes = _check_classes(io.num_classes(int(channels)), num_classes, class_names, str(path))
    mean = mean or (IMAGENET_MEAN if io.channels == 3 else (0.449,))
    std = std or (IMAGENET_STD if io.channels == 3 else (0.226,))
    return Source(name=path.stem, spec=adhoc_spec(path.stem, size, mean, std), num_classes=len(classes),
                  class_names=classes, weights_id=onnx_fingerprint(path, model), onnx=path, io=io)


def _fits(output: tuple, size: tuple) -> bool:
    return output_fits(tuple(output), tuple(size))


def _probe_output(path: Path, io: ModelIO, size: tuple[int, int], dims) -> tuple:
    from segedge.backends.onnxruntime import OnnxRuntimeRunner

    shape = (1, size[0], size[1], io.channels) if io.input_layout == "NHWC" else (1, io.channels, *size)
    with OnnxRuntimeRunner(path, threads=1) as runner:
        return tuple(runner.infer(np.zeros(shape, np.float32)).shape)


def external_data_files(path: Path, model) -> list[Path]:
    """The files an ONNX's external tensors name (``location``, relative to the ONNX's folder), each once."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    found = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location is None:
                continue
            file = (path.parent / location).resolve()
            if path.parent.resolve() not in file.parents:
                raise ArtifactError(f"{path}: external data {location!r} lies outside the model's folder")
            if not file.is_file():
                raise ArtifactError(f"{path} keeps its weights in {location}, which is missing beside it")
            if file not in found:
                found.append(file)
    return found


def onnx_fingerprint(path: Path, model=None) -> str:
    """sha256 of the ONNX file and of every external-data file it names: other weights, another artifact."""
    import onnx

    model = model if model is not None else onnx.load(str(path), load_external_data=False)
    files = external_data_files(path, model)
    if not files:
        return sha256_file(path)
    digest = hashlib.sha256(sha256_file(path).encode())
    for file in files:
        digest.update(file.name.encode() + sha256_file(file).encode())
    return digest.hexdigest()


def _check_classes(channels: int, num_classes: int | None, class_names, what: str) -> tuple[str, ...]:
    if num_classes is not None and num_classes != channels:
        raise SegedgeError(f"{what} outputs {channels} classes but --num-classes says {num_classes}")
    if class_names:
        if len(class_names) != channels:
            raise SegedgeError(f"{what} outputs {channels} classes but {len(class_names)} class names were given")
        return tuple(class_names)
    return tuple(f"class_{i}" for i in range(channels))


INLINE_LIMIT = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GB, less headroom for the graph itself


def copy_checked_onnx(src: Path, dst: Path) -> dict:
    """The given ONNX as the chain's model.onnx, self-contained: weights kept outside it (external data) are
    read in and inlined below 2 GB, or written beside it as ``<name>.data`` above; checker-validated, atomic."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    external = external_data_files(Path(src), model)
    if not external:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
            _check(tmp, src)
    else:
        model = onnx.load(str(src))  # reads the external tensors relative to src's folder
        size = sum(f.stat().st_size for f in external)
        with atomic_path(dst) as tmp:
            if size < INLINE_LIMIT:
                onnx.save_model(model, str(tmp))
            else:
                data = Path(dst).name + ".data"
                onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_external_data=True,
                                location=data, size_threshold=1024)
                os.replace(Path(tmp).parent / data, Path(dst).parent / data)
            _check(tmp, src)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {"opset": opset, "source_file": str(src),
            **({"external_data": [f.name for f in external], "weights": "inlined" if size < INLINE_LIMIT else "beside"}
               if external else {})}


def _check(path, src) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ArtifactError(f"{src} fails onnx.checker: {brief(exc)}") from None
