"""Data-free cross-layer equalization (CLE) of an ONNX graph before INT8 calibration.

Why: segedge's INT8 graphs quantize each activation tensor with one range (per-tensor) while weights get one
range per output channel. Depthwise-heavy nets (MobileNetV2's 1x1 → ReLU → depthwise 3x3 → ReLU → 1x1 blocks)
come out of BatchNorm folding with channels whose weights, and so whose activations, differ by orders of
magnitude: a few wide channels set the per-tensor activation range and the narrow ones are left with a handful
of levels. CLE (Nagel et al. 2019, "Data-Free Quantization", section 4.1) moves that spread out of the graph:
for a producer conv A whose output channel i feeds input channel i of a consumer conv B through a positively
homogeneous op f (f(s·x) = s·f(x) for s > 0), it divides A's channel i (weights and bias) by s_i and multiplies
B's input channel i weights by s_i, with

    s_i = sqrt(r1_i · r2_i) / r2_i = sqrt(r1_i / r2_i)

(r1_i = max |W_A[i]|, r2_i = max |W_B[:, i]|), after which both ranges equal sqrt(r1_i · r2_i). The function
is unchanged up to float rounding. Chains (a conv that consumes one pair and produces the next) are swept
repeatedly until the scales stop moving, as the paper does.

Handled between A and B: nothing, Relu, LeakyRelu, PRelu (any slope shape: PRelu(s·x) = s·PRelu(x) for s > 0,
so the slope is untouched). A may have any group count (its output channel i is W_A[i]); B may be grouped or
depthwise: input channel i of B is column i % (C/group) of the rows of its group, and for a depthwise B that
is the whole filter i; scaling it by s_i exactly undoes the 1/s_i on its input, so B's output is unchanged.

Skipped, and counted in the report under these reasons:

* ``clip``: Clip / ReLU6 is not homogeneous (its bound 6 would have to move with s_i, per channel);
* ``activation <Op>``: any other op between the convs (Sigmoid, HardSwish, Add, ...) is not homogeneous or
  mixes channels;
* ``conv_transpose``: ConvTranspose keeps weights as (C, M/group, k...), out of this pass's scope;
* ``multiple consumers`` / ``graph output``: A's (or the activation's) output is read elsewhere, which would
  see the rescaled channels;
* ``shared weight``: A's or B's weight or bias initializer is used by another node too;
* ``non-constant weight``: a weight or bias that is not an initializer (or is overridable as a graph input);
* ``shape mismatch`` / ``non-float weight``: channel counts that do not line up, or integer weights.

A channel whose producer or consumer range is below ``min_range`` keeps s_i = 1: its scale would be
unbounded, and a dead producer channel that only carries its bias would have that bias blown up. CLE can still
grow the bias of a narrow-weight channel (1/s_i > 1); the paper's bias absorption (section 4.2) is not done here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

_CONVS = ("Conv", "ConvTranspose")
_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")
_TOLERANCE = 1e-4  # sweeps stop once every scale is within this of 1


def _uses(graph, counts: Counter) -> None:
    """Count every read of every tensor name, subgraphs (If/Loop/Scan bodies) included."""
    from onnx import AttributeProto

    for node in graph.node:
        counts.update(name for name in node.input if name)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _uses(attr.g, counts)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _uses(sub, counts)


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _in_channel_view(weight: np.ndarray, group: int) -> np.ndarray:
    """B's weights (M, C/group, k...) as (C, M/group · prod(k)): row i holds everything input channel i meets."""
    out_channels, per_group = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(group, out_channels // group, per_group, -1)
    return grouped.transpose(0, 2, 1, 3).reshape(group * per_group, -1)


def _scale_in_channels(weight: np.ndarray, group: int, scale: np.ndarray) -> np.ndarray:
    out_channels, per_group = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(group, out_channels // group, per_group, -1)
    return (grouped * scale.reshape(group, 1, per_group, 1)).reshape(weight.shape)


def _out_ranges(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)


def _range_ratio(weight: np.ndarray, min_range: float) -> float:
    """Widest over narrowest output-channel range, ignoring dead channels (below ``min_range``)."""
    ranges = _out_ranges(weight)
    live = ranges[ranges >= min_range]
    return float(live.max() / live.min()) if live.size else 1.0


class _Pair:
    __slots__ = ("a_weight", "a_bias", "b_weight", "b_group", "names")

    def __init__(self, a_weight: str, a_bias: str | None, b_weight: str, b_group: int, names: list[str]) -> None:
        self.a_weight, self.a_bias, self.b_weight, self.b_group, self.names = a_weight, a_bias, b_weight, b_group, names


def _node_label(node) -> str:
    return node.name or f"{node.op_type}:{node.output[0]}"


def _find_pairs(graph) -> tuple[list[_Pair], Counter]:
    """Every Conv → [Relu | LeakyRelu | PRelu] → Conv pair that CLE may rescale, and why the others were not."""
    from onnx import TensorProto

    uses: Counter = Counter()
    _uses(graph, uses)
    for output in graph.output:
        uses[output.name] += 1  # a graph output is a read from outside
    outputs = {o.name for o in graph.output}
    overridable = {i.name for i in graph.input}
    initializers = {t.name: t for t in graph.initializer if t.name not in overridable}
    readers: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))

    def conv_reader(tensor: str):
        return next((n for n, i in readers.get(tensor, ()) if n.op_type in _CONVS and i == 0), None)

    def is_float(name: str) -> bool:
        return initializers[name].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)

    pairs: list[_Pair] = []
    skipped: Counter = Counter()
    for a in graph.node:
        if a.op_type not in _CONVS:
            continue
        out = a.output[0]
        middle, b = None, conv_reader(out)
        if b is None:
            # A → one op → Conv: the op's first output must feed the consumer's data input
            for node, index in readers.get(out, ()):
                if node.output and conv_reader(node.output[0]) is not None:
                    middle, b = node, conv_reader(node.output[0])
                    break
        if b is None:
            continue
        reason = None
        if a.op_type == "ConvTranspose" or b.op_type == "ConvTranspose":
            reason = "conv_transpose"
        elif out in outputs or (middle is not None and middle.output[0] in outputs):
            reason = "graph output"
        elif uses[out] != 1 or (middle is not None and (uses[middle.output[0]] != 1 or len(middle.output) != 1)):
            reason = "multiple consumers"
        elif middle is not None and middle.op_type == "Clip":
            reason = "clip"
        elif middle is not None and (middle.op_type not in _HOMOGENEOUS or middle.domain not in ("", "ai.onnx")
                                     or middle.input[0] != out):
            reason = f"activation {middle.op_type}"
        if reason is None:
            a_weight = a.input[1] if len(a.input) > 1 else ""
            a_bias = a.input[2] if len(a.input) > 2 and a.input[2] else None
            b_weight = b.input[1] if len(b.input) > 1 else ""
            constants = [a_weight, b_weight] + ([a_bias] if a_bias else [])
            if any(name not in initializers for name in constants):
                reason = "non-constant weight"
            elif any(uses[name] != 1 for name in constants) or (len(b.input) > 2 and b.input[2]
                                                               and uses[b.input[2]] != 1):
                reason = "shared weight"
            elif not all(is_float(name) for name in constants):
                reason = "non-float weight"
            else:
                a_shape = list(initializers[a_weight].dims)
                b_shape = list(initializers[b_weight].dims)
                bias_dims = list(initializers[a_bias].dims) if a_bias else [a_shape[0] if a_shape else 0]
                b_group = _group(b)
                if (len(a_shape) < 3 or len(b_shape) < 3 or b_group < 1 or b_shape[0] % b_group
                        or a_shape[0] != b_shape[1] * b_group or bias_dims != [a_shape[0]]):
                    reason = "shape mismatch"
        if reason is not None:
            skipped[reason] += 1
            continue
        names = [_node_label(a)] + ([_node_label(middle)] if middle is not None else []) + [_node_label(b)]
        pairs.append(_Pair(a_weight, a_bias, b_weight, b_group, names))
    return pairs, skipped


def equalize(model: onnx.ModelProto, iterations: int = 20, min_range: float = 1e-8) -> tuple[onnx.ModelProto, dict]:
    """Cross-layer equalize every eligible Conv pair of ``model``; returns ``(new_model, report)``.

    ``model`` is left untouched. The report: ``pairs`` (how many were equalized) and ``equalized`` (their node
    names, producer first), ``skipped`` ({reason: count}), ``iterations`` (sweeps run), ``converged`` (every
    scale of the last sweep within 1e-4 of 1), and ``range_ratio_before`` / ``range_ratio_after``: the mean
    over the equalized producer convs of their widest / narrowest output-channel weight range (dead channels
    below ``min_range`` left out), 1.0 when nothing was equalized.
    """
    import onnx
    from onnx import numpy_helper

    if iterations < 1:
        raise ValueError(f"equalize needs at least 1 iteration, got {iterations}")
    if not min_range > 0:
        raise ValueError(f"min_range must be positive, got {min_range}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    pairs, skipped = _find_pairs(graph)

    tensors = {t.name: t for t in graph.initializer}
    names = {n for p in pairs for n in (p.a_weight, p.a_bias, p.b_weight) if n}
    arrays = {n: numpy_helper.to_array(tensors[n]).astype(np.float64) for n in names}
    dtypes = {n: numpy_helper.to_array(tensors[n]).dtype for n in names}
    ratio_before = [_range_ratio(arrays[p.a_weight], min_range) for p in pairs]

    sweeps, converged = 0, not pairs
    while pairs and sweeps < iterations:
        sweeps += 1
        change = 0.0
        for pair in pairs:
            w_a, w_b = arrays[pair.a_weight], arrays[pair.b_weight]
            r1 = _out_ranges(w_a)
            r2 = np.abs(_in_channel_view(w_b, pair.b_group)).max(axis=1)
            live = (r1 >= min_range) & (r2 >= min_range)
            scale = np.ones_like(r1)
            scale[live] = np.sqrt(r1[live] * r2[live]) / r2[live]
            change = max(change, float(np.abs(scale - 1.0).max()))
            arrays[pair.a_weight] = w_a / scale.reshape((-1,) + (1,) * (w_a.ndim - 1))
            if pair.a_bias:
                arrays[pair.a_bias] = arrays[pair.a_bias] / scale
            arrays[pair.b_weight] = _scale_in_channels(w_b, pair.b_group, scale)
        if change < _TOLERANCE:
            converged = True
            break

    for name, array in arrays.items():
        tensors[name].CopyFrom(numpy_helper.from_array(array.astype(dtypes[name]), name))
    ratio_after = [_range_ratio(arrays[p.a_weight], min_range) for p in pairs]
    report = {
        "pairs": len(pairs),
        "equalized": [p.names for p in pairs],
        "skipped": dict(sorted(skipped.items())),
        "iterations": sweeps,
        "converged": converged,
        "range_ratio_before": float(np.mean(ratio_before)) if pairs else 1.0,
        "range_ratio_after": float(np.mean(ratio_after)) if pairs else 1.0,
    }
    return result, report


def equalize_file(src: str | Path, dst: str | Path, iterations: int = 20, min_range: float = 1e-8) -> dict:
    """Load ``src``, equalize it, save it to ``dst`` (which may be ``src``), check it; returns the report."""
    import onnx

    model = onnx.load(str(src))
    equalized, report = equalize(model, iterations=iterations, min_range=min_range)
    large = sum(len(t.raw_data) for t in equalized.graph.initializer) > 1_800_000_000  # protobuf's 2 GB cap
    onnx.save(equalized, str(dst), save_as_external_data=large)
    onnx.checker.check_model(str(dst))
    return report
