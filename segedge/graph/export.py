"""``onnx_from_torch``: PyTorch module → checked ONNX file.

Checks that matter on the device rather than in the notebook: the input size suits the network's output
stride, the opset is one TensorRT and onnxruntime both take (≥ 17; the opset actually written is recorded,
since torch 2.13's dynamo exporter writes 18 and only logs a failed down-conversion), ``onnx.checker``'s full
check passes, the output is N×C×H×W at the input's H×W, and with ``dynamic=True`` the graph really runs at a
second size instead of carrying the export size baked into a constant.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segedge.core.artifacts import atomic_path
from segedge.core.errors import ArtifactError, InputSizeError, SegedgeError, brief
from segedge.data.model_io import output_fits
from segedge.models.registry import ModelSpec

MIN_OPSET = 17
EXPORT_OPSET = 18  # what the dynamo exporter writes natively; asking for 17 only logs a failed conversion
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# FP32 onnxruntime vs torch differ by ~1e-5 relative on most nets, up to 2.6e-3 (99.9th percentile) on a trained
# SegNet (26 convs, 512x1024, random input); a size baked into the graph differs by O(1) almost everywhere. The
# argmax parity gate comes after.
RUN_CHECK_RTOL = 5e-3
# Max-unpooling nets (SegNet, ENet) route each value through a 2x2 window's maximum: where two values tie to within
# rounding, onnxruntime and torch may pick different positions and a few pixels differ by O(1e-2) although the
# graph is right. Measured: trained SegNet at 512x1024, 137 of 524,288 pixels (0.026 %), max diff 0.053, the same
# for the indexed and the index-free form. A broken graph (a baked size, a wrong op) differs on most pixels.
RUN_CHECK_OUTLIER_SHARE = 1e-3


@dataclass(frozen=True)
class OnnxExportInfo:
    path: Path
    opset: int
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    dynamic: bool
    second_size: tuple[int, int] | None  # the extra size a dynamic graph was run at
    seconds: float
    max_abs_diff: float = 0.0  # against torch at the export size, random input
    outlier_share: float = 0.0  # share of pixels whose diff exceeds the tolerance (a tied max-pool switch)


@contextlib.contextmanager
def quiet_exporter():
    """The dynamo exporter prints progress to stdout and logs torchvision warnings: keep them out of the CLI."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def second_valid_size(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, int]:
    """A different valid size to prove a dynamic graph varies: one stride step larger in H, two in W."""
    s = spec.size_multiple
    return size[0] + s, size[1] + 2 * s


def onnx_from_torch(
    module,
    spec: ModelSpec,
    out_path: str | Path,
    input_size: tuple[int, int],
    dynamic: bool = False,
    opset: int = EXPORT_OPSET,
    dynamic_batch: bool = False,
    output_name: str = OUTPUT_NAME,
) -> OnnxExportInfo:
    """Export ``module`` (eval mode) to ``out_path``; nothing lands there unless every check passes.

    The batch is 1 unless ``dynamic_batch``: then N is symbolic and the graph is proven at batch 2 too (the
    throughput rows of profiles with batch sizes > 1 need it).
    """
    import onnx
    import torch
    from torch.export import Dim

    if opset < MIN_OPSET:
        raise InputSizeError(f"opset {opset} is below {MIN_OPSET}: LayerNormalization and TensorRT's parser need ≥ {MIN_OPSET}")
    spec.check_input_size(*input_size)
    if dynamic and not spec.dynamic_hw:
        raise InputSizeError(f"{spec.name} cannot be exported with dynamic H/W: {spec.dynamic_hw_reason or 'not supported'}")
    module = module.eval()
    height, width = input_size
    example = torch.zeros(1, 3, height, width)
    axes = {**({0: Dim.AUTO} if dynamic_batch else {}), **({2: Dim.AUTO, 3: Dim.AUTO} if dynamic else {})}
    dynamic_shapes = (axes,) if axes else None

    started = time.perf_counter()
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())
    try:
        with quiet_exporter():
            if scripted:
                proto = _proto_from_script(module, example, opset, output_name, axes)
            else:
                program = torch.onnx.export(
                    module,
                    (example,),
                    None,
                    input_names=[INPUT_NAME],
                    output_names=[output_name],
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    verbose=False,
                )
                proto = program.model_proto
    except Exception as exc:  # the model's code, not the user's command: its own words, on one line
        raise SegedgeError(f"torch.onnx cannot export {spec.name}: {_root_cause(exc)}") from None
    if dynamic or dynamic_batch:
        _name_dynamic_dims(proto)
    if dynamic_batch and proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"):
        raise ArtifactError(f"{spec.name} exported with its batch fixed to 1 although a dynamic batch was asked")
    if dynamic:
        baked = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[2:] if d.HasField("dim_value")]
        if baked:
            # torch.onnx.export silently applies torch.export's suggested fix when model code turns H/W into
            # Python ints: the graph then only works at the export size
            raise ArtifactError(
                f"{spec.name} exported with H/W fixed to {height}x{width} although --dynamic was asked: the model "
                "turns the input size into a constant; export without --dynamic, or make the model size-agnostic"
            )
    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if written_opset < MIN_OPSET:
        raise ArtifactError(f"the exporter wrote opset {written_opset}; segedge needs ≥ {MIN_OPSET}")

    out_path = Path(out_path)
    second = second_valid_size(spec, input_size) if dynamic else None
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
        checked = onnx.load(str(tmp))
        in_shape = _shape_of(checked.graph.input[0])
        out_shape = _shape_of(checked.graph.output[0])
        max_diff, outliers = _check_runs(tmp, module, input_size, spec)
        if second is not None:
            _check_runs(tmp, module, second, spec)
        if dynamic_batch:
            _check_runs(tmp, module, input_size, spec, batch=2)
    return OnnxExportInfo(
        path=out_path,
        opset=written_opset,
        input_shape=in_shape,
        output_shape=out_shape,
        dynamic=dynamic,
        second_size=second,
        seconds=round(time.perf_counter() - started, 2),
        max_abs_diff=max_diff,
        outlier_share=outliers,
    )


def _proto_from_script(module, example, opset: int, output_name: str, axes: dict):
    """A TorchScript module (``torch.jit.load``) through the TorchScript exporter: the dynamo exporter refuses
    ScriptModules ("Exporting a ScriptModule is not supported"), and this one reads their graph as saved. A plain
    module around one (the scores-only wrapper) is traced first: exported as it is, the exporter says the inner
    ScriptModule "is not part of the active trace"."""
    import onnx
    import torch

    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.trace(module, (example,), check_trace=False)
    names = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, input_names=[INPUT_NAME], output_names=[output_name],
                      opset_version=opset, dynamo=False,
                      dynamic_axes={INPUT_NAME: {d: names[d] for d in axes}} if axes else None)
    return onnx.load_from_string(buffer.getvalue())


def _root_cause(exc: BaseException) -> str:
    """The innermost error the exporter chained: its first words say what the model did wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {brief(exc)}"


def _name_dynamic_dims(proto) -> None:
    """Give the exporter's symbolic dims (s16, s82...) names a user can read: height, width."""
    names = {}
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, label in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) > index and dims[index].dim_param:
                names.setdefault(dims[index].dim_param, label)
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _shape_of(value_info) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim)


def _check_runs(path: Path, module, size: tuple[int, int], spec: ModelSpec, batch: int = 1) -> tuple[float, float]:
    """Run the file in onnxruntime at ``size``: output must be N×C×H×W and match torch, except on at most
    ``RUN_CHECK_OUTLIER_SHARE`` of the pixels. Returns (max abs diff, share of pixels beyond the tolerance)."""
    import torch

    import onnxruntime as ort  # a plain session: the graph layer sits below the backends' runners

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, *size), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    del session
    try:
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
    except Exception as exc:  # a program saved for one batch or size (torch.export's guards): one line, not a trace
        raise SegedgeError(f"{spec.name} fails in torch at {batch}x3x{size[0]}x{size[1]}, where the exported graph is "
                           f"checked ({_root_cause(exc)}); a model saved for one batch or input size cannot be "
                           f"exported with a dynamic batch or --dynamic") from None
    if got.shape != want.shape or len(got.shape) != 4 or not output_fits(tuple(int(d) for d in got.shape[2:]), size):
        raise ArtifactError(
            f"exported graph returns {got.shape} at input {size[0]}x{size[1]}, torch returns {want.shape}; "
            "expected N×C×H×W at the input's H×W or one integer fraction of it"
        )
    if not np.isfinite(got).all():
        raise ArtifactError(f"exported graph returns non-finite logits at input {size[0]}x{size[1]}")
    return _localized_diff(got, want, size)


def _localized_diff(got: np.ndarray, want: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """(max abs diff, share of pixels beyond ``RUN_CHECK_RTOL`` of the logit scale); raises when that share is
    above ``RUN_CHECK_OUTLIER_SHARE``."""
    per_pixel = np.abs(got - want).max(axis=1)
    diff = float(per_pixel.max())
    scale = max(1.0, float(np.abs(want).max()))
    share = float((per_pixel > RUN_CHECK_RTOL * scale).mean())
    if share > RUN_CHECK_OUTLIER_SHARE:
        raise ArtifactError(
            f"exported graph differs from torch at input {size[0]}x{size[1]} on {100 * share:.2g} % of the pixels "
            f"(max abs diff {diff:.3g}, logit scale {scale:.3g}); a size baked into the graph is the usual cause"
        )
    return round(diff, 6), round(share, 6)
