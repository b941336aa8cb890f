"""``segedge check``: will a profile's TensorRT build this ONNX graph? A static answer, on any CPU.

TensorRT is never imported: the graph is read with ``onnx`` and compared with ``ops.toml``, the op
table of TensorRT's ONNX parser per version (each entry names the document it was read from). The lowest
TensorRT version a profile allows decides, since a profile of ``>=8.6,<11`` must build on a JetPack with 8.6.

What it finds, one code per kind (``CODES``):

- errors, the parser or builder refuses the graph: ops the parser lacks (``unsupported-op``, ``custom-op``),
  MaxPool's indices output, Resize settings it lacks, Q/DQ with non-zero or uint8 zero points, inputs that must
  be constants but are computed, an opset below the parser's range or LayerNormalization below opset 17;
- warnings, it builds but not as intended: DLA layers falling back to the GPU, sizes baked into a graph whose
  input has symbolic H/W, LayerNorm decomposed into FP16-overflowing ops, an opset above the documented range;
- infos: FP16 overflow candidates (Exp, Pow) worth a look.

Rules built on unverified table entries are reported as warnings, never as errors.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from segedge.core.errors import ArtifactError, ProfileError
from segedge.backends.profiles import Profile, load_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 6's Python 3.10
    import tomli as tomllib

Severity = Literal["error", "warning", "info"]
OPS_TABLE = Path(__file__).with_name("ops.toml")

CODES = {
    "unsupported-op": "an op the profile's TensorRT ONNX parser does not import",
    "custom-op": "an op outside the ONNX domain: needs a TensorRT plugin of that name",
    "maxpool-indices": "MaxPool with its second (indices) output used",
    "input-not-constant": "an input the parser needs as an initializer is computed at run time",
    "opset-below-supported": "the model's opset is below the parser's range",
    "opset-above-documented": "the model's opset is above what the parser's documentation covers",
    "layernorm-opset": "LayerNorm in a model below opset 17 (LayerNormalization is an opset-17 op)",
    "resize-unsupported": "a Resize mode, coordinate mode, nearest mode, antialias or aspect policy TensorRT lacks",
    "qdq-asymmetric": "a Q/DQ zero point that is not 0 (TensorRT quantization is symmetric)",
    "qdq-uint8": "a uint8 Q/DQ zero point (TensorRT quantizes to int8)",
    "qdq-per-channel-axis": "per-channel Q/DQ on an axis TensorRT does not take",
    "dla-unavailable": "DLA asked for on hardware without DLA cores",
    "dla-fallback": "a layer DLA cannot run: it falls back to the GPU",
    "dla-dynamic-shape": "DLA needs fixed input shapes",
    "baked-pool-kernel": "a pooling kernel computed from the export size in a graph with symbolic H/W",
    "baked-resize-sizes": "a Resize to constant sizes in a graph with symbolic H/W",
    "baked-reshape": "a Reshape to a constant shape of symbolic-size data",
    "unrolled-adaptive-pool": "adaptive pooling unrolled into Slice/Gather + reductions + Concat",
    "decomposed-layernorm": "LayerNorm decomposed into ReduceMean/Sub/Pow/...: FP16 overflow",
    "fp16-overflow-risk": "Exp or Pow on activations: may overflow FP16",
    "not-tensorrt": "the profile does not build with TensorRT",
}

_ONNX_DOMAINS = ("", "ai.onnx")
_INDEX_TYPES = (6, 7)  # TensorProto.INT32, INT64
_POOLS = ("AveragePool", "MaxPool", "LpPool")
_REDUCERS = ("ReduceMean", "ReduceMax", "ReduceSum", "AveragePool", "MaxPool")
_PASS_THROUGH = ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity")
_FIXES = {
    "MaxUnpool": "unpool without indices (segedge/models/unpooling.py's index_free mode, e.g. segnet-trt)",
    "LayerNormalization": "TensorRT 8.6 is the first to import it: use JetPack 6 (TensorRT 8.6+) for this model",
}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    node: str | None
    message: str

    def __str__(self) -> str:
        where = f" [{self.node}]" if self.node else ""
        return f"{self.severity:<7} {self.code}{where}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    source: str
    profile: str
    tensorrt: str | None  # the table entry used ("8.6"), None when the profile does not use TensorRT
    dla: bool
    opset: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when nothing stops the profile's TensorRT from building the graph (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def codes(self, severity: Severity | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}


def format_report(report: CheckReport) -> str:
    """A header, then one line per finding (errors first), node names in brackets."""
    target = f"TensorRT {report.tensorrt}" if report.tensorrt else "no TensorRT"
    if report.dla:
        target += " + DLA"
    verdict = "OK" if report.ok else "FAIL"
    counts = ", ".join(
        f"{n} {word}{'s' if n != 1 else ''}"
        for word, n in (("error", len(report.errors)), ("warning", len(report.warnings)))
    )
    lines = [f"{verdict}: {report.source} (opset {report.opset}) on profile {report.profile} ({target}): {counts}"]
    order = {"error": 0, "warning": 1, "info": 2}
    lines += ["  " + str(f) for f in sorted(report.findings, key=lambda f: order[f.severity])]
    return "\n".join(lines)


# the op table --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParserTable:
    version: str
    source: str
    supported: frozenset[str]
    unsupported: frozenset[str]
    opset_min: int
    opset_max: int
    constant_inputs: dict[str, tuple[int, ...]]


@lru_cache(maxsize=None)
def _raw_table() -> dict:
    return tomllib.loads(OPS_TABLE.read_text())


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@lru_cache(maxsize=None)
def parser_table(version: str) -> ParserTable:
    """The table entry for ``version``: the highest entry not above it (8.6.1 → 8.6, 10.3 → 10.0)."""
    entries = _raw_table()["parser"]
    keys = sorted(entries, key=_version_key)
    fitting = [k for k in keys if _version_key(k) <= _version_key(version)[:2]]
    if not fitting:
        raise ProfileError(
            f"TensorRT {version} is older than segedge's op table, which starts at {keys[0]} ({OPS_TABLE.name}); "
            f"raise the profile's tensorrt.versions lower bound to >={keys[0]}"
        )
    key = fitting[-1]
    entry = dict(entries[key])
    supported = set(entry.get("supported", ()))
    unsupported = set(entry.get("unsupported", ()))
    constant_inputs = dict(entry.get("constant_inputs", {}))
    base = entry.get("based_on")
    if base:
        parent = parser_table(base)
        supported |= parent.supported
        unsupported |= parent.unsupported
        constant_inputs = {**parent.constant_inputs, **constant_inputs}
    added = set(entry.get("added", ()))
    supported |= added
    unsupported -= added
    return ParserTable(
        version=key,
        source=entry["source"],
        supported=frozenset(supported),
        unsupported=frozenset(unsupported),
        opset_min=int(entry.get("opset_min", 1)),
        opset_max=int(entry["opset_max"]),
        constant_inputs={op: tuple(v) for op, v in constant_inputs.items()},
    )


def lowest_tensorrt_version(spec: str) -> str | None:
    """The lowest version a range like '>=8.6,<11' allows ('8.6'); None when it has no lower bound."""
    lows = []
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        match = re.match(r"(>=|==|>|~=)?\s*(\d+(?:\.\d+)*)", clause)
        if match and match.group(1) in (">=", "==", ">", "~=", None) and not clause.startswith(("<", "!")):
            lows.append(match.group(2))
    return max(lows, key=_version_key) if lows else None




# the graph -----------------------------------------------------------------------------------------

class _Graph:
    """The model's nodes (subgraphs included), its constants, producers, consumers and inferred shapes."""

    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper

        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a graph shape inference cannot follow is still worth checking op by op
            inferred = model
        self.model = inferred
        self.nodes = list(_walk(inferred.graph))
        self.constants: dict[str, np.ndarray] = {}
        for init in _all_initializers(inferred.graph):
            self.constants[init.name] = numpy_helper.to_array(init)
        self.producer = {}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
            if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS:
                value = _constant_node_value(node)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.shapes: dict[str, tuple] = {}
        self.elem_types: dict[str, int] = {}
        g = inferred.graph
        for value in list(g.input) + list(g.value_info) + list(g.output):
            if value.type.HasField("tensor_type"):
                self.elem_types[value.name] = value.type.tensor_type.elem_type
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in value.type.tensor_type.shape.dim
                )
        initializer_names = {i.name for i in g.initializer}
        self.inputs = [v for v in g.input if v.name not in initializer_names]
        self.opset = next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), 0)

    def is_constant(self, name: str) -> bool:
        seen = 0
        while name not in self.constants and seen < 4:  # Identity/Cast of a constant is folded by the parser
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Cast"):
                return False
            name, seen = node.input[0], seen + 1
        return name in self.constants

    def is_shape_tensor(self, name: str) -> bool:
        """An int32/int64 tensor: shape arithmetic, not image data."""
        return self.elem_types.get(name) in _INDEX_TYPES

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    @property
    def dynamic_hw(self) -> bool:
        """True when an image-like graph input (rank 4) has a symbolic H or W."""
        for value in self.inputs:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and any(not d.HasField("dim_value") for d in dims[2:]):
                return True
        return False


def _walk(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == attr.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub)


def _all_initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _all_initializers(attr.g)


def _constant_node_value(node) -> np.ndarray | None:
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_float"):
            return np.array(attr.i if attr.name == "value_int" else attr.f)
        if attr.name in ("value_ints", "value_floats"):
            return np.array(list(attr.ints) if attr.name == "value_ints" else list(attr.floats))
    return None


def _attr(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _label(node) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


# the checks ----------------------------------------------------------------------------------------

def check_onnx(path_or_model, profile: Profile | str, dla: bool | None = None) -> CheckReport:
    """Check an ONNX file (or ``onnx.ModelProto``) against what ``profile``'s TensorRT accepts.

    ``dla=None`` follows the profile (``tensorrt.dla_core >= 0``); ``True`` checks DLA placement as if the
    engine were built for a DLA core with GPU fallback, so DLA findings are warnings.
    """
    import onnx

    if isinstance(profile, str):
        profile = load_profile(profile)
    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.is_file():
            raise ArtifactError(f"no ONNX file at {path}; pass a .onnx path or a model name (segedge models)")
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise ArtifactError(f"{path} is not a readable ONNX model: {exc}") from None
        source = str(path)
    else:
        model, source = path_or_model, (path_or_model.graph.name or "<model>")

    graph = _Graph(model)
    if not profile.uses_backend("tensorrt"):
        note = Finding(
            "info", "not-tensorrt", None,
            f"profile {profile.name} runs {profile.backend}, not TensorRT: nothing for TensorRT to refuse",
        )
        return CheckReport(source, profile.name, None, False, graph.opset, (note,))

    lowest = lowest_tensorrt_version(profile.tensorrt.versions)
    findings: list[Finding] = []
    if lowest is None:
        lowest = min(_raw_table()["parser"], key=_version_key)
        findings.append(Finding(
            "warning", "opset-above-documented", None,
            f"profile {profile.name}'s tensorrt.versions {profile.tensorrt.versions!r} has no lower bound; "
            f"checked against the oldest table entry, TensorRT {lowest}",
        ))
    table = parser_table(lowest)
    use_dla = profile.tensorrt.dla_core >= 0 if dla is None else dla

    findings += _check_opset(graph, table)
    findings += _check_ops(graph, table)
    findings += _check_resize(graph, table)
    findings += _check_qdq(graph, profile)
    findings += _check_dynamic_traps(graph)
    findings += _check_fp16(graph, profile)
    if use_dla:
        findings += _check_dla(graph, profile)
    return CheckReport(source, profile.name, table.version, use_dla, graph.opset, tuple(findings))


def _check_opset(graph: _Graph, table: ParserTable) -> list[Finding]:
    v, opset = table.version, graph.opset
    if opset < table.opset_min:
        return [Finding(
            "error", "opset-below-supported", None,
            f"opset {opset} is below TensorRT {v}'s range ({table.opset_min}-{table.opset_max}); re-export at opset "
            f"{max(17, table.opset_min)} or later",
        )]
    if opset > table.opset_max:
        return [Finding(
            "warning", "opset-above-documented", None,
            f"opset {opset} is above the {table.opset_max} that TensorRT {v}'s parser documents; ops whose form changed "
            f"after opset {table.opset_max} (Reduce* axes as input, Resize/Pad/Split-18) may be refused: build once "
            f"on the device, or export at opset {table.opset_max}",
        )]
    return []


def _check_ops(graph: _Graph, table: ParserTable) -> list[Finding]:
    findings = []
    v = table.version
    for node in graph.nodes:
        op, label = node.op_type, _label(node)
        if node.domain not in _ONNX_DOMAINS:
            findings.append(Finding(
                "error", "custom-op", label,
                f"{op} from domain {node.domain!r} is not an ONNX op: TensorRT needs a plugin registered as {op}",
            ))
            continue
        if op not in table.supported:
            how = "marked unsupported" if op in table.unsupported else "not listed"
            fix = f"; {_FIXES[op]}" if op in _FIXES else ""
            findings.append(Finding(
                "error", "unsupported-op", label, f"{op} is {how} in TensorRT {v}'s ONNX parser{fix}",
            ))
            continue
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            findings.append(Finding(
                "error", "maxpool-indices", label,
                f"MaxPool's indices output is unsupported by TensorRT's parser (max_pool2d(return_indices=True)); "
                f"{_FIXES['MaxUnpool']}",
            ))
        for index in table.constant_inputs.get(op, ()):
            if index < len(node.input) and node.input[index] and not graph.is_constant(node.input[index]):
                findings.append(Finding(
                    "error", "input-not-constant", label,
                    f"{op} input {index} ({node.input[index]}) must be an initializer for TensorRT {v}'s parser, "
                    "but is computed at run time; fold it (segedge's simplify stage, onnxsim) or export with static shapes",
                ))
    return findings


def _check_resize(graph: _Graph, table: ParserTable) -> list[Finding]:
    rules = _raw_table()["resize"]
    findings = []
    for node in graph.nodes:
        if node.op_type != "Resize":
            continue
        problems = []
        mode = _attr(node, "mode", "nearest")
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if mode not in rules["modes"]:
            problems.append(f"mode {mode!r} (TensorRT: {', '.join(rules['modes'])}; use bilinear)")
        if coord not in rules["coordinate_transformation_modes"]:
            problems.append(f"coordinate_transformation_mode {coord!r}")
        if mode == "nearest" and nearest not in rules["nearest_modes"]:
            problems.append(f"nearest_mode {nearest!r}")
        if _attr(node, "antialias", 0):
            problems.append("antialias=1 (interpolate(antialias=True))")
        policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy not in rules["keep_aspect_ratio_policies"]:
            problems.append(f"keep_aspect_ratio_policy {policy!r}")
        for problem in problems:
            findings.append(Finding(
                "error", "resize-unsupported", _label(node), f"Resize with {problem} is unsupported by TensorRT's parser",
            ))
    return findings


def _check_qdq(graph: _Graph, profile: Profile) -> list[Finding]:
    rules = _raw_table()["qdq"]
    findings = []
    for node in graph.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = _label(node)
        zero = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None:
            if zero.dtype == np.uint8:
                findings.append(Finding(
                    "error", "qdq-uint8", label,
                    f"{node.op_type} has a uint8 zero point; TensorRT quantizes to int8 only: quantize with signed "
                    f"symmetric activations (profile {profile.name}: int8_scheme = \"tensorrt\")",
                ))
            elif np.any(zero != 0):
                findings.append(Finding(
                    "error", "qdq-asymmetric", label,
                    f"{node.op_type} has a non-zero zero point ({_brief(zero)}); TensorRT takes symmetric "
                    "quantization only (zero point 0): re-quantize with symmetric activations and weights",
                ))
        scale = graph.constant(node.input[1]) if len(node.input) > 1 else None
        if scale is None or scale.size <= 1:
            continue
        axis = int(_attr(node, "axis", 1))
        weight = graph.is_constant(node.input[0])
        if not weight:
            findings.append(Finding(
                "warning", "qdq-per-channel-axis", label,
                f"per-channel {node.op_type} (axis {axis}) on an activation; TensorRT takes per-channel scales on "
                "weights only (unverified in segedge's table)",
            ))
            continue
        for consumer in graph.consumers.get(node.output[0], ()):
            want = rules["per_channel_weight_axis"].get(consumer.op_type)
            rank = len(graph.constant(node.input[0]).shape) if graph.constant(node.input[0]) is not None else 0
            if want is not None and axis % max(rank, 1) != want:
                findings.append(Finding(
                    "warning", "qdq-per-channel-axis", label,
                    f"per-channel weight scales on axis {axis} feed {consumer.op_type}, which TensorRT quantizes "
                    f"along axis {want} (output channels; unverified in segedge's table)",
                ))
    return findings


def _brief(values: np.ndarray) -> str:
    flat = values.reshape(-1)
    text = ", ".join(str(v) for v in flat[:4])
    return text + (", ..." if flat.size > 4 else "")


def _check_dynamic_traps(graph: _Graph) -> list[Finding]:
    dynamic = graph.dynamic_hw
    findings = []
    if dynamic:
        for node in graph.nodes:
            label = _label(node)
            if node.op_type in _POOLS:
                kernel = list(_attr(node, "kernel_shape", []))
                strides = list(_attr(node, "strides", [1] * len(kernel)))
                if kernel and max(kernel) > 3 and kernel == strides:
                    findings.append(Finding(
                        "warning", "baked-pool-kernel", label,
                        f"{node.op_type} kernel {'x'.join(map(str, kernel))} = stride on a graph with symbolic H/W: "
                        "a kernel computed from the export size (adaptive pooling); at other sizes the pooled grid "
                        "changes. Use GlobalAveragePool/ReduceMean, or export with static H/W",
                    ))
            elif node.op_type == "Resize" and len(node.input) > 3 and node.input[3] and graph.is_constant(node.input[3]):
                sizes = graph.constant(node.input[3])
                findings.append(Finding(
                    "warning", "baked-resize-sizes", label,
                    f"Resize to constant sizes {_brief(sizes)} on a graph with symbolic H/W: the output keeps the "
                    "export size. Resize with scales, or to a size taken from a tensor's shape",
                ))
            elif node.op_type == "Reshape" and len(node.input) > 1 and graph.is_constant(node.input[1]):
                shape = graph.constant(node.input[1]).reshape(-1)
                data = graph.shapes.get(node.input[0], ())
                symbolic = any(isinstance(d, str) for d in data[2:])
                if symbolic and not np.any(shape == -1) and not np.any(shape == 0):
                    findings.append(Finding(
                        "warning", "baked-reshape", label,
                        f"Reshape of data shaped {_dims(data)} to the constant {_brief(shape)}: the spatial size is "
                        "baked in; at another input size this Reshape fails. Reshape with -1 or a shape from Shape",
                    ))
    findings += _check_unrolled_pooling(graph, dynamic)
    return findings


def _dims(shape: tuple) -> str:
    return "x".join(str(d) for d in shape) or "?"


def _check_unrolled_pooling(graph: _Graph, dynamic: bool) -> list[Finding]:
    """Adaptive pooling whose bins do not divide the input: the exporter slices every bin and concatenates."""
    findings = []
    for node in graph.nodes:
        if node.op_type != "Concat":
            continue
        bins = 0
        for name in node.input:
            producer = graph.producer.get(name)
            hops = 0
            while producer is not None and producer.op_type in _PASS_THROUGH and hops < 3:
                producer, hops = graph.producer.get(producer.input[0]), hops + 1
            if producer is None or producer.op_type not in _REDUCERS:
                continue
            source = graph.producer.get(producer.input[0])
            if source is not None and source.op_type in ("Slice", "Gather"):
                bins += 1
        if bins >= 4:
            findings.append(Finding(
                "warning" if dynamic else "info", "unrolled-adaptive-pool", _label(node),
                f"{bins} sliced bins pooled and concatenated: adaptive pooling unrolled at the export size"
                + (" while H/W are symbolic: the bins stay those of the export size" if dynamic else " (slow in TensorRT)")
                + "; choose an input size the bins divide, or pool with fixed kernels",
            ))
    return findings


def _check_fp16(graph: _Graph, profile: Profile) -> list[Finding]:
    findings = []
    in_layernorm: set[str] = set()
    layernorm_ops = [n for n in graph.nodes if n.op_type == "LayerNormalization"]
    for sub in graph.nodes:
        pattern = _decomposed_layernorm(graph, sub)
        if pattern:
            in_layernorm.update(pattern)
            if "fp16" in profile.precisions:
                findings.append(Finding(
                    "warning", "decomposed-layernorm", _label(sub),
                    "LayerNorm decomposed into ReduceMean→Sub→Pow→ReduceMean→Add→Sqrt→Div: in FP16 the squared "
                    "deviations overflow (65504) once activations pass ~256. Export at opset ≥ 17 with nn.LayerNorm "
                    "/ F.layer_norm so it stays one LayerNormalization op, or keep these nodes in FP32",
                ))
    if graph.opset < 17 and (layernorm_ops or in_layernorm):
        first = _label(layernorm_ops[0]) if layernorm_ops else None
        findings.append(Finding(
            "error", "layernorm-opset", first,
            f"a model with LayerNorm at opset {graph.opset}: LayerNormalization exists from opset 17; below it LayerNorm "
            "is decomposed and overflows in FP16. Re-export at opset ≥ 17",
        ))
    if "fp16" in profile.precisions:
        risky: dict[str, list[str]] = defaultdict(list)
        for node in graph.nodes:
            if node.op_type in ("Exp", "Pow") and _label(node) not in in_layernorm:
                risky[node.op_type].append(_label(node))
        for op, labels in risky.items():
            others = f" (and {len(labels) - 1} more: {_names(labels[1:])})" if len(labels) > 1 else ""
            findings.append(Finding(
                "info", "fp16-overflow-risk", labels[0],
                f"{op}{others} on activations overflows FP16 for large inputs (exp(x) past x≈11, x² past 256): "
                "check the range, or keep it in FP32",
            ))
    return findings


def _decomposed_layernorm(graph: _Graph, sub) -> set[str] | None:
    """Sub(x, ReduceMean(x)) → Pow(·, 2) or Mul(·, ·) → ReduceMean: the labels of the matched nodes."""
    if sub.op_type != "Sub" or len(sub.input) != 2:
        return None
    mean = graph.producer.get(sub.input[1])
    if mean is None or mean.op_type != "ReduceMean" or mean.input[0] != sub.input[0]:
        return None
    for square in graph.consumers.get(sub.output[0], ()):
        squares = (square.op_type == "Pow") or (square.op_type == "Mul" and square.input[0] == square.input[1])
        if not squares:
            continue
        if any(c.op_type == "ReduceMean" for c in graph.consumers.get(square.output[0], ())):
            return {_label(mean), _label(sub), _label(square), square.output[0]}
    return None


def _check_dla(graph: _Graph, profile: Profile) -> list[Finding]:
    rules = _raw_table()["dla"]
    findings = []
    module = profile.requires.jetson_module
    if module is None:
        return [Finding(
            "error", "dla-unavailable", None,
            f"profile {profile.name} targets {profile.description!r}: DLA cores exist only on Jetson/DRIVE modules; "
            "drop --dla or pick a Jetson profile with DLA (AGX Orin, Xavier NX)",
        )]
    if any(name.lower() in module.lower() for name in rules.get("modules_without_dla", ())):
        findings.append(Finding(
            "warning", "dla-unavailable", None, f"the Jetson {module} has no DLA core: everything runs on the GPU",
        ))
    if graph.dynamic_hw and not rules["dynamic_shapes"]:
        findings.append(Finding(
            "warning", "dla-dynamic-shape", None,
            "the graph's input has symbolic H/W and DLA takes fixed shapes only (min = opt = max): export with "
            "static H/W for DLA",
        ))
    native = set(rules["native"]) | set(rules["build_time"])
    offenders: dict[str, list[str]] = defaultdict(list)  # reason -> node labels, one finding per reason
    for node in graph.nodes:
        op = node.op_type
        if node.output and (graph.is_constant(node.output[0]) or graph.is_shape_tensor(node.output[0])):
            continue  # folded at build time, or shape arithmetic: not a DLA layer
        reason = None
        if op not in native:
            reason = f"{op} has no native DLA implementation"
            if op in ("QuantizeLinear", "DequantizeLinear"):
                reason = f"{op}: DLA takes INT8 as calibrated scales, not explicit Q/DQ"
        elif op == "Resize":
            reason = _dla_resize_problem(graph, node, rules)
        elif op == "Concat" and int(_attr(node, "axis", 0)) % 4 != rules["concat_axis"]:
            reason = f"Concat on axis {_attr(node, 'axis', 0)}: DLA concatenates along channels only"
        if reason:
            offenders[reason].append(_label(node))
    for reason, labels in offenders.items():
        others = f" (and {len(labels) - 1} more: {_names(labels[1:])})" if len(labels) > 1 else ""
        findings.append(Finding("warning", "dla-fallback", labels[0], f"{reason}{others}: runs on the GPU (GPU fallback)"))
    return findings


def _names(labels: list[str], limit: int = 5) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f", +{len(labels) - limit}" if len(labels) > limit else "")


def _dla_resize_problem(graph: _Graph, node, rules: dict) -> str | None:
    mode = _attr(node, "mode", "nearest")
    coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode not in rules["resize_modes"]:
        return f"Resize mode {mode!r} on DLA"
    if mode == "linear" and coord not in rules["resize_linear_coordinate_modes"]:
        return f"bilinear Resize with {coord!r}: DLA takes half_pixel only"
    scales = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is not None and scales.size == 4:
        spatial = scales.reshape(-1)[2:]
        if mode == "nearest" and (np.any(spatial != np.round(spatial)) or np.any(spatial > rules["resize_max_integer_scale"])):
            return f"nearest Resize by {_brief(spatial)}: DLA takes integer scales 1-{rules['resize_max_integer_scale']}"
    return None


# a zoo model ---------------------------------------------------------------------------------------

def check_model(
    name: str,
    profile: Profile | str,
    input_size: tuple[int, int] | None = None,
    width: float = 0.25,
    dla: bool | None = None,
    dynamic: bool = False,
) -> CheckReport:
    """Export zoo model ``name`` (untrained: the check is structural) and check it.

    ``input_size`` defaults to the profile's, rounded up to the model's size multiple, since the baked shapes
    worth finding are those of the size the profile builds.
    """
    from segedge.graph.export import onnx_from_torch
    from segedge.models.registry import get_spec

    if isinstance(profile, str):
        profile = load_profile(profile)
    spec = get_spec(name)
    if input_size is None:
        s = spec.size_multiple
        input_size = tuple(-(-max(v, m) // s) * s for v, m in zip(profile.input_size, spec.min_input_size))
    with tempfile.TemporaryDirectory(prefix="segedge-check-") as tmp:
        path = Path(tmp) / f"{spec.name}.onnx"
        onnx_from_torch(spec.build(width=width), spec, path, tuple(input_size), dynamic=dynamic)
        report = check_onnx(path, profile, dla=dla)
    h, w = input_size
    source = f"{spec.name} (exported at {h}x{w}{', dynamic H/W' if dynamic else ''}, width {width})"
    return CheckReport(source, report.profile, report.tensorrt, report.dla, report.opset, report.findings)
