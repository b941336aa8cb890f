"""``fp16_from_onnx`` and ``int8_from_onnx``: precision lives in the ONNX graph.

FP16 is an FP16 graph with FP32 inputs and outputs (onnxruntime.transformers' converter: measured, unlike
onnxconverter-common's, to handle dynamo exports). INT8 is explicit QuantizeLinear/DequantizeLinear pairs
with per-channel weights, so onnxruntime and TensorRT consume the same artifact and the same calibration.

Activation type follows the target: on x86 onnxruntime, u8 activations run its fast u8s8 kernels (measured
2.36× over FP32 versus 1.45× with s8 on a DeepLabv3+ at 512×1024); TensorRT needs symmetric s8.

Calibration is fed in chunks: onnxruntime's histogram calibrators keep every intermediate output of every
image they are given at once (past 24 GB at 512×1024), so segedge gives them ``chunk`` images at a time and
lets the histograms merge. The resulting ranges are cached as JSON beside the artifact and reused.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from segedge.artifacts import atomic_path
from segedge.errors import CalibrationError, InputSizeError

CALIB_METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("u8", "s8")


@dataclass(frozen=True)
class Int8Config:
    calib_images: int = 32
    calib_method: str = "minmax"
    activation: str = "u8"  # u8: x86 onnxruntime; s8 (symmetric): TensorRT, ARM
    per_channel: bool = True
    chunk: int = 4  # images per calibration pass: bounds the calibrator's memory

    def validate(self) -> None:
        if self.calib_method not in CALIB_METHODS:
            raise InputSizeError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.calib_method!r}")
        if self.activation not in ACTIVATION_TYPES:
            raise InputSizeError(f"activation type must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activation!r}")
        if self.calib_images < 1:
            raise InputSizeError(f"--calib-images must be >= 1, got {self.calib_images}")
        if self.chunk < 1:
            raise InputSizeError(f"calibration chunk must be >= 1, got {self.chunk}")

    def as_dict(self) -> dict:
        return asdict(self)


def fp16_from_onnx(src: str | Path, dst: str | Path) -> dict:
    """Convert an FP32 graph to FP16 compute with FP32 inputs/outputs (so runners and users feed float32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started = time.perf_counter()
    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    _sort_topologically(converted.graph)  # the converter appends its input Casts at the end
    with atomic_path(dst) as tmp:
        onnx.save_model(converted, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {"seconds": round(time.perf_counter() - started, 2)}


def _sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node follows its producers (ONNX requires it; ORT tolerates it)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an input no node produces")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


class _ArrayReader:
    """onnxruntime's one-method ``CalibrationDataReader`` protocol over a list of input arrays."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]) -> None:
        self._items = iter([{input_name: a} for a in arrays])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def int8_from_onnx(
    src: str | Path,
    dst: str | Path,
    calibration_batches: Callable[[], Iterator[np.ndarray]],
    config: Int8Config,
    available_images: int,
    input_name: str | None = None,
    ranges_cache: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Static Q/DQ quantization of ``src`` into ``dst``.

    ``calibration_batches()`` yields network inputs (1×3×H×W float32) one image at a time, at most
    ``config.calib_images`` of them; ``available_images`` is how many the calibration split holds.
    ``progress(n)`` is called after each chunk with the number of images done.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    config.validate()
    if available_images < config.calib_images:
        raise CalibrationError(
            f"calibration set has {available_images} images but {config.calib_images} were asked for; "
            f"lower --calib-images to at most {available_images}"
        )
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calib_method]
    symmetric = config.activation == "s8"
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="segedge-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        # shape inference + onnxruntime's graph fusions so Q/DQ land where kernels fuse (conv+relu, ...)
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        if input_name is None:  # the graph's own image input (a bring-your-own ONNX names it as it likes)
            graph = onnx.load(str(prepared), load_external_data=False).graph
            weights = {t.name for t in graph.initializer}
            input_name = next(i.name for i in graph.input if i.name not in weights)

        ranges_path = Path(ranges_cache) if ranges_cache else Path(work) / "ranges.json"
        if not ranges_path.is_file():
            calibrator = create_calibrator(
                prepared,
                augmented_model_path=str(Path(work) / "augmented.onnx"),
                calibrate_method=method,
                extra_options={"symmetric": symmetric},
            )
            seen = 0
            chunk: list[np.ndarray] = []
            for array in calibration_batches():
                chunk.append(array)
                seen += 1
                if len(chunk) == config.chunk:
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

        activation_type = QuantType.QUInt8 if config.activation == "u8" else QuantType.QInt8
        with atomic_path(dst) as tmp:
            quantize_static(
                str(prepared),
                str(tmp),
                calibration_data_reader=None,
                calibration_cache_path=str(ranges_path),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
            onnx.checker.check_model(str(tmp), full_check=True)
            counts = _qdq_counts(onnx.load(str(tmp)))
    return {"seconds": round(time.perf_counter() - started, 2), **counts}


def _qdq_counts(model) -> dict:
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
