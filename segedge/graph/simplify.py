"""``simplified_onnx``: constant folding and redundant-node removal with onnxsim.

onnxsim checks its own result on random inputs; segedge's parity gate then re-checks it on real images.
"""

from __future__ import annotations

import time
from pathlib import Path

from segedge.core.artifacts import atomic_path
from segedge.core.errors import ArtifactError


def simplifier() -> str:
    """``onnxsim``, or ``none`` on an install without it (the device's light install): then the graph is kept
    as exported, which onnxruntime and TensorRT optimise themselves; the stage config records which."""
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        return "none"
    return "onnxsim"


# onnxsim folds ConstantOfShape into the tensor it makes. SegNet's max-unpooling scatters into zeros the size of the
# unpooled map: folded at 512x1024 they were 235 MB of zeros in the graph (117 MB of weights), and its INT8 graph
# grew to 285 MB. A folded constant of one repeated value above this size goes back to a ConstantOfShape.
SPLAT_MIN_BYTES = 1 << 20
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
              "LayerNormalization", "PRelu"}


def restore_splats(model, min_bytes: int = SPLAT_MIN_BYTES) -> int:
    """Turn every constant (initializer or Constant node) of at least ``min_bytes`` holding one repeated value back
    into ``ConstantOfShape`` of that value, in place; returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    made, count = [], 0
    # a layer's weights stay initializers whatever their values: quantizers and TensorRT look for them there
    weights = {name for node in graph.node if node.op_type in WEIGHT_OPS for name in node.input[1:]}

    def splat(tensor, name: str):
        if tensor.ByteSize() < min_bytes or tensor.data_type == 0 or name in weights:
            return None
        array = numpy_helper.to_array(tensor)
        first = array.reshape(-1)[:1]
        return first if array.size and np.all(array == first[0]) else None

    def nodes_for(name: str, tensor, value) -> list:
        shape = numpy_helper.from_array(np.array(tensor.dims, dtype=np.int64), f"{name}__splat_shape")
        return [helper.make_node("Constant", [], [shape.name], value=shape),
                helper.make_node("ConstantOfShape", [shape.name], [name], name=f"{name}__splat",
                                 value=numpy_helper.from_array(value.reshape(1)))]

    kept = []
    for tensor in graph.initializer:
        value = splat(tensor, tensor.name)
        if value is None:
            kept.append(tensor)
            continue
        made += nodes_for(tensor.name, tensor, value)
        count += 1
    if count:
        del graph.initializer[:]
        graph.initializer.extend(kept)
    nodes = []
    for node in graph.node:
        value_attr = next((a for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        value = splat(value_attr.t, node.output[0]) if value_attr is not None else None
        if value is None:
            nodes.append(node)
            continue
        nodes += nodes_for(node.output[0], value_attr.t, value)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(made + nodes)  # initializers' replacements first: every consumer comes after them
    return count


def simplified_onnx(src: str | Path, dst: str | Path) -> dict:
    """Simplify ``src`` into ``dst``; returns node counts before and after and the time taken."""
    import onnx

    started = time.perf_counter()
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ArtifactError(f"cannot read ONNX file {src}: {exc}") from None
    nodes_before = len(model.graph.node)
    if simplifier() == "none":
        with atomic_path(dst) as tmp:
            onnx.save_model(model, str(tmp))
        return {"nodes_before": nodes_before, "nodes_after": nodes_before, "simplifier": "none (onnxsim not installed: "
                "pip install 'segedge[export]')", "seconds": round(time.perf_counter() - started, 2)}
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ArtifactError(f"onnxsim could not validate its simplification of {src}")
    splats = restore_splats(simplified)
    with atomic_path(dst) as tmp:
        onnx.save_model(simplified, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {
        "nodes_before": nodes_before,
        "nodes_after": len(simplified.graph.node),
        "simplifier": "onnxsim",
        "splats_restored": splats,
        "seconds": round(time.perf_counter() - started, 2),
    }
