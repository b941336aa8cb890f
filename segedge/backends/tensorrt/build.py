"""``engine_from_onnx``: ONNX → serialized TensorRT engine, and the engine cache.

Precision comes from the ONNX graph: Q/DQ nodes for INT8, an FP16 graph for FP16, a BF16 graph
(:func:`segedge.graph.bf16.bf16_from_onnx`) for BF16. Where TensorRT offers
strongly typed networks (10.x; required in 11.x) the network is built strongly typed, so the engine runs
exactly the precision the graph — and its parity check — had. TensorRT 8.6 (JetPack 6.0) has no strong
typing: there, and only there, the FP16/INT8 builder flags are set to match the graph (TensorRT 10.1
deprecated implicit INT8 calibrators; TensorRT 11 removed the precision flags). A weakly typed build may
also run an FP32 graph with BF16 kernels allowed (``EngineSettings.bf16``, TensorRT 9.0 on).

Engines are not portable across GPUs or TensorRT versions, and TensorRT's own error on a mismatch is
obscure, so every engine is stored with a JSON sidecar (TensorRT version, GPU, compute capability, ONNX
hash, build settings) and a load on another GPU or version is refused with a message that says so.

``tensorrt`` is imported inside the functions that need it: the rest of segedge runs without it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segedge.core.artifacts import atomic_path, atomic_write_json, config_hash, sha256_file
from segedge.core.errors import ArtifactError, SegedgeError


class TensorRTUnavailable(SegedgeError):
    """TensorRT or a CUDA GPU is missing on this machine."""


@dataclass(frozen=True)
class EngineSettings:
    """How to build; with the ONNX hash, TensorRT version and GPU it keys the engine cache."""

    min_shape: tuple[int, int, int, int] | None = None  # None: the ONNX input's static shape
    opt_shape: tuple[int, int, int, int] | None = None
    max_shape: tuple[int, int, int, int] | None = None
    workspace_mb: int = 1024
    dla_core: int = -1  # ≥ 0: build for that DLA core, layers DLA cannot run fall back to the GPU
    builder_optimization_level: int = 3
    strongly_typed: bool = True  # where the TensorRT version has it
    bf16: bool = False  # weakly typed builds: let TensorRT pick BF16 kernels for an FP32 graph (BuilderFlag.BF16)

    def validate(self) -> None:
        shapes = [s for s in (self.min_shape, self.opt_shape, self.max_shape) if s is not None]
        if shapes and len(shapes) != 3:
            raise SegedgeError("give min, opt and max shapes together, or none for a static engine")
        if shapes:
            lo, opt, hi = shapes
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise SegedgeError(f"optimization profile needs min ≤ opt ≤ max per dimension, got {lo}, {opt}, {hi}")
        if self.workspace_mb < 1:
            raise SegedgeError("workspace_mb must be >= 1")
        if not 0 <= self.builder_optimization_level <= 5:
            raise SegedgeError("builder_optimization_level must be within 0..5")


@dataclass(frozen=True)
class EngineMeta:
    tensorrt: str
    gpu: str
    compute_capability: str
    onnx_sha256: str
    graph_precision: str
    settings: dict = field(default_factory=dict)
    build_seconds: float = 0.0


def graph_precision(onnx_path: str | Path) -> str:
    """'int8' when the graph holds Q/DQ pairs, 'fp16' / 'bf16' when its float weights (initializers or
    Constant nodes) are FP16 / BF16, else 'fp32'."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} <= ops:
        return "int8"
    float_types = {t.data_type for t in model.graph.initializer}
    float_types |= {a.t.data_type for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"}
    if onnx.TensorProto.FLOAT16 in float_types:
        return "fp16"
    return "bf16" if onnx.TensorProto.BFLOAT16 in float_types else "fp32"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def engine_cache_path(onnx_path: Path, trt_version: str, gpu: str, compute_capability: str, settings: EngineSettings) -> Path:
    """``model.<trt-ver>.<gpu>.<key>.engine`` beside the ONNX file; the key covers ONNX hash and settings."""
    options = asdict(settings)
    if not settings.bf16:  # added later: left out when off, so engines cached before it keep their key
        del options["bf16"]
    key = config_hash({"onnx": sha256_file(onnx_path), "trt": trt_version, "gpu": gpu, "cc": compute_capability,
                       "settings": options})
    stem = onnx_path.name.removesuffix(".onnx")
    return onnx_path.with_name(f"{stem}.trt{trt_version}.{slug(gpu)}.{key[:8]}.engine")


def meta_path(engine_path: Path) -> Path:
    return engine_path.with_suffix(".engine.json")


def check_engine_compatible(meta: EngineMeta, trt_version: str, gpu: str, compute_capability: str, engine_path: Path) -> None:
    """Refuse an engine built elsewhere, in words (TensorRT's own deserialisation error is obscure)."""
    problems = []
    if meta.tensorrt != trt_version:
        problems.append(f"it was built with TensorRT {meta.tensorrt}, this machine has {trt_version}")
    if meta.compute_capability != compute_capability or meta.gpu != gpu:
        problems.append(f"it was built for {meta.gpu} (compute capability {meta.compute_capability}), "
                        f"this machine has {gpu} ({compute_capability})")
    if problems:
        raise ArtifactError(
            f"engine {engine_path} cannot run here: {'; '.join(problems)}. TensorRT engines are not portable: "
            f"rebuild it on this machine from {meta.onnx_sha256[:12]}… (segedge builds it when you run the same "
            "command with the ONNX file)"
        )


def read_meta(engine_path: Path) -> EngineMeta:
    path = meta_path(engine_path)
    try:
        return EngineMeta(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise ArtifactError(f"engine {engine_path} has no {path.name} beside it; segedge cannot tell what it was built for") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"{path} is corrupt ({exc}); delete the engine and rebuild it") from None


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed: on a Jetson it comes with JetPack; on a desktop GPU `pip install 'segedge[tensorrt]'`"
        ) from None
    return trt


def current_gpu() -> tuple[str, str]:
    """(GPU name, compute capability) of CUDA device 0, through torch."""
    try:
        import torch
    except ImportError:
        raise TensorRTUnavailable("segedge's TensorRT path needs torch with CUDA for device memory") from None
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def _major(version: str) -> int:
    return int(version.split(".")[0])


def builds_strongly_typed(settings: EngineSettings = EngineSettings()) -> bool:
    """Whether :func:`engine_from_onnx` builds strongly typed here (the settings ask for it and this TensorRT
    has it): then a precision must be in the graph's types, not asked of the builder."""
    trt = _tensorrt()
    return settings.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def engine_from_onnx(
    onnx_path: str | Path,
    settings: EngineSettings = EngineSettings(),
    timing_cache: str | Path | None = None,
    engine_path: str | Path | None = None,
) -> Path:
    """Build (or reuse from the cache) a serialized engine for ``onnx_path``; returns its path."""
    trt = _tensorrt()
    settings.validate()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX file {onnx_path} does not exist")
    gpu, cc = current_gpu()
    version = trt.__version__
    engine_path = Path(engine_path) if engine_path else engine_cache_path(onnx_path, version, gpu, cc, settings)
    if engine_path.is_file() and meta_path(engine_path).is_file():
        check_engine_compatible(read_meta(engine_path), version, gpu, cc, engine_path)
        return engine_path

    precision = graph_precision(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if _major(version) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    strongly_typed = builds_strongly_typed(settings)
    if strongly_typed and settings.bf16 and precision != "bf16":
        raise SegedgeError(f"a strongly typed build takes bf16 from the graph, and {onnx_path.name} is {precision}: "
                           "build from its bf16 copy (segedge.graph.bf16.bf16_from_onnx), or set strongly_typed=False")
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT {version}'s ONNX parser rejects {onnx_path}: {errors} "
                            f"(`segedge check {onnx_path} --profile …` explains what it cannot take)")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings.builder_optimization_level
    if not strongly_typed:  # TensorRT 8.6: weak typing, so enable what the graph asks for
        if precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
            config.set_flag(trt.BuilderFlag.INT8)
        if settings.bf16 or precision == "bf16":
            if not hasattr(trt.BuilderFlag, "BF16"):
                raise TensorRTUnavailable(f"TensorRT {version} has no BF16 builder flag: bf16 needs TensorRT 9.0 or later")
            config.set_flag(trt.BuilderFlag.BF16)
    if settings.dla_core >= 0:
        if precision in ("fp32", "bf16") or settings.bf16:
            raise SegedgeError("DLA runs FP16 or INT8 only: build from the FP16 or INT8 ONNX for a DLA core")
        if builder.num_DLA_cores <= settings.dla_core:
            raise TensorRTUnavailable(f"DLA core {settings.dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    input_tensor = network.get_input(0)
    dynamic = any(d < 0 for d in input_tensor.shape)
    if dynamic:
        if settings.opt_shape is None:
            raise SegedgeError(f"{onnx_path} has dynamic input {tuple(input_tensor.shape)}: give min/opt/max shapes")
        profile = builder.create_optimization_profile()
        profile.set_shape(input_tensor.name, settings.min_shape, settings.opt_shape, settings.max_shape)
        config.add_optimization_profile(profile)

    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"TensorRT {version} could not build an engine from {onnx_path} (see its log above)")
    seconds = round(time.perf_counter() - started, 1)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    meta = EngineMeta(version, gpu, cc, sha256_file(onnx_path), precision,
                      {**asdict(settings), "strongly_typed": strongly_typed}, seconds)
    atomic_write_json(meta_path(engine_path), asdict(meta))
    if cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path
