"""``fp16_from_onnx``: an FP16 graph with FP32 inputs and outputs, so runners and users feed float32.

onnxruntime.transformers' converter: measured, unlike onnxconverter-common's, to handle dynamo exports.
"""

from __future__ import annotations

import time
from pathlib import Path

from segedge.core.artifacts import atomic_path


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
