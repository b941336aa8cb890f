"""INT8 schemes per target: graph structure (zero points, per-channel axes, Q/DQ counts) and numbers vs FP32."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from segedge.data.synthetic import SyntheticScenes
from segedge.data.transforms import to_network_input
from segedge.core.errors import InputSizeError
from segedge.flows.export import ExportConfig, export_model
from segedge.graph.int8 import ARM, INT8_SCHEMES, TENSORRT, X86, Int8Config, calibrated_graph, int8_from_onnx
from segedge.models.registry import get_spec

SIZE = (64, 128)
SPEC = get_spec("unet")
ORT_SCHEMES = [name for name, scheme in INT8_SCHEMES.items() if scheme.quantizer == "onnxruntime"]  # NNCF's: tests/backends/test_openvino.py


@pytest.fixture(scope="module")
def fp32(tiny_checkpoint, tmp_path_factory):
    """The tiny U-Net's simplified FP32 graph, plus calibration and evaluation inputs."""
    config = ExportConfig(model="unet", checkpoint=tiny_checkpoint.path, input_size=SIZE, eval_images=4,
                          store=tmp_path_factory.mktemp("store"), threads=2)
    result = export_model(config)
    calib, _ = SyntheticScenes("calib", 8, size=SIZE, seed=0).batch(0, 8)
    val, _ = SyntheticScenes("val", 4, size=SIZE, seed=0).batch(0, 4)
    return result.file("sim"), to_network_input(calib, SPEC.mean, SPEC.std), to_network_input(val, SPEC.mean, SPEC.std)


@pytest.fixture(scope="module")
def quantized(fp32, tmp_path_factory):
    """One INT8 graph per scheme, all from one MinMax ranges cache (calibration runs once)."""
    sim, calib, _ = fp32
    out = tmp_path_factory.mktemp("int8")
    ranges = out / "ranges.json"
    infos = {}
    for name in ORT_SCHEMES:
        infos[name] = int8_from_onnx(sim, out / f"{name}.onnx", lambda: iter(calib[i : i + 1] for i in range(8)),
                                     Int8Config(calib_images=8, scheme=name, quantize_classifier=True), available_images=8,
                                     ranges_cache=ranges)
    return {name: (onnx.load(str(out / f"{name}.onnx")), info) for name, info in infos.items()}


def _constants(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weight_dqs(model):
    """(DequantizeLinear node, consumer op) for every weight feeding a Conv/ConvTranspose."""
    produced = {out: n for n in model.graph.node for out in n.output}
    pairs = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            pairs.append((produced[node.input[1]], node))
    return pairs


def _activation_quantizers(model):
    consts = _constants(model)
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts]


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _bias_dqs(model):
    consts = _constants(model)
    return [n for n in model.graph.node if n.op_type == "DequantizeLinear" and consts.get(n.input[0]) is not None
            and consts[n.input[0]].dtype == np.int32]


@pytest.mark.parametrize("scheme", ["x86", "x86-novnni", "arm", "tensorrt"])
def test_weights_are_s8_symmetric_per_output_channel(quantized, scheme):
    model, info = quantized[scheme]
    consts = _constants(model)
    pairs = _weight_dqs(model)
    assert len(pairs) == 23 and info["float_convs_left"] == 0  # 19 Conv + 4 ConvTranspose, all quantized
    for dq, consumer in pairs:
        weight, scale, zero = (consts[name] for name in dq.input)
        assert weight.dtype == np.int8 and zero.dtype == np.int8 and not zero.any()
        axis = {"Conv": 0, "ConvTranspose": 1}[consumer.op_type]  # the output-channel axis
        assert _axis(dq) == axis
        assert scale.shape == (weight.shape[axis],)


def test_x86_without_vnni_has_seven_bit_weights_and_the_same_activations(quantized):
    """Two u8·s8 products summed in int16 overflow at 255·127·2 and not at 255·64·2 (VPMADDUBSW without VNNI)."""
    (wide, _), (narrow, _) = quantized["x86"], quantized["x86-novnni"]
    wide_consts, narrow_consts = _constants(wide), _constants(narrow)
    wide_peak = max(int(np.abs(wide_consts[dq.input[0]]).max()) for dq, _ in _weight_dqs(wide))
    narrow_peak = max(int(np.abs(narrow_consts[dq.input[0]]).max()) for dq, _ in _weight_dqs(narrow))
    assert wide_peak == 127 and narrow_peak == 64  # ±64: onnxruntime's reduced range for symmetric s8
    assert sorted(n.op_type for n in wide.graph.node) == sorted(n.op_type for n in narrow.graph.node)
    for q in _activation_quantizers(narrow):
        assert narrow_consts[q.input[2]].dtype == np.uint8


def test_the_saturation_note_names_the_seven_bit_scheme_only_where_it_applies():
    from types import SimpleNamespace

    from segedge.graph.int8 import X86_NO_VNNI, saturation_note

    avx2, vnni = (SimpleNamespace(arch="x86_64", cpu_flags=f) for f in (("avx2",), ("avx2", "avx512_vnni")))
    note = saturation_note(X86, avx2)
    assert note.startswith("this CPU has no VNNI (flags: avx2)") and note.endswith(
        "--int8-scheme x86-novnni quantizes weights to 7 bits for CPUs like this one")
    assert saturation_note(X86, vnni) == saturation_note(X86_NO_VNNI, avx2) == saturation_note(ARM, avx2) == ""
    assert saturation_note(X86, SimpleNamespace(arch="aarch64", cpu_flags=("asimd",))) == ""
    # by default it judges this machine, by its CPU facts alone: the same answer the full machine probe gives
    from segedge.core.hardware import detect_machine, this_cpu

    here, full = this_cpu(), detect_machine()
    assert (here.arch, here.cpu, here.cores, here.cpu_flags) == (full.arch, full.cpu, full.cores, full.cpu_flags)
    assert saturation_note(X86) == saturation_note(X86, full)


def test_x86_activations_are_u8_asymmetric(quantized):
    model, _ = quantized["x86"]
    consts = _constants(model)
    zeros = [consts[q.input[2]] for q in _activation_quantizers(model)]
    assert zeros and {z.dtype for z in zeros} == {np.dtype(np.uint8)}
    assert any(z != 0 for z in zeros)  # asymmetric: post-ReLU tensors sit at zero point 0, others do not
    assert len(_bias_dqs(model)) == 23  # int32 biases onnxruntime folds into QLinearConv


@pytest.mark.parametrize("scheme", ["arm", "tensorrt"])
def test_signed_schemes_have_s8_activations_with_zero_point_0(quantized, scheme):
    model, _ = quantized[scheme]
    consts = _constants(model)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = consts[node.input[2]]
            assert zero.dtype in (np.int8, np.int32) and not zero.any(), node.name
    zeros = [consts[q.input[2]] for q in _activation_quantizers(model)]
    assert zeros and {z.dtype for z in zeros} == {np.dtype(np.int8)}


def test_tensorrt_keeps_biases_float_and_arm_quantizes_them(quantized):
    """TensorRT's DequantizeLinear takes int8 only: an int32 bias DQ would not parse."""
    (trt, trt_info), (arm, arm_info) = quantized["tensorrt"], quantized["arm"]
    assert _bias_dqs(trt) == [] and len(_bias_dqs(arm)) == 23
    assert arm_info["dequantize_nodes"] - trt_info["dequantize_nodes"] == 23
    assert trt_info["quantize_nodes"] == arm_info["quantize_nodes"]
    # asymmetric u8 lets onnxruntime drop the Q/DQ after each ReLU (folded into the conv's range): fewer pairs
    assert quantized["x86"][1]["quantize_nodes"] < arm_info["quantize_nodes"]


def test_tensorrt_scheme_passes_the_tensorrt_qdq_check_and_x86_does_not(quantized):
    from segedge.backends.tensorrt.check import check_onnx

    assert not {c for c in check_onnx(quantized["tensorrt"][0], "desktop-gpu").codes("error") if c.startswith("qdq")}
    assert "qdq-uint8" in check_onnx(quantized["x86"][0], "desktop-gpu").codes("error")


@pytest.mark.parametrize("scheme", ORT_SCHEMES)
def test_every_scheme_agrees_with_fp32(fp32, quantized, scheme):
    import onnxruntime as ort

    sim, _, val = fp32
    model, _ = quantized[scheme]

    def predict(proto):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {"input": val[i : i + 1]})[0] for i in range(len(val))]).argmax(1)

    agreement = (predict(model) == predict(onnx.load(str(sim)))).mean()
    assert agreement >= 0.98, f"{scheme}: argmax agreement {agreement:.4f}"


def test_one_layer_alone_or_all_but_some(fp32, tmp_path):
    sim, calib, _ = fp32
    config = Int8Config(calib_images=4, chunk=2)
    with calibrated_graph(sim, lambda: iter(calib[i : i + 1] for i in range(4)), config, 8) as graph:
        layers = graph.layers()
        assert [layer.op_type for layer in layers].count("ConvTranspose") == 4
        # the other compute ops are layers too (their losses show under their own names), each by its node name
        assert {"Concat", "MaxPool"} <= {layer.op_type for layer in layers}
        convs = [layer for layer in layers if layer.op_type in ("Conv", "ConvTranspose")]
        alone = graph.quantize(tmp_path / "one.onnx", only=[convs[0].name])
        assert alone["float_convs_left"] == len(convs) - 1
        most = graph.quantize(tmp_path / "most.onnx", exclude=[convs[0].name, convs[-2].name])
        assert most["float_convs_left"] == 3  # those two and the classifier, float by default
        with pytest.raises(InputSizeError, match="no quantizable layer named node_nope in the prepared graph"):
            graph.quantize(tmp_path / "bad.onnx", exclude=["node_nope"])


def test_scheme_config_and_the_older_activation_setting():
    assert Int8Config().scheme is X86
    assert Int8Config(activation="s8").scheme is TENSORRT  # what profiles' int8_activation = "s8" meant
    assert Int8Config(scheme="arm").scheme is ARM and Int8Config(scheme="arm").activation == "s8"
    assert Int8Config(scheme=TENSORRT, activation="s8").scheme is TENSORRT
    with pytest.raises(InputSizeError, match="activation type u8 contradicts INT8 scheme tensorrt"):
        Int8Config(scheme="tensorrt", activation="u8")
    with pytest.raises(InputSizeError, match="unknown INT8 scheme 'risc-v'; choose one of x86, x86-novnni, arm, tensorrt"):
        Int8Config(scheme="risc-v")
    # MinMax ranges are scheme-independent (one cache serves all); histogram ranges are not
    assert Int8Config(scheme="x86").ranges_key() == Int8Config(scheme="tensorrt").ranges_key()
    assert Int8Config(scheme="x86", calib_method="entropy").ranges_key() != \
        Int8Config(scheme="tensorrt", calib_method="entropy").ranges_key()
    assert Int8Config(scheme="arm").as_dict()["scheme"] == {
        "name": "arm", "activation": "s8", "activation_symmetric": True, "quantize_bias": True}
    # 7-bit weights are part of the scheme's record, so an x86 graph and an x86-novnni one never share a stage key
    assert Int8Config(scheme="x86-novnni").as_dict()["scheme"]["reduce_range"] is True
    assert "reduce_range" not in Int8Config(scheme="x86").as_dict()["scheme"]


class _Masks:
    """A calibration split of 40 tiny images: all road (class 0) except images 25, 29 and 31, which also
    hold a rare class (3, 7, 9 respectively)."""

    class_names = tuple(f"c{i}" for i in range(10))
    num_classes = 10

    def __len__(self):
        return 40

    def __getitem__(self, index):
        mask = np.zeros((8, 8), np.uint8)
        rare = {25: 3, 29: 7, 31: 9}.get(index)
        if rare is not None:
            mask[:2] = rare
        mask[-1, -1] = 255  # void pixels are ignored
        return np.zeros((8, 8, 3), np.uint8), mask


def test_class_balanced_selection_finds_the_rare_classes_the_first_images_miss():
    from segedge.graph.int8 import calibration_indices

    first, summary = calibration_indices(_Masks(), Int8Config(calib_images=8))
    assert first == list(range(8)) and summary == {"select": "first"}
    chosen, summary = calibration_indices(_Masks(), Int8Config(calib_images=8, calib_select="balanced"))
    assert len(chosen) == len(set(chosen)) == 8
    assert {25, 29, 31} <= set(chosen)  # every rare-class image, though they sit past the first 8
    assert summary["pool"] == 32 and summary["rarest_class_share"] > 0  # pool: 4 x 8 of 40
    assert summary["rarest_class_share_first"] == 1.0  # the first 8 hold class 0 only


def test_class_balanced_selection_reaches_only_its_pool_and_refuses_too_few_images():
    from segedge.core.errors import CalibrationError
    from segedge.graph.int8 import calibration_indices

    chosen, summary = calibration_indices(_Masks(), Int8Config(calib_images=4, calib_select="balanced"))
    assert summary["pool"] == 16 and max(chosen) < 16  # images 25.. lie past a pool of 4 x 4
    with pytest.raises(CalibrationError, match="calibration set has 40 images but 41 were asked for"):
        calibration_indices(_Masks(), Int8Config(calib_images=41, calib_select="balanced"))
    with pytest.raises(InputSizeError, match="--calib-select must be one of first, balanced, got 'rare'"):
        Int8Config(calib_select="rare").validate()
    # the selection and equalization change the ranges, so they key the ranges cache
    keys = {Int8Config().ranges_key(), Int8Config(calib_select="balanced").ranges_key(),
            Int8Config(equalize=True).ranges_key()}
    assert len(keys) == 3


def test_softmax_stays_float_while_the_matmuls_around_it_are_quantized(tmp_path):
    """FLOAT_OPS: onnxruntime's default set quantizes Softmax with a fixed [0, 1] output range (scale 1/255),
    which cost SegFormer-B0 4.55 mIoU points; segedge keeps Softmax float, so the probabilities reach the next
    MatMul on their calibrated, finer scale, and the MatMuls around it still get Q/DQ weights."""
    from onnx import helper

    rng = np.random.default_rng(0)
    # small logits: probabilities spread over the 16 keys, as attention's over its many keys
    w1, w2 = 0.05 * rng.normal(size=(16, 16)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
         helper.make_node("Softmax", ["h"], ["p"], name="attention", axis=-1),
         helper.make_node("MatMul", ["p", "w2"], ["y"], name="fc2")],
        "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    src = tmp_path / "attention.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    inputs = [rng.normal(size=(1, 32, 16)).astype(np.float32) for _ in range(4)]

    def softmax_output_scale(float_ops) -> float:
        dst = tmp_path / f"attention.{len(float_ops)}.onnx"
        int8_from_onnx(src, dst, lambda: iter(inputs), Int8Config(calib_images=4, float_ops=float_ops, quantize_classifier=True),
                       available_images=4, ranges_cache=tmp_path / "ranges.json")
        model = onnx.load(str(dst))
        produced = {out: n for n in model.graph.node for out in n.output}
        matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
        assert len(matmuls) == 2 and all(produced[n.input[1]].op_type == "DequantizeLinear" for n in matmuls)
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        quantizer = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == softmax.output[0])
        return float(_constants(model)[quantizer.input[1]])

    from segedge.graph.int8 import FLOAT_OPS

    assert "Softmax" in FLOAT_OPS and Int8Config().float_ops == FLOAT_OPS
    assert softmax_output_scale(()) == pytest.approx(1 / 255)  # onnxruntime's default: fixed [0, 1]
    calibrated = softmax_output_scale(FLOAT_OPS)
    assert calibrated < 0.9 / 255  # the probabilities' own range: finer steps


def _graph(nodes, output="out"):
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)])


def test_the_classifier_is_found_behind_upsampling_softmax_and_a_fusion_sum():
    from onnx import helper

    from segedge.graph.int8 import classifier_layers

    # stem conv -> feature conv -> classifier conv -> Resize -> Softmax -> output
    plain = _graph([helper.make_node("Conv", ["x", "w0"], ["a"], name="stem"),
                    helper.make_node("Conv", ["a", "w1"], ["b"], name="features"),
                    helper.make_node("Conv", ["b", "w2"], ["c"], name="classifier"),
                    helper.make_node("Resize", ["c", "", "scales"], ["d"], name="up"),
                    helper.make_node("Softmax", ["d"], ["out"], name="soft", axis=1)])
    assert classifier_layers(plain) == ["classifier"]
    # DeepLab v2's ASPP-L: four dilated classifiers summed; FCN's learnable upsampling is itself the last layer
    aspp = _graph([helper.make_node("Conv", ["x", "w0"], ["f"], name="backbone")]
                  + [helper.make_node("Conv", ["f", f"w{i}"], [f"s{i}"], name=f"aspp{i}") for i in range(4)]
                  + [helper.make_node("Add", ["s0", "s1"], ["t0"]), helper.make_node("Add", ["s2", "s3"], ["t1"]),
                     helper.make_node("Add", ["t0", "t1"], ["out"])])
    assert classifier_layers(aspp) == ["aspp0", "aspp1", "aspp2", "aspp3"]
    fcn = _graph([helper.make_node("Conv", ["x", "w0"], ["s"], name="score"),
                  helper.make_node("ConvTranspose", ["s", "w1"], ["out"], name="upscore")])
    assert classifier_layers(fcn) == ["upscore"]
    # a Mul is not a pass-through: nothing behind it counts as the classifier
    gated = _graph([helper.make_node("Conv", ["x", "w0"], ["a"], name="conv"),
                    helper.make_node("Mul", ["a", "x"], ["out"], name="gate")])
    assert classifier_layers(gated) == []


def test_the_classifier_stays_float_by_default_and_the_flag_quantizes_it(fp32, tmp_path):
    from segedge.graph.int8 import classifier_layers, qdq_counts

    sim, calib, _ = fp32
    for quantize_classifier, float_convs in ((False, 1), (True, 0)):
        config = Int8Config(calib_images=2, quantize_classifier=quantize_classifier)
        assert config.as_dict()["quantize_classifier"] is quantize_classifier  # part of the artifact's key
        with calibrated_graph(sim, lambda: iter(calib[i : i + 1] for i in range(2)), config, 8) as graph:
            dst = tmp_path / f"q{int(quantize_classifier)}.onnx"
            graph.quantize(dst)
            classifier = graph.classifier()
        assert len(classifier) == 1
        model = onnx.load(str(dst))
        assert qdq_counts(model)["float_convs_left"] == float_convs
        assert classifier_layers(model) == classifier  # the same node, by name, in the quantized graph
