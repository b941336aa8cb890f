"""Cross-layer equalization: function preserved, spread reduced, unsafe pairs skipped, INT8 error lowered."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segedge.graph.equalize import equalize, equalize_file

SIZE = 16


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _run(model, x: np.ndarray) -> np.ndarray:
    session = _session(model)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _inputs(count: int, seed: int, channels: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, channels, SIZE, SIZE)).astype(np.float32) for _ in range(count)]


def _assert_same_function(before, after, channels: int = 3) -> None:
    for x in _inputs(3, seed=1, channels=channels):
        ref = _run(before, x)
        np.testing.assert_allclose(_run(after, x), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def _weights(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """conv 3→8 → BN → ReLU → depthwise 3x3 → BN → ReLU → 1x1 8→16 → BN, a few channels 50x wider, prepared
    (BN folded) the way segedge.graph.int8 prepares graphs, and its equalized copy."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16),
    )
    with torch.no_grad():
        for conv, wide in ((model[0], [1, 5]), (model[3], [2, 6])):
            conv.weight[wide] *= 50.0
            conv.bias[wide] *= 50.0
        for bn in (model[1], model[4], model[7]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    out = tmp_path_factory.mktemp("cle")
    program = torch.onnx.export(model.eval(), (torch.zeros(1, 3, SIZE, SIZE),), None, dynamo=True,
                                opset_version=18, verbose=False)
    onnx.save_model(program.model_proto, str(out / "exported.onnx"))
    quant_pre_process(str(out / "exported.onnx"), str(out / "prepared.onnx"), skip_symbolic_shape=True)
    report = equalize_file(out / "prepared.onnx", out / "equalized.onnx")
    return out / "prepared.onnx", out / "equalized.onnx", report


def test_equalizes_depthwise_block_without_changing_function(prepared):
    src, dst, report = prepared
    ops = [n.op_type for n in onnx.load(str(src)).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 3  # folded by quant_pre_process
    _assert_same_function(str(src), str(dst))
    # conv → ReLU → depthwise (consumer) and depthwise → ReLU → 1x1 (producer): a chain of two pairs
    assert report["pairs"] == 2 and report["skipped"] == {}
    assert report["converged"] and 1 < report["iterations"] <= 20
    assert report["range_ratio_after"] < 0.5 * report["range_ratio_before"]
    before, after = _weights(onnx.load(str(src))), _weights(onnx.load(str(dst)))
    assert before.keys() == after.keys()
    changed = [name for name in before if not np.allclose(before[name], after[name])]
    assert len(changed) >= 4  # two producer weights and biases, the consumers' weights


def _conv(name: str, x: str, out: str, cin: int, cout: int, rng, group: int = 1, bias: bool = True,
          weight: str | None = None, k: int = 3) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    weight = weight or f"{name}.w"
    scales = np.where(np.arange(cout) % 3 == 0, 30.0, 1.0).reshape(-1, 1, 1, 1)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin // group, k, k)) * scales * 0.3)
                                     .astype(np.float32), weight)]
    inputs = [x, weight]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, f"{name}.b"))
        inputs.append(f"{name}.b")
    node = helper.make_node("Conv", inputs, [out], name=name, group=group, pads=[k // 2] * 4, kernel_shape=[k, k])
    return node, inits


def _model(nodes, inits, output: str, channels: int = 4) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "cle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, SIZE, SIZE])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, "c", SIZE, SIZE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _between(op: str, rng, extra_inputs=(), extra_inits=(), **attrs) -> onnx.ModelProto:
    a, a_inits = _conv("a", "x", "ya", 4, 6, rng)
    mid = helper.make_node(op, ["ya", *extra_inputs], ["ym"], name="mid", **attrs)
    b, b_inits = _conv("b", "ym", "y", 6, 5, rng)
    return _model([a, mid, b], a_inits + list(extra_inits) + b_inits, "y")


def test_clip_is_not_homogeneous_and_is_skipped():
    rng = np.random.default_rng(0)
    model = _between("Clip", rng, ["lo", "hi"], [numpy_helper.from_array(np.float32(0.0), "lo"),
                                                 numpy_helper.from_array(np.float32(6.0), "hi")])
    equalized, report = equalize(model)
    assert report["pairs"] == 0 and report["skipped"] == {"clip": 1}
    assert all(np.array_equal(v, _weights(equalized)[k]) for k, v in _weights(model).items())
    _assert_same_function(model, equalized, channels=4)


@pytest.mark.parametrize("slope", [np.float32(0.25), np.linspace(0.05, 0.6, 6, dtype=np.float32).reshape(6, 1, 1)])
def test_prelu_between_convs_is_equalized(slope):
    rng = np.random.default_rng(1)
    model = _between("PRelu", rng, ["slope"], [numpy_helper.from_array(np.asarray(slope), "slope")])
    snapshot = model.SerializeToString()
    equalized, report = equalize(model)
    assert model.SerializeToString() == snapshot  # the input model is left alone
    assert report["pairs"] == 1 and report["skipped"] == {}
    assert report["range_ratio_after"] < 0.5 * report["range_ratio_before"]
    np.testing.assert_array_equal(_weights(equalized)["slope"], slope)
    _assert_same_function(model, equalized, channels=4)


def test_leaky_relu_and_no_activation_are_equalized_other_ops_are_not():
    rng = np.random.default_rng(2)
    for op, attrs, expect in (("LeakyRelu", {"alpha": 0.1}, {}), ("Sigmoid", {}, {"activation Sigmoid": 1})):
        model = _between(op, rng, **attrs)
        equalized, report = equalize(model)
        assert report["pairs"] == (0 if expect else 1) and report["skipped"] == expect
        _assert_same_function(model, equalized, channels=4)
    a, a_inits = _conv("a", "x", "ya", 4, 6, rng, bias=False)
    b, b_inits = _conv("b", "ya", "y", 6, 6, rng, group=3)  # direct, grouped consumer, bias-less producer
    model = _model([a, b], a_inits + b_inits, "y")
    equalized, report = equalize(model)
    assert report["pairs"] == 1
    _assert_same_function(model, equalized, channels=4)


def test_shared_weights_and_multiple_consumers_are_skipped():
    rng = np.random.default_rng(3)
    # a and c read one weight initializer: rescaling it for one pair would break the other conv
    a, a_inits = _conv("a", "x", "ya", 4, 4, rng, weight="shared")
    b, b_inits = _conv("b", "ra", "yb", 4, 4, rng)
    c, c_inits = _conv("c", "rb", "y", 4, 4, rng, weight="shared")
    nodes = [a, helper.make_node("Relu", ["ya"], ["ra"]), b, helper.make_node("Relu", ["yb"], ["rb"]), c]
    shared = _model(nodes, a_inits + b_inits + [t for t in c_inits if t.name != "shared"], "y")
    equalized, report = equalize(shared)
    assert report["pairs"] == 0 and report["skipped"] == {"shared weight": 2}
    _assert_same_function(shared, equalized, channels=4)

    # a's output feeds b and a residual Add: the Add would see the rescaled channels
    a, a_inits = _conv("a", "x", "ya", 4, 4, rng)
    b, b_inits = _conv("b", "ya", "yb", 4, 4, rng)
    add = helper.make_node("Add", ["ya", "yb"], ["y"])
    branching = _model([a, b, add], a_inits + b_inits, "y")
    equalized, report = equalize(branching)
    assert report["pairs"] == 0 and report["skipped"] == {"multiple consumers": 1}
    _assert_same_function(branching, equalized, channels=4)


def _quantized_error(model_path, dst, calib, evaluation, reference) -> float:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = _session(str(model_path)).get_inputs()[0].name

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        items = iter([{name: x} for x in calib])

        def get_next(self):
            return next(self.items, None)

    reader = Reader()
    quantize_static(str(model_path), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    session = _session(str(dst))
    outputs = [session.run(None, {name: x})[0] for x in evaluation]
    return float(np.mean([np.abs(o - r).mean() for o, r in zip(outputs, reference)]))


def test_equalization_lowers_int8_error(prepared, tmp_path):
    src, dst, _ = prepared
    calib, evaluation = _inputs(8, seed=10), _inputs(4, seed=11)
    reference = [_run(str(src), x) for x in evaluation]
    plain = _quantized_error(src, tmp_path / "plain.int8.onnx", calib, evaluation, reference)
    equalized = _quantized_error(dst, tmp_path / "cle.int8.onnx", calib, evaluation, reference)
    print(f"INT8 mean abs error vs FP32: without CLE {plain:.5f}, with CLE {equalized:.5f}")
    assert equalized < 0.7 * plain
