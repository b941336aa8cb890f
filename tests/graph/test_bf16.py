"""``bf16_from_onnx``: the bf16 graph TensorRT builds strongly typed, checked on the CPU.

Numerics: onnxruntime's CPU provider has no bf16 Conv (it refuses the graph), so the graph is run with
``onnx.reference.ReferenceEvaluator``, which executes the bf16 ops on ml_dtypes bfloat16 arrays: every
intermediate is rounded to bf16, as on the GPU, and it even accumulates in bf16, which TensorRT does not (it
accumulates in FP32), so the tolerance here bounds the GPU's error from above.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from segedge.core.artifacts import sha256_file
from segedge.graph.bf16 import SOURCE_KEY, bf16_from_onnx, cached_bf16, source_digest

FLOAT, BF16 = TensorProto.FLOAT, TensorProto.BFLOAT16


def _tiny_module():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Tiny(nn.Module):
        """Conv+BN+ReLU, a transformer block (LayerNorm, attention Softmax), a Reshape whose shape is computed
        from the input's Shape (dynamic H/W), and a Resize back to the input size."""

        def __init__(self, c: int = 8, classes: int = 3) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU())
            self.norm = nn.LayerNorm(c)
            self.qkv = nn.Linear(c, 3 * c)
            self.proj = nn.Linear(c, c)
            self.head = nn.Conv2d(c, classes, 1)

        def forward(self, x):
            y = self.stem(x)
            n, c, h, w = y.shape
            t = y.flatten(2).transpose(1, 2)
            q, k, v = self.qkv(self.norm(t)).chunk(3, dim=-1)
            a = torch.softmax(q @ k.transpose(1, 2) / c**0.5, dim=-1)
            t = t + self.proj(a @ v)
            y = self.head(t.transpose(1, 2).reshape(n, c, h, w))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    torch.manual_seed(0)
    module = Tiny().eval()
    with torch.no_grad():  # a BN that is not the identity, so folding it matters
        module.stem[1].running_mean.uniform_(-0.5, 0.5)
        module.stem[1].running_var.uniform_(0.5, 2.0)
    return module


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("bf16")
    fp32 = root / "model.sim.onnx"
    h = torch.export.Dim("h2", min=4, max=64)
    w = torch.export.Dim("w2", min=4, max=64)
    torch.onnx.export(_tiny_module(), (torch.randn(1, 3, 32, 32),), str(fp32), input_names=["input"],
                      output_names=["logits"], dynamo=True, opset_version=18, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", max=8), 2: 2 * h, 3: 2 * w},))
    bf16 = root / "model.bf16.onnx"
    info = bf16_from_onnx(fp32, bf16)
    return fp32, bf16, info


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_the_bf16_graph_passes_the_full_check_with_float32_io(graphs):
    fp32, bf16, info = graphs
    onnx.checker.check_model(str(bf16), full_check=True)
    model = onnx.load(str(bf16))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT]
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert info["source_opset"] == 18 and info["opset"] == 22  # Conv admits bfloat16 from opset 22
    assert info["bf16_nodes"] > 10
    assert {p.key: p.value for p in model.metadata_props}[SOURCE_KEY] == source_digest(fp32)


def test_conv_and_matmul_weights_are_stored_as_bfloat16(graphs):
    _, bf16, _ = graphs
    model = onnx.load(str(bf16))
    initializers = {t.name: t for t in model.graph.initializer}
    weights = [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[1] in initializers]
    assert len(weights) >= 4  # two Conv, two Linear
    assert {initializers[w].data_type for w in weights} == {BF16}
    assert {i.data_type for i in initializers.values() if i.data_type in (FLOAT, BF16)} >= {BF16}


def test_normalisation_stays_float32_and_shapes_are_untouched(graphs):
    fp32, bf16, info = graphs
    model = onnx.load(str(bf16))
    initializers = {t.name: t for t in model.graph.initializer}
    producers = _producers(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.output[0]] == FLOAT, node.op_type
            assert all(initializers[i].data_type == FLOAT for i in node.input[1:] if i in initializers)
    assert info["fp32_nodes"] == {"LayerNormalization": 1, "Softmax": 1}
    # every shape input is int64 and computed by the same nodes as in the FP32 graph
    source = onnx.load(str(fp32))
    source_ops = sorted(n.op_type for n in source.graph.node if n.op_type in ("Shape", "Concat", "Gather", "Slice"))
    assert sorted(n.op_type for n in model.graph.node if n.op_type in ("Shape", "Concat", "Gather", "Slice")) == source_ops
    for node in model.graph.node:
        if node.op_type in ("Reshape", "Resize"):
            shape = node.input[1] if node.op_type == "Reshape" else node.input[3]
            assert (initializers[shape].data_type if shape in initializers else types[shape]) == TensorProto.INT64
            if shape in producers:  # computed from Shape, not from values
                assert producers[shape].op_type in ("Concat", "Shape", "Gather", "Slice")


def test_float_shape_arithmetic_and_resize_scales_stay_float32(tmp_path):
    """A legacy-exporter pattern: the output size computed in float (Shape → Cast → Mul → Cast → Resize
    sizes). In bf16, 8 bits of mantissa would round 513 to 512: that subgraph must stay float32."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=FLOAT),
        helper.make_node("Constant", [], ["k"], value_floats=[1.0, 1.0, 2.0, 2.0]),
        helper.make_node("Mul", ["sf", "k"], ["sizes_f"]),
        helper.make_node("Cast", ["sizes_f"], ["sizes"], to=TensorProto.INT64),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["r"], mode="linear"),
        helper.make_node("Constant", [], ["scales"], value_floats=[1.0, 1.0, 0.5, 0.5]),
        helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest"),
    ]
    w = helper.make_tensor("w", FLOAT, [4, 3, 3, 3], np.random.default_rng(0).standard_normal(108).tolist())
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8, 8])], [w])
    src, dst = tmp_path / "shape.onnx", tmp_path / "shape.bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    bf16_from_onnx(src, dst)
    model = onnx.load(str(dst))
    producers = _producers(model)
    assert producers["sizes_f"].op_type == "Mul" and producers["sf"].op_type == "Cast"
    assert [a.i for a in producers["sf"].attribute if a.name == "to"] == [FLOAT]  # the shape Cast stays float
    for name in ("k", "scales"):  # still float32 (value_floats, or a float32 value)
        values = [a for a in producers[name].attribute if a.name in ("value", "value_floats")]
        assert values and all(a.name == "value_floats" or a.t.data_type == FLOAT for a in values), name
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert types["c"] == types["r"] == BF16 and types["sizes_f"] == FLOAT  # data in bf16, the size in float32
    assert {t.name: t.data_type for t in model.graph.initializer}["w"] == BF16
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8), dtype=np.float32)
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(str(src)).run(None, {"x": x})[0]
    got = ReferenceEvaluator(str(dst)).run(None, {"x": x})[0]
    assert got.shape == want.shape == (1, 4, 8, 8)
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()


def test_bf16_numerics_match_fp32_within_bf16_rounding(graphs):
    """Argmax and values against the FP32 graph (onnxruntime), at a size other than the export's (the shape
    subgraph really computes it). bf16 keeps 8 significant bits: ~0.4% per rounding, ~1e-2 relative at the end."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    fp32, bf16, _ = graphs
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|Could not find an implementation"):
        ort.InferenceSession(str(bf16), providers=["CPUExecutionProvider"])  # why the reference evaluator
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 40), dtype=np.float32)
    want = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ReferenceEvaluator(str(bf16)).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and got.shape == want.shape == (2, 3, 24, 40)
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
    assert np.abs(got - want).mean() <= 1e-2 * np.abs(want).mean()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.98


def test_the_bf16_weights_are_the_fp32_ones_rounded(graphs):
    """Converting back (bf16 → fp32) gives every weight within bf16's rounding: half a unit in the 8th bit."""
    from onnx import numpy_helper

    fp32, bf16, _ = graphs
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32)).graph.initializer}
    for tensor in onnx.load(str(bf16)).graph.initializer:
        if tensor.data_type != BF16:
            continue
        back = numpy_helper.to_array(tensor).astype(np.float32)
        # a value read both in bf16 and in float32 (the exporter shares equal tensors) gets a bf16 copy
        want = source[tensor.name] if tensor.name in source else source[tensor.name.removesuffix("_bf16")]
        assert np.all(np.abs(back - want) <= np.abs(want) * 2.0**-8 + 1e-30), tensor.name


def test_the_cached_copy_follows_its_source(graphs, tmp_path):
    fp32 = tmp_path / "model.sim.onnx"
    onnx.save(onnx.load(str(graphs[0])), str(fp32))  # weights inline: the digest is the file's sha256
    first = cached_bf16(fp32)
    assert first == tmp_path / "model.bf16.onnx"
    stamp = first.stat().st_mtime_ns
    assert cached_bf16(fp32) == first and first.stat().st_mtime_ns == stamp  # reused, not rewritten
    model = onnx.load(str(fp32))
    model.graph.doc_string = "edited"
    onnx.save(model, str(fp32))
    assert cached_bf16(fp32) == first
    props = {p.key: p.value for p in onnx.load(str(first)).metadata_props}
    assert props[SOURCE_KEY] == sha256_file(fp32)  # converted again from the edited source


def test_an_edited_external_weight_file_is_an_edited_source(graphs, tmp_path):
    """The dynamo exporter keeps weights in ``model.onnx.data``: editing only that file must change the key."""
    fp32 = tmp_path / "model.onnx"
    onnx.save(onnx.load(str(graphs[0])), str(fp32), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    before = source_digest(fp32)
    assert before != sha256_file(fp32)
    data = bytearray((tmp_path / "model.onnx.data").read_bytes())
    data[0] ^= 1
    (tmp_path / "model.onnx.data").write_bytes(bytes(data))
    assert source_digest(fp32) != before
