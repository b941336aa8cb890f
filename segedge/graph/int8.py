"""``int8_from_onnx``: precision lives in the ONNX graph (FP16 is :mod:`segedge.graph.fp16`).

INT8 is explicit QuantizeLinear/DequantizeLinear pairs
with per-channel weights, so onnxruntime and TensorRT consume the same artifact and the same calibration.

The scheme follows the target (:data:`INT8_SCHEMES`): on x86 onnxruntime, u8 activations run its fast u8s8
kernels (measured 2.36× over FP32 versus 1.45× with s8 on a DeepLabv3+ at 512×1024), with 7-bit weights on x86
CPUs without VNNI, whose u8·s8 pair sums saturate at 16 bits; ARM onnxruntime takes symmetric s8 (signed
dot-product kernels); TensorRT needs symmetric s8 with every zero point 0 and float biases.

Calibration is fed in chunks: onnxruntime's histogram calibrators keep every intermediate output of every
image they are given at once (past 24 GB at 512×1024), so segedge gives them a few images at a time
(``Int8Config.images_per_pass``) and lets the histograms merge. The resulting ranges are cached as JSON beside the artifact and reused, by every
scheme when the method is MinMax (see ``Int8Config.ranges_key``). :func:`calibrated_graph` calibrates once
and quantizes as many ways as asked: all layers, one layer alone (sensitivity), all but some (mixed precision).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from segedge.core.artifacts import atomic_path, scratch_dir
from segedge.core.errors import CalibrationError, InputSizeError

CALIB_METHODS = ("minmax", "entropy", "percentile")
CALIB_SELECTIONS = ("first", "balanced")  # which images of the calibration split calibrate (calibration_indices)
# how the --max-drop search ranks layers (Int8Config.search_order): "blocks" measures each torch block (or graph
# region) alone, then each layer alone inside the worst blocks only; "sensitivity" measures every layer alone;
# "output-first" measures nothing and keeps the layers nearest the output first
SEARCH_ORDERS = ("blocks", "sensitivity", "output-first")
OP_SETS = ("auto", "all", "layers")  # which op types get Q/DQ (Int8Config.op_set)
PROBE_MARGIN = 0.03  # the op-set probe keeps "layers" (fewer Q/DQ, more accurate) unless "all" is this much faster
PROBE_AGREEMENT_MARGIN = 0.002  # ... and agrees with the float graph's classes within this share of "layers"
BALANCED_POOL = 4  # balanced selection picks calib_images out of this many times as many candidates
ACTIVATION_TYPES = ("u8", "s8")
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the layers sensitivity and mixed precision act on
# Compute ops besides the layers above that get Q/DQ pairs when the config quantizes them: ranked and kept float
# by name like the layers (data-movement ops such as Reshape or Transpose only follow their input's quantization)
OTHER_QUANTIZED_OPS = ("Add", "Mul", "Concat", "Resize", "MaxPool", "AveragePool", "GlobalAveragePool", "Sigmoid",
                       "LeakyRelu", "Softmax", "LayerNormalization", "InstanceNormalization", "Where")
# Op types onnxruntime's quantizer would quantize by default but segedge keeps float, in every scheme.
# Quantized, Softmax's output gets onnxruntime's fixed [0, 1] range (scale 1/255), whatever calibration saw;
# attention probabilities over hundreds of keys are mostly far below 1/255 and round to 0. Kept float, the
# next MatMul quantizes them with their calibrated range instead (SegFormer-B0: scale 1.2e-4, 34x finer).
# Measured on SegFormer-B0 at 512x1024 (4 val images): 4.55 mIoU points lost (85.96 % argmax agreement) with
# Softmax quantized, 0.25 (98.14 %) without. Leaving out LayerNorm, Add/Mul, Concat or Sigmoid/LeakyRelu/
# GlobalAveragePool instead changed nothing measurable.
FLOAT_OPS = ("Softmax",)


@dataclass(frozen=True)
class Int8Scheme:
    """How a graph is quantized for one target's kernels. Weights are always s8, symmetric (zero point 0).

    ``activation_symmetric`` puts activation zero points at 0 (128 would be u8's midpoint, so symmetric
    schemes use s8). ``quantize_bias`` feeds Conv biases through an int32 DequantizeLinear, which
    onnxruntime folds into its QLinearConv; TensorRT's DequantizeLinear takes int8 input only, so its
    scheme keeps biases float and lets the builder fuse them.
    """

    name: str
    activation: str  # "u8" | "s8"
    activation_symmetric: bool
    quantize_bias: bool
    why: str
    # whose quantizer places the Q/DQ pairs: "onnxruntime" (segedge's settings above) or "nncf" (the vendor's
    # post-training quantization for OpenVINO, with its own placement and settings; the fields above describe it)
    quantizer: str = "onnxruntime"
    # weights on 7 bits (onnxruntime's reduce_range): x86 without VNNI sums two u8·s8 products into a saturating
    # int16 (VPMADDUBSW), which 255·127·2 overflows and 255·64·2 does not
    reduce_range: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "activation": self.activation,
                "activation_symmetric": self.activation_symmetric, "quantize_bias": self.quantize_bias,
                **({"quantizer": self.quantizer} if self.quantizer != "onnxruntime" else {}),
                **({"reduce_range": True} if self.reduce_range else {})}


X86 = Int8Scheme(
    "x86", "u8", activation_symmetric=False, quantize_bias=True,
    why="onnxruntime on x86: u8 activations feed the u8·s8 VPMADDUBSW/VNNI kernels (2.36x over FP32 vs "
        "1.45x with s8, measured on DeepLabv3+ 512x1024); asymmetric keeps all 256 levels on ReLU outputs",
)
X86_NO_VNNI = Int8Scheme(
    "x86-novnni", "u8", activation_symmetric=False, quantize_bias=True, reduce_range=True,
    why="onnxruntime on x86 without VNNI (AVX2, or AVX-512 without VNNI): its u8·s8 kernels add pairs of products "
        "in saturating int16, so weights take 7 bits (reduce_range), as onnxruntime's quantize_static guidance "
        "says for such CPUs; 8-bit weights there cost a tiny test net 5.6 points of mIoU",
)
ARM = Int8Scheme(
    "arm", "s8", activation_symmetric=True, quantize_bias=True,
    why="onnxruntime on ARM64: s8 activations with s8 weights run the signed SDOT/SMMLA kernels (ARM has no "
        "u8·s8 instruction); onnxruntime's quantize_static guidance for ARM CPUs is symmetric QInt8 "
        "activations and weights, reduce_range off",
)
TENSORRT = Int8Scheme(
    "tensorrt", "s8", activation_symmetric=True, quantize_bias=False,
    why="TensorRT explicit quantization: int8 only, every zero point 0 (symmetric activations and weights), "
        "per-channel weights on the output-channel axis; DequantizeLinear takes int8 input only, so biases "
        "stay float",
)
OPENVINO = Int8Scheme(
    "openvino", "u8", activation_symmetric=False, quantize_bias=False, quantizer="nncf",
    why="OpenVINO: NNCF's post-training quantization (the vendor's quantizer, its default preset) on segedge's "
        "calibration images; it places FakeQuantize where OpenVINO's CPU plugin fuses them, which segedge's "
        "onnxruntime-oriented placement does not (measured on DeepLabv3+: 35.0 ms vs 49.4 ms on an EPYC)",
)
INT8_SCHEMES: dict[str, Int8Scheme] = {s.name: s for s in (X86, X86_NO_VNNI, ARM, TENSORRT, OPENVINO)}
# CPU flags (segedge.core.hardware.KERNEL_FLAGS) whose u8·s8 dot products accumulate in int32 without saturating
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM_ARCHES = ("aarch64", "arm64", "ARM64")


def cpu_int8_scheme(machine) -> str:
    """segedge's own onnxruntime scheme for this CPU: arm on ARM64; x86 where the CPU has VNNI or its flags are
    unknown (``machine`` None or no flags read); x86-novnni where its flags are known and name no VNNI."""
    if machine is None:
        return X86.name
    if machine.arch in ARM_ARCHES:
        return ARM.name
    flags = tuple(getattr(machine, "cpu_flags", ()) or ())
    return X86_NO_VNNI.name if flags and not set(flags) & set(VNNI_FLAGS) else X86.name


def saturation_note(scheme: Int8Scheme, machine=None) -> str:
    """Why a graph of the x86 scheme (8-bit weights, for VNNI CPUs) checked on ``machine`` (default: this one)
    may read worse there than on its target; '' where it does not apply."""
    if machine is None:
        from segedge.core.hardware import this_cpu

        machine = this_cpu()
    if scheme.name != X86.name or cpu_int8_scheme(machine) != X86_NO_VNNI.name:
        return ""
    return (f"this CPU has no VNNI (flags: {' '.join(machine.cpu_flags)}): onnxruntime adds its u8·s8 products in "
            f"saturating int16 here, so the x86 scheme's 8-bit weights (made for VNNI CPUs) can lose accuracy on it; "
            f"--int8-scheme {X86_NO_VNNI.name} quantizes weights to 7 bits for CPUs like this one")
_SCHEME_OF_ACTIVATION = {"u8": X86, "s8": TENSORRT}  # what the older activation-only setting meant


def int8_scheme(name: str) -> Int8Scheme:
    try:
        return INT8_SCHEMES[name]
    except KeyError:
        raise InputSizeError(
            f"unknown INT8 scheme {name!r}; choose one of {', '.join(INT8_SCHEMES)} "
            "(x86 / arm: onnxruntime on that CPU; tensorrt: symmetric int8 for TensorRT; openvino: NNCF for OpenVINO)"
        ) from None


class DefaultCount(int):
    """A count nobody asked for: where the calibration split holds fewer images, the export calibrates on all of
    them and says so, where a count the user gave is an error. Survives ``dataclasses.replace`` and ``asdict``, and
    reads as its number everywhere else."""


DEFAULT_CALIB_IMAGES = DefaultCount(32)


@dataclass(frozen=True)
class Int8Config:
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_method: str = "minmax"
    # the target's scheme (an Int8Scheme or its name); None: from ``activation``, else x86
    scheme: Int8Scheme | str | None = None
    # older setting kept for profiles and the CLI: u8 means the x86 scheme, s8 the tensorrt one; after
    # construction it always holds the scheme's activation type
    activation: str | None = None
    per_channel: bool = True
    # first: the split's first calib_images; balanced: greedy pick favouring rare classes (calibration_indices)
    calib_select: str = "first"
    # op types kept float that onnxruntime's quantizer would quantize (see FLOAT_OPS; () is onnxruntime's default)
    float_ops: tuple[str, ...] = FLOAT_OPS
    # cross-layer equalization of the prepared graph before calibration (segedge.graph.equalize): function-preserving
    # rescaling of conv pairs so per-channel weight ranges even out (depthwise-heavy nets)
    equalize: bool = False
    # images per calibration pass, which bounds the calibrator's memory; None: 4 for minmax, 1 for the
    # histogram methods (measured on BiSeNet at 512x1024, benchmarks/bench_calibration_memory.py: entropy
    # peaks at 2.5 GB with 4 images a pass, 1.5 GB with 2, 1.0 GB with 1, and runs no slower with 1)
    chunk: int | None = None
    # automatic mixed precision: keep the most sensitive layers float until the mIoU drop (points) on the
    # evaluation images is at most max_drop; None: no search. max_search_steps bounds the candidates tried.
    max_drop: float | None = None
    max_search_steps: int = 10
    # which layers the search keeps float first: "sensitivity" (each layer quantized alone and measured, most
    # costly first: one quantization and evaluation per layer up front) or "output-first" (the layers nearest
    # the output first, unmeasured: for nets too heavy to measure layer by layer; classifier heads on
    # low-margin logits are the usual culprits)
    search_order: str = "blocks"
    # the classifier (the last Conv/Gemm/... before the class scores, found by classifier_layers) stays float unless
    # this is set: low-margin logits are where rounding flips classes, and it is one layer of many (measured on the
    # zoo: keeping it float fixed five of eight heavy-CNN misses for under 2 % of the INT8 speed)
    quantize_classifier: bool = False
    # which op types get Q/DQ (OP_SETS): "all" (onnxruntime's default set less float_ops), "layers" (Conv,
    # ConvTranspose, MatMul, Gemm only), or "auto": the export times both on the model and keeps the faster
    # (probe_op_set), recording the figures; where Q/DQ around many elementwise ops costs more than it saves
    op_set: str = "auto"

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATION_TYPES:
            raise InputSizeError(f"activation type must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activation!r}")
        scheme = self.scheme
        if isinstance(scheme, str):
            scheme = int8_scheme(scheme)
        if scheme is None:
            scheme = _SCHEME_OF_ACTIVATION[self.activation] if self.activation else X86
        elif self.activation is not None and self.activation != scheme.activation:
            raise InputSizeError(
                f"activation type {self.activation} contradicts INT8 scheme {scheme.name}, which uses "
                f"{scheme.activation} activations; give the scheme alone"
            )
        object.__setattr__(self, "float_ops", tuple(self.float_ops))
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "activation", scheme.activation)

    def validate(self) -> None:
        if self.calib_method not in CALIB_METHODS:
            raise InputSizeError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.calib_method!r}")
        if self.calib_images < 1:
            raise InputSizeError(f"--calib-images must be >= 1, got {self.calib_images}")
        if self.calib_select not in CALIB_SELECTIONS:
            raise InputSizeError(f"--calib-select must be one of {', '.join(CALIB_SELECTIONS)}, got {self.calib_select!r}")
        if self.chunk is not None and self.chunk < 1:
            raise InputSizeError(f"calibration chunk must be >= 1, got {self.chunk}")
        if self.op_set not in OP_SETS:
            raise InputSizeError(f"--op-set must be one of {', '.join(OP_SETS)}, got {self.op_set!r}")
        if self.search_order not in SEARCH_ORDERS:
            raise InputSizeError(f"--search-order must be one of {', '.join(SEARCH_ORDERS)}, got {self.search_order!r}")
        if self.max_search_steps < 1:
            raise InputSizeError(f"the mixed-precision search needs at least 1 step, got {self.max_search_steps}")

    @property
    def images_per_pass(self) -> int:
        """``chunk``, or the method's measured default."""
        return self.chunk if self.chunk is not None else (4 if self.calib_method == "minmax" else 1)

    @property
    def symmetric_calibration(self) -> bool:
        """Whether the calibrator itself must collect symmetric ranges.

        MinMax ranges are symmetrised by the quantizer when the scheme asks for it (max(|min|, |max|) either
        way), so one MinMax cache serves every scheme; histogram methods pick their clipping range from a
        symmetric or an asymmetric histogram, so their ranges depend on the scheme.
        """
        return self.scheme.activation_symmetric and self.calib_method != "minmax"

    def ranges_key(self) -> str:
        """What the calibration ranges depend on (besides the graph and the calibration images)."""
        key = f"{self.calib_method}.{'sym' if self.symmetric_calibration else 'any'}.{self.calib_images}"
        if self.calib_select != "first":
            key = f"{key}.{self.calib_select}"
        return f"{key}.cle" if self.equalize else key

    def op_types(self) -> list[str]:
        """The op types this config quantizes: onnxruntime's default set (both of its registries, so it follows
        the installed version), less ``float_ops``."""
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        if self.op_set == "layers":
            return sorted(set(QUANTIZABLE_OPS) - set(self.float_ops))
        return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(self.float_ops))

    def as_dict(self) -> dict:
        # the resolved op types too: an artifact made with another op set is never reused for this config
        # ("auto" is resolved per model by the export, which records what it chose and why)
        return {**asdict(self), "scheme": self.scheme.as_dict(),
                "op_types": "auto" if self.op_set == "auto" else self.op_types()}


def calibration_indices(dataset, config: Int8Config, ignore_index: int = 255) -> tuple[list[int], dict]:
    """Which images of ``dataset`` (items ``(image, mask)``) calibrate, and a summary for the manifest.

    ``first`` takes the first ``calib_images``. ``balanced`` looks at the masks of the first
    ``BALANCED_POOL`` × ``calib_images`` images and greedily adds the image whose pixels fall most on the
    classes least covered so far (each class weighs 1 / (1 + its pixel share summed over the images already
    chosen)): activation ranges then see rare classes (poles, signs, riders) that a handful of road-dominated
    frames would miss. The summary gives the pixel share of the rarest present class either way.
    """
    count = config.calib_images
    if count > len(dataset):
        raise CalibrationError(
            f"calibration set has {len(dataset)} images but {count} were asked for; lower --calib-images to at "
            f"most {len(dataset)}"
        )
    if config.calib_select == "first":
        return list(range(count)), {"select": "first"}
    pool = min(len(dataset), BALANCED_POOL * count)
    num_classes = int(getattr(dataset, "num_classes", 0) or len(dataset.class_names))
    shares = np.zeros((pool, num_classes))
    for i in range(pool):
        _, mask = dataset[i]
        labels = mask[mask != ignore_index].ravel()
        counts = np.bincount(labels[labels < num_classes], minlength=num_classes)[:num_classes]
        shares[i] = counts / max(1, counts.sum())
    chosen: list[int] = []
    covered = np.zeros(num_classes)
    available = np.ones(pool, dtype=bool)
    for _ in range(count):
        score = np.where(available, shares @ (1.0 / (1.0 + covered)), -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        covered += shares[best]

    def rarest(indices) -> float:
        total = shares[indices].sum(0)
        present = total[total > 0]
        return round(float(present.min() / total.sum()), 5) if present.size else 0.0

    return sorted(chosen), {"select": "balanced", "pool": pool, "rarest_class_share": rarest(chosen),
                            "rarest_class_share_first": rarest(list(range(count)))}


def _readable_ranges(path: Path) -> bool:
    """Whether a ranges cache is the JSON object onnxruntime's ``save_tensors_data`` writes."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data)


# ops a class score passes through unchanged in meaning on its way to the output (upsampling, reshapes, the
# softmax, a fusion sum of several classifiers as in DeepLab v2's ASPP-L): walked back over to find the classifier
PASSTHROUGH_OPS = ("Resize", "Upsample", "Identity", "Reshape", "Transpose", "Softmax", "LogSoftmax", "Sigmoid",
                   "Cast", "Slice", "Squeeze", "Unsqueeze", "Add", "Pad", "Flatten", "DepthToSpace", "QuantizeLinear",
                   "DequantizeLinear")


def classifier_layers(model) -> list[str]:
    """Names of the quantizable layers that produce the class scores: walking back from each graph output
    through :data:`PASSTHROUGH_OPS`, the first Conv/ConvTranspose/MatMul/Gemm met on every path."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    found, seen = [], set()
    stack = [output.name for output in graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:  # by identity: exporters leave some nodes unnamed
            continue
        seen.add(id(node))
        if node.op_type in QUANTIZABLE_OPS:
            found.append(node.name)
        elif node.op_type in PASSTHROUGH_OPS:
            stack.extend(name for name in node.input if name in producers)
    return sorted(found)


class _ArrayReader:
    """onnxruntime's one-method ``CalibrationDataReader`` protocol over a list of input arrays."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]) -> None:
        self._items = iter([{input_name: a} for a in arrays])

    def get_next(self) -> dict | None:
        return next(self._items, None)


@dataclass(frozen=True)
class Layer:
    """A node that quantization turns into an integer kernel: what sensitivity ranks and mixed precision keeps float."""

    name: str
    op_type: str


class CalibratedGraph:
    """A graph prepared for quantization plus its activation ranges: calibrate once, quantize many ways.

    Node names are those of the prepared graph (after onnxruntime's pre-processing fusions), which is what
    ``quantize(only=..., exclude=...)`` and a manifest's list of float layers refer to.
    """

    suffix = ".onnx"  # what quantize() writes: a Q/DQ ONNX graph

    def __init__(self, prepared: Path, ranges: Path, config: Int8Config, input_name: str,
                 equalization: dict | None = None) -> None:
        self.prepared = prepared
        self.ranges = ranges
        self.config = config
        self.input_name = input_name
        self.equalization = equalization  # segedge.graph.equalize's report when config.equalize

    @property
    def source(self) -> Path:
        """The ONNX graph whose node names ``layers()``, ``only`` and ``exclude`` use."""
        return self.prepared

    def counts(self, path: str | Path) -> dict:
        """What the quantized file at ``path`` holds: quantizer nodes and float layers left."""
        import onnx

        return qdq_counts(onnx.load(str(path)))

    def write_float(self, dst: str | Path) -> None:
        """The graph with nothing quantized, in the form ``quantize`` writes (a search's last resort)."""
        shutil.copyfile(self.source, dst)

    def copy(self, src: str | Path, dst: str | Path) -> None:
        """Copy a file ``quantize`` wrote (with whatever it reads beside it)."""
        shutil.copyfile(src, dst)

    def layers(self) -> list[Layer]:
        """The nodes quantization acts on, in graph order: Conv/ConvTranspose/MatMul/Gemm, and the other compute
        ops this config quantizes (:data:`OTHER_QUANTIZED_OPS`: Add, Concat, Resize, pooling, ...), so that a loss
        from one of those shows under its own name rather than only as "all layers at once"."""
        import onnx

        graph = onnx.load(str(self.source), load_external_data=False).graph
        kinds = set(QUANTIZABLE_OPS) | (set(OTHER_QUANTIZED_OPS) & set(self.config.op_types()))
        return [Layer(n.name, n.op_type) for n in graph.node if n.op_type in kinds and n.name]

    def classifier(self) -> list[str]:
        """The classifier layers (:func:`classifier_layers`) of the prepared graph."""
        import onnx

        return classifier_layers(onnx.load(str(self.source), load_external_data=False))

    def kept_float(self, only: list[str] | None, exclude: list[str] | None) -> list[str] | None:
        """``exclude`` plus the classifier unless the config quantizes it (``only`` lists say exactly what runs)."""
        if only is not None or self.config.quantize_classifier:
            return list(exclude) if exclude else None
        return sorted(set(exclude or ()) | set(self.classifier())) or None

    def _check_names(self, only: list[str] | None, exclude: list[str] | None) -> set[str]:
        if only is not None and not only:
            raise InputSizeError("quantize(only=[]) would quantize nothing; give at least one layer")
        known = {layer.name for layer in self.layers()}
        unknown = sorted((set(only or ()) | set(exclude or ())) - known)
        if unknown:
            raise InputSizeError(
                f"no quantizable layer named {', '.join(unknown[:5])} in the prepared graph "
                f"({len(known)} layers; see CalibratedGraph.layers())"
            )
        return known

    def quantize(self, dst: str | Path, only: list[str] | None = None, exclude: list[str] | None = None) -> dict:
        """Write the Q/DQ graph to ``dst``: every layer, ``only`` these, or all but ``exclude`` (kept float)."""
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        self._check_names(only, exclude)
        exclude = self.kept_float(only, exclude)
        scheme = self.config.scheme
        with atomic_path(dst) as tmp:
            quantize_static(
                str(self.prepared),
                str(tmp),
                calibration_data_reader=None,
                calibration_cache_path=str(self.ranges),
                quant_format=QuantFormat.QDQ,
                per_channel=self.config.per_channel,
                reduce_range=scheme.reduce_range,
                activation_type=QuantType.QUInt8 if scheme.activation == "u8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(only) if only is not None else None,
                nodes_to_exclude=list(exclude) if exclude else None,
                op_types_to_quantize=self.config.op_types(),
                calibrate_method=_calibration_method(self.config.calib_method),
                extra_options={
                    "ActivationSymmetric": scheme.activation_symmetric,
                    "WeightSymmetric": True,
                    "QuantizeBias": scheme.quantize_bias,
                },
            )
            onnx.checker.check_model(str(tmp), full_check=True)
            counts = qdq_counts(onnx.load(str(tmp)))
        return counts


class NncfGraph(CalibratedGraph):
    """The same interface with NNCF as the quantizer (scheme ``openvino``), the way an OpenVINO user runs it:
    OpenVINO reads the FP32 ONNX graph, ``nncf.quantize`` places FakeQuantize on that model with the
    calibration images (NNCF collects its own statistics, so the images are kept instead of a ranges file),
    with the layers to keep float as its ignored scope, and the result is written as an OpenVINO IR
    (``.xml`` + ``.bin``). OpenVINO names an ONNX node's ops after the node (``Conv_3``, ``Conv_3/WithoutBiases``),
    so layers keep the ONNX graph's names here as everywhere else.

    NNCF's ONNX backend, which segedge used before, places its quantizers differently on transformers: on
    SegFormer-B0 it agreed with FP32 on 93.7 % of pixels where NNCF on OpenVINO's model agrees on 97.3 %.
    """

    suffix = ".xml"

    def __init__(self, source: Path, arrays: list[np.ndarray], config: Int8Config, input_name: str,
                 equalization: dict | None = None) -> None:
        super().__init__(source, Path(), config, input_name, equalization)
        self.arrays = arrays

    def counts(self, path: str | Path) -> dict:
        import openvino as ov

        return fake_quantize_counts(ov.Core().read_model(str(path)))

    def write_float(self, dst: str | Path) -> None:
        import openvino as ov

        write_ir(ov.Core().read_model(str(self.source)), dst)

    def copy(self, src: str | Path, dst: str | Path) -> None:
        import openvino as ov

        write_ir(ov.Core().read_model(str(src)), dst)

    def quantize(self, dst: str | Path, only: list[str] | None = None, exclude: list[str] | None = None) -> dict:
        import re

        import openvino as ov

        nncf = _nncf()
        known = self._check_names(only, exclude)
        exclude = self.kept_float(only, exclude)
        ignored = set(exclude or ()) | (known - set(only) if only is not None else set())
        model = ov.Core().read_model(str(self.source))
        dataset = nncf.Dataset(self.arrays, lambda array: {self.input_name: array})
        kinds = {layer.name: layer.op_type for layer in self.layers()}
        scope = nncf.IgnoredScope(names=openvino_ops(model, {name: kinds[name] for name in ignored}),
                                  patterns=[f"{re.escape(name)}(/.*)?" for name in sorted(ignored)],
                                  validate=False) if ignored else None
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # NNCF draws its own progress bars; segedge's calibration bar already says what runs
            quantized = nncf.quantize(model, dataset, subset_size=len(self.arrays),
                                      **({"ignored_scope": scope} if scope is not None else {}))
        write_ir(quantized, dst)
        return {**fake_quantize_counts(quantized), "quantizer": f"nncf {nncf.__version__}"}


OPENVINO_LAYER_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                      "MatMul")


def openvino_ops(model, layers: dict[str, str]) -> list[str]:
    """The OpenVINO ops that ONNX nodes ``{name: op_type}`` became, for NNCF's ignored scope. OpenVINO's ONNX
    reader gives a node's name to the last op it makes (a ConvTranspose with a bias becomes
    ``ConvolutionBackpropData_48`` and an Add named after the node; a Conv, ``<name>/WithoutBiases`` and the
    Add), so for a layer the compute op is found by walking back from that op through its non-constant inputs."""
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    found: list[str] = []
    for name, op_type in sorted(layers.items()):
        for start in (ops.get(name), ops.get(f"{name}/WithoutBiases")):
            if start is None:
                continue
            if op_type not in QUANTIZABLE_OPS:  # Add, Concat, Resize, pooling: the named op itself
                found.append(start.get_friendly_name())
                break
            frontier, depth = [start], 0
            while frontier and depth < 4:
                hit = next((op for op in frontier if op.get_type_name() in OPENVINO_LAYER_OPS), None)
                if hit is not None:
                    found.append(hit.get_friendly_name())
                    break
                frontier = [value.get_node() for op in frontier for value in op.input_values()
                            if value.get_node().get_type_name() not in ("Constant", "Parameter")]
                depth += 1
            else:
                continue
            break
    return sorted(set(found))


def write_ir(model, dst: str | Path) -> None:
    """Save an OpenVINO model as ``dst`` (.xml) and its ``.bin``, each by temp file + rename, weights first:
    a reader holding the old ``.xml`` never meets a half-written ``.bin``, and the manifest's hashes of both
    (segedge.core.artifacts.sidecar_names) catch a run killed between the two renames."""
    import openvino as ov

    dst = Path(dst)
    xml = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.xml")  # beside dst: a rename never crosses filesystems
    try:
        ov.save_model(model, str(xml), compress_to_fp16=False)
        if not xml.is_file() or not xml.with_suffix(".bin").is_file():
            raise CalibrationError(f"OpenVINO wrote no IR for {dst.name}")
        os.replace(xml.with_suffix(".bin"), dst.with_suffix(".bin"))
        os.replace(xml, dst)
    finally:
        xml.unlink(missing_ok=True)
        xml.with_suffix(".bin").unlink(missing_ok=True)


def fake_quantize_counts(model) -> dict:
    """qdq_counts for an OpenVINO model: its FakeQuantize ops (on activations) and the convolutions whose
    weights are float. Saving an IR folds a weight's FakeQuantize into int8 constants and a dequantizing
    Convert/Subtract/Multiply chain, so a weight is quantized when it comes from either."""
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    float_convs = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "ConvolutionBackpropData"):
            weights = op.input_value(1).get_node()
            while weights.get_type_name() in ("Convert", "Reshape", "Multiply", "Subtract", "Transpose", "Unsqueeze"):
                weights = weights.input_value(0).get_node()
            integer = weights.get_type_name() == "Constant" and weights.get_output_element_type(0).is_integral()
            float_convs += not (integer or weights.get_type_name() == "FakeQuantize")
    return {"fake_quantize_nodes": kinds.count("FakeQuantize"), "float_convs_left": float_convs}


def _nncf():
    """NNCF, quiet (its progress bars would interleave with segedge's), or a one-line error naming the extra."""
    import logging

    try:
        import nncf
    except ImportError:
        raise CalibrationError("INT8 scheme openvino quantizes with NNCF, which is not installed: "
                               "pip install \"segedge[openvino]\"") from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def probe_op_set(graph: CalibratedGraph, sample: np.ndarray, threads: int, rounds: int = 7) -> tuple[str, dict]:
    """Quantize the graph with each op set, time both (onnxruntime CPU, round-robin, one image) and compare their
    classes with the float graph's on every image of ``sample``; name the one to keep.

    "all" is kept only when it is more than ``PROBE_MARGIN`` faster than "layers" on the fastest of its runs (a
    busy machine slows runs down, never speeds one up) *and* agrees with the float graph within
    ``PROBE_AGREEMENT_MARGIN`` of "layers": the choice changes accuracy (DeepLab v2: full INT8 drop +0.20 points
    with "layers", +1.24 with "all"), so timing alone must not make it. Returns (op set, figures for the
    manifest: median and fastest ms, argmax agreement with float, why)."""
    import dataclasses

    import onnxruntime as ort

    def session(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def classes(sess) -> np.ndarray:
        return np.concatenate([sess.run(None, {graph.input_name: sample[i : i + 1]})[0].argmax(1)
                               for i in range(len(sample))])

    saved = graph.config
    sessions = {}
    try:
        with scratch_dir("opset") as work:
            for name in ("all", "layers"):
                graph.config = dataclasses.replace(saved, op_set=name)
                path = Path(work) / f"{name}.onnx"
                graph.quantize(path)
                sessions[name] = session(path)
            reference = classes(session(graph.source))
            agreement = {name: round(float((classes(sess) == reference).mean()), 5) for name, sess in sessions.items()}
            feed = {graph.input_name: sample[:1]}
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for round_ in range(rounds + 1):
                for name, sess in sessions.items():
                    started = time.perf_counter()
                    sess.run(None, feed)
                    if round_:  # the first round warms up
                        times[name].append(1000 * (time.perf_counter() - started))
    finally:
        graph.config = saved
    ms = {name: round(float(np.median(t)), 3) for name, t in times.items()}
    fastest = {name: round(float(np.min(t)), 3) for name, t in times.items()}
    faster = fastest["all"] < (1 - PROBE_MARGIN) * fastest["layers"]
    as_accurate = agreement["all"] >= agreement["layers"] - PROBE_AGREEMENT_MARGIN
    chosen = "all" if faster and as_accurate else "layers"
    why = ("all: faster and as accurate" if chosen == "all" else
           "layers: all is not faster by more than the margin" if not faster else
           "layers: all is faster but changes more classes")
    return chosen, {"probe_ms": ms, "probe_fastest_ms": fastest, "probe_agreement": agreement,
                    "probe_images": int(len(sample)), "why": why}


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


@contextmanager
def calibrated_graph(
    src: str | Path,
    calibration_batches: Callable[[], Iterator[np.ndarray]],
    config: Int8Config,
    available_images: int,
    input_name: str | None = None,
    ranges_cache: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[CalibratedGraph]:
    """Prepare ``src`` for quantization and calibrate it (or load ``ranges_cache`` when it exists).

    ``calibration_batches()`` yields network inputs (1×3×H×W float32) one image at a time, at most
    ``config.calib_images`` of them; ``available_images`` is how many the calibration split holds.
    ``progress(n)`` is called after each chunk with the number of images done. The prepared graph lives
    in a temporary directory for the duration of the ``with`` block.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    config.validate()
    if available_images < config.calib_images:
        raise CalibrationError(
            f"calibration set has {available_images} images but {config.calib_images} were asked for; "
            f"lower --calib-images to at most {available_images}"
        )
    with scratch_dir("int8") as work:
        prepared = Path(work) / "prepared.onnx"
        # shape inference + onnxruntime's graph fusions so Q/DQ land where kernels fuse (conv+relu, ...)
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        equalization = None
        if config.equalize:
            from segedge.graph.equalize import equalize_file

            equalization = equalize_file(prepared, prepared)
        if input_name is None:  # the graph's own image input (a bring-your-own ONNX names it as it likes)
            graph = onnx.load(str(prepared), load_external_data=False).graph
            weights = {t.name for t in graph.initializer}
            input_name = next(i.name for i in graph.input if i.name not in weights)

        if config.scheme.quantizer == "nncf":
            _nncf()  # fail before reading any image when NNCF is missing
            arrays = _take(calibration_batches(), config.calib_images, progress)
            # OpenVINO's model of the graph as given (onnxruntime's fusions are for onnxruntime), unless
            # equalization rewrote the prepared one
            yield NncfGraph(prepared if config.equalize else Path(src), arrays, config, input_name, equalization)
            return
        ranges_path = Path(ranges_cache) if ranges_cache else Path(work) / "ranges.json"
        if ranges_path.is_file() and not _readable_ranges(ranges_path):
            ranges_path.unlink()  # truncated or edited: calibrate again rather than fail deep in the quantizer
        if not ranges_path.is_file():
            calibrator = create_calibrator(
                prepared,
                augmented_model_path=str(Path(work) / "augmented.onnx"),
                calibrate_method=_calibration_method(config.calib_method),
                extra_options={"symmetric": config.symmetric_calibration},
            )
            seen = 0
            chunk: list[np.ndarray] = []
            for array in calibration_batches():
                chunk.append(array)
                seen += 1
                if len(chunk) == config.images_per_pass:
                    calibrator.collect_data(_ArrayReader(input_name, chunk))
                    chunk = []
                    if progress:
                        progress(seen)
                if seen == config.calib_images:
                    break
            if chunk:
                calibrator.collect_data(_ArrayReader(input_name, chunk))
                if progress:
                    progress(seen)
            if seen < config.calib_images:
                raise CalibrationError(
                    f"calibration data ran out after {seen} images; {config.calib_images} were asked for"
                )
            ranges = calibrator.compute_data()
            del calibrator
            with atomic_path(ranges_path) as tmp:
                save_tensors_data(ranges, tmp)
        yield CalibratedGraph(prepared, ranges_path, config, input_name, equalization)


def _take(batches: Iterator[np.ndarray], count: int, progress: Callable[[int], None] | None) -> list[np.ndarray]:
    arrays = []
    for array in batches:
        arrays.append(array)
        if progress:
            progress(len(arrays))
        if len(arrays) == count:
            return arrays
    raise CalibrationError(f"calibration data ran out after {len(arrays)} images; {count} were asked for")


def int8_from_onnx(
    src: str | Path,
    dst: str | Path,
    calibration_batches: Callable[[], Iterator[np.ndarray]],
    config: Int8Config,
    available_images: int,
    input_name: str | None = None,
    ranges_cache: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    keep_float: list[str] | None = None,
) -> dict:
    """Static Q/DQ quantization of ``src`` into ``dst`` with ``config.scheme``; ``keep_float`` names layers
    (of the prepared graph, see :class:`CalibratedGraph`) left in float. Arguments as :func:`calibrated_graph`.
    """
    started = time.perf_counter()
    with calibrated_graph(src, calibration_batches, config, available_images, input_name, ranges_cache, progress) as graph:
        counts = graph.quantize(dst, exclude=keep_float)
    return {"seconds": round(time.perf_counter() - started, 2), **counts}


def qdq_counts(model) -> dict:
    ops = [n.op_type for n in model.graph.node]
    return {
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
        "float_convs_left": _float_convs(model),
    }


def _float_convs(model) -> int:
    """Convs whose weight does not come through a DequantizeLinear: layers left in float."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    count = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            producer = produced_by.get(node.input[1])
            if producer is None or producer.op_type != "DequantizeLinear":
                count += 1
    return count
