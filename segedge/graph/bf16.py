"""``bf16_from_onnx``: a bfloat16 graph with FP32 inputs and outputs, for TensorRT's strongly typed builds.

Strongly typed TensorRT takes every layer's precision from the ONNX types, so bf16 there needs a bf16 graph;
OpenVINO and torch run bf16 from the FP32 graph and never read this file. No converter ships one that keeps
shapes safe (onnxconverter-common's and onnxruntime's do fp16 only), so segedge converts itself, the way
those do fp16 with a block list:

- inputs and outputs stay float32 (a Cast at each boundary), so runners and users feed float32;
- float initializers and Constant nodes are stored as BFLOAT16 where every consumer computes in bf16;
- an op whose schema does not admit bfloat16 at the graph's opset runs in float32, Casts around it;
- normalisation and reductions (LayerNormalization, Softmax, Reduce*, Pow/Sqrt of a variance) stay float32:
  bf16 keeps fp32's range but only 8 bits of mantissa, and a sum or a variance of many terms loses them;
- float arithmetic that computes a shape (what feeds Reshape's shape, Resize's scales/sizes, Slice's
  bounds...) stays float32: 8 bits round 513 to 512, and a wrong size is worse than a slow one.

Conv, ConvTranspose, the pools and HardSwish admit bfloat16 only from opset 22, so a graph below it is
raised to 22 (``onnx.version_converter``): without that every convolution of a CNN would stay float32.
TensorRT's parser reads ops by name, not by opset, and takes bf16 from TensorRT 9.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from segedge.core.artifacts import atomic_path, sha256_file
from segedge.core.errors import ArtifactError
from segedge.graph.fp16 import _sort_topologically

BF16_OPSET = 22  # the first opset whose Conv / ConvTranspose / *Pool / HardSwish schemas admit bfloat16
SOURCE_KEY = "segedge.bf16_source_sha256"  # metadata: the FP32 graph this copy was converted from

# float32 on purpose, though their schemas admit bfloat16: accumulations and normalisations
KEEP_FP32 = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization",
    "LpNormalization", "MeanVarianceNormalization", "LRN",
    "Softmax", "LogSoftmax", "Hardmax",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "CumSum", "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
    # output type set by an attribute, not by an input: left as written
    "ConstantOfShape", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli",
    # subgraphs: their bodies would need the same conversion
    "If", "Loop", "Scan", "SequenceMap",
})

# inputs that are shapes, sizes, scales, bounds or axes: whatever computes them keeps its precision
SHAPE_INPUTS = {
    "Reshape": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "TopK": (1,), "Pad": (1, 3), "Squeeze": (1,), "Unsqueeze": (1,),
    "Split": (1,), "OneHot": (1,), "CenterCropPad": (1, 2), "Col2Im": (1, 2), "GridSample": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
}
SHAPE_READERS = ("Shape", "Size")  # read only their input's shape: the climb stops there


def bf16_from_onnx(src: str | Path, dst: str | Path) -> dict:
    """Write a bf16 copy of the FP32 graph ``src`` to ``dst`` (checked, atomically); return what was done."""
    import onnx

    started = time.perf_counter()
    model = onnx.load(str(src))
    source_opset = _opset(model)
    if source_opset < BF16_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, BF16_OPSET)
        except Exception as exc:  # converting anyway would leave every Conv float32: a bf16 row in name only
            raise ArtifactError(f"onnx's version converter cannot raise {Path(src).name} from opset {source_opset} to "
                                f"{BF16_OPSET}, where Conv takes bfloat16 ({type(exc).__name__}: {exc}); "
                                f"export at opset {BF16_OPSET} for bf16 on TensorRT") from None
    opset = _opset(model)
    stats = _convert(model, opset)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != SOURCE_KEY]
    onnx.helper.set_model_props(model, {**dict(kept), SOURCE_KEY: source_digest(src)})
    with atomic_path(dst) as tmp:
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return {"seconds": round(time.perf_counter() - started, 2), "opset": opset, "source_opset": source_opset, **stats}


def cached_bf16(src: str | Path) -> Path:
    """``model.bf16.onnx`` beside ``src`` (``<stem>.bf16.onnx`` for other names), converted once per content
    of ``src``: the copy records its source's sha256, so an edited source is converted again, never served stale."""
    import onnx

    src = Path(src)
    stem = src.name.removesuffix(".onnx").removesuffix(".sim")
    dst = src.with_name(f"{stem}.bf16.onnx")
    if dst.is_file():
        props = {p.key: p.value for p in onnx.load(str(dst), load_external_data=False).metadata_props}
        if props.get(SOURCE_KEY) == source_digest(src):
            return dst
    bf16_from_onnx(src, dst)
    return dst


def source_digest(src: str | Path) -> str:
    """sha256 of ``src``, or, where its weights live in external data files (the dynamo exporter's
    ``.onnx.data``), of the file and those together: an edited weight file is an edited source."""
    import hashlib

    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    src = Path(src)
    model = onnx.load(str(src), load_external_data=False)
    files = sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})
    if not files:
        return sha256_file(src)
    digest = hashlib.sha256(sha256_file(src).encode())
    for name in files:
        digest.update(f"{name}:{sha256_file(src.parent / name)}".encode())
    return digest.hexdigest()


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _convert(model, opset: int) -> dict:
    """Rewrite ``model`` in place; the counts say how much of it runs bf16 and what stayed float32."""
    from onnx import TensorProto, helper

    FLOAT, BF16 = TensorProto.FLOAT, TensorProto.BFLOAT16
    graph = model.graph
    nodes = list(graph.node)
    types = _elem_types(model)
    is_float = lambda name: bool(name) and types.get(name) == FLOAT  # noqa: E731
    names = set(types) | {o for n in nodes for o in n.output} | {i for n in nodes for i in n.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        return name

    # values: initializers and Constant nodes take the type their consumers want
    initializers = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in nodes if n.op_type == "Constant" and n.domain in ("", "ai.onnx")}
    sources = {name for name in (*initializers, *constants) if is_float(name)}
    sources -= {i.name for i in graph.input}  # an initializer that is also an input is an input (IR < 4)

    shape_nodes = _shape_subgraph(nodes)
    outer = _names_used_in_subgraphs(graph)
    producer = {o: idx for idx, n in enumerate(nodes) for o in n.output}
    pinned = {producer[name] for name in outer if name in producer}  # read by a subgraph: stays float32
    bf16_nodes = {idx for idx, n in enumerate(nodes)
                  if idx not in shape_nodes and idx not in pinned and n.output and n.output[0] not in constants
                  and _runs_bf16(n, opset, is_float)}

    # what every node-made float tensor is, after conversion
    made = {}
    for idx, node in enumerate(nodes):
        if node.output and node.output[0] in constants:
            continue
        for out in node.output:
            if is_float(out):
                made[out] = BF16 if idx in bf16_nodes else FLOAT
        if idx in bf16_nodes and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = BF16

    # outputs stay float32: the node writes a renamed bf16 tensor and a Cast restores the name
    tail = []
    for out in graph.output:
        if made.get(out.name) == BF16:
            inner = fresh(f"{out.name}_bf16")
            for node in nodes:
                node.input[:] = [inner if i == out.name else i for i in node.input]
                node.output[:] = [inner if o == out.name else o for o in node.output]
            made[inner] = BF16
            del made[out.name]
            types[inner] = FLOAT  # float data (now bf16); is_float keeps finding it
            tail.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=fresh(f"{out.name}_to_fp32")))

    casts: dict[tuple[str, int], str] = {}
    cast_nodes = []

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            suffix = "bf16" if to == BF16 else "fp32"
            out = fresh(f"{name}_to_{suffix}")
            cast_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=fresh(f"{name}_cast_{suffix}")))
            casts[name, to] = out
            made[out] = to
        return casts[name, to]

    wants: dict[str, set] = defaultdict(set)
    bf16_slots: dict[str, list] = defaultdict(list)  # source -> [(node, slot)] that read it as bf16
    for idx, node in enumerate(nodes):
        schema = _schema(node, opset) if idx in bf16_nodes else None
        for slot, name in enumerate(node.input):
            if not is_float(name) or node.op_type in SHAPE_READERS:  # Shape/Size take any type as it is
                continue
            want = BF16 if schema is not None and _admits_bf16(schema, schema.inputs, slot) else FLOAT
            if name in sources:
                wants[name].add(want)
                if want == BF16:
                    bf16_slots[name].append((node, slot))
            elif made.get(name, FLOAT) != want:
                node.input[slot] = cast(name, want)
    for name in [o.name for o in graph.output] + sorted(outer):
        if name in sources:
            wants[name].add(FLOAT)

    stored = 0
    for name in sorted(wants):
        if BF16 not in wants[name]:
            continue
        target = name if wants[name] == {BF16} else fresh(f"{name}_bf16")
        if name in initializers:
            copy = _bf16_tensor(initializers[name], target)
            if target == name:
                initializers[name].CopyFrom(copy)
            else:
                graph.initializer.append(copy)
        else:
            constant = constants[name]
            value = _bf16_tensor(_constant_value(constant), target)
            if target == name:
                del constant.attribute[:]
                constant.attribute.append(helper.make_attribute("value", value))
            else:
                cast_nodes.append(helper.make_node("Constant", [], [target], value=value, name=fresh(f"{target}_const")))
        made[target] = BF16
        stored += 1
        for node, slot in bf16_slots[name]:
            node.input[slot] = target

    graph.node.extend(cast_nodes + tail)
    for info in graph.value_info:
        if info.type.tensor_type.elem_type == FLOAT and made.get(info.name) == BF16:
            info.type.tensor_type.elem_type = BF16
    _sort_topologically(graph)

    kept = Counter(nodes[idx].op_type for idx in range(len(nodes))
                   if idx not in bf16_nodes and nodes[idx].op_type not in ("Constant", *SHAPE_READERS)
                   and any(is_float(t) for t in (*nodes[idx].input, *nodes[idx].output)))
    return {"bf16_nodes": len(bf16_nodes), "fp32_nodes": dict(sorted(kept.items())),
            "bf16_values": stored, "casts": len(casts) + len(tail)}


def _elem_types(model) -> dict[str, int]:
    """Every tensor's element type, from shape inference (the exporters' value_info is not always complete)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for info in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def _shape_subgraph(nodes) -> set[int]:
    """Indices of the nodes that compute a shape, size, scale, bound or axis (climbing from the inputs named in
    :data:`SHAPE_INPUTS`, stopping at Shape/Size, which read no values)."""
    producer = {o: idx for idx, n in enumerate(nodes) for o in n.output}
    stack = [n.input[i] for n in nodes for i in SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input) and n.input[i]]
    marked: set[int] = set()
    while stack:
        idx = producer.get(stack.pop())
        if idx is None or idx in marked:
            continue
        marked.add(idx)
        if nodes[idx].op_type not in SHAPE_READERS:
            stack.extend(i for i in nodes[idx].input if i)
    return marked


def _names_used_in_subgraphs(graph) -> set[str]:
    """Outer tensors that If/Loop/Scan bodies read by name (they keep their type: the bodies are not converted)."""
    from onnx import AttributeProto

    used: set[str] = set()

    def visit(g) -> None:
        for node in g.node:
            for attr in node.attribute:
                bodies = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
                for body in bodies:
                    used.update(i for n in body.node for i in n.input if i)
                    visit(body)

    visit(graph)
    return used


def _schema(node, opset: int):
    import onnx

    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None


def _runs_bf16(node, opset: int, is_float) -> bool:
    """Whether ``node`` computes in bf16: an ONNX op not kept float32 on purpose, whose schema at ``opset``
    admits bfloat16 for every float output and for at least one float input or output."""
    if node.domain not in ("", "ai.onnx") or node.op_type in KEEP_FP32:
        return False
    schema = _schema(node, opset)
    if schema is None:
        return False
    outs = [_admits_bf16(schema, schema.outputs, i) for i, name in enumerate(node.output) if is_float(name)]
    ins = [_admits_bf16(schema, schema.inputs, i) for i, name in enumerate(node.input) if is_float(name)]
    return all(outs) and any(outs + ins)


def _admits_bf16(schema, formals, index: int) -> bool:
    """Whether the formal parameter at ``index`` (variadic ones repeat the last) admits tensor(bfloat16)."""
    from onnx.defs import OpSchema

    if not formals:
        return False
    if index >= len(formals):
        if formals[-1].option != OpSchema.FormalParameterOption.Variadic:
            return False
        index = len(formals) - 1
    type_str = formals[index].type_str
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}.get(type_str, [type_str])
    return "tensor(bfloat16)" in allowed


def _constant_value(node):
    """A float Constant node's value as a TensorProto (``value``, ``value_float`` or ``value_floats``)."""
    from onnx import helper

    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return helper.make_tensor("", 1, [], [attr.f])
        if attr.name == "value_floats":
            return helper.make_tensor("", 1, [len(attr.floats)], list(attr.floats))
    raise ValueError(f"Constant {node.name or node.output[0]} has no float value")


def _bf16_tensor(tensor, name: str):
    """``tensor`` (float32) as BFLOAT16, rounded to nearest even (ml_dtypes, which onnx itself uses)."""
    import ml_dtypes
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor).astype("float32").astype(ml_dtypes.bfloat16)
    return numpy_helper.from_array(array, name)
