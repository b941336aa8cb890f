"""Large constants of one repeated value (onnxsim's folded ConstantOfShape) go back to ConstantOfShape."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from segedge.graph.simplify import restore_splats


def _graph_with_constants(shape=(1, 4, 32, 32)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    zeros = numpy_helper.from_array(np.zeros(shape, np.float32), "zeros")  # a splat initializer
    noise = numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "noise")  # not a splat
    sevens = helper.make_node("Constant", [], ["sevens"], value=numpy_helper.from_array(np.full(shape, 7, np.int64)))
    nodes = [
        sevens,
        helper.make_node("Cast", ["sevens"], ["sevens_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["input", "zeros"], ["a"]),
        helper.make_node("Add", ["a", "noise"], ["b"]),
        helper.make_node("Add", ["b", "sevens_f"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)], [zeros, noise])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_large_splats_become_constant_of_shape_and_compute_the_same():
    model = _graph_with_constants()
    x = np.random.default_rng(1).standard_normal((1, 4, 32, 32)).astype(np.float32)
    want = _run(model, x)
    before = model.ByteSize()
    assert restore_splats(model, min_bytes=1024) == 2  # the zeros initializer and the sevens Constant
    onnx.checker.check_model(model, full_check=True)
    assert [t.name for t in model.graph.initializer] == ["noise"]  # random values stay as they are
    made = {n.output[0]: n for n in model.graph.node if n.op_type == "ConstantOfShape"}
    assert set(made) == {"zeros", "sevens"}
    assert numpy_helper.to_array(made["sevens"].attribute[0].t).tolist() == [7]
    assert model.ByteSize() < before - 4 * 32 * 32 * (4 + 8) * 0.9
    np.testing.assert_array_equal(_run(model, x), want)


def test_a_layers_weights_stay_an_initializer_even_when_one_value():
    shape = (1, 4, 32, 32)
    weight = numpy_helper.from_array(np.zeros((4, 4, 16, 16), np.float32), "conv.weight")  # 16 KiB of zeros
    graph = helper.make_graph([helper.make_node("Conv", ["input", "conv.weight"], ["logits"], pads=[8, 8, 7, 7])],
                              "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert restore_splats(model, min_bytes=1024) == 0
    assert [t.name for t in model.graph.initializer] == ["conv.weight"]


def test_small_constants_are_left_alone():
    model = _graph_with_constants(shape=(1, 2, 4, 4))
    assert restore_splats(model, min_bytes=1 << 20) == 0
    assert [t.name for t in model.graph.initializer] == ["zeros", "noise"]
