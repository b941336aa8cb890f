"""``segedge check``: crafted graphs (one finding each) and every zoo model against every profile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segedge.backends.tensorrt.check import (
    CODES,
    check_model,
    check_onnx,
    format_report,
    lowest_tensorrt_version,
    parser_table,
)
from segedge.core.errors import ArtifactError, ProfileError
from segedge.backends.profiles import list_profiles, load_profile
from segedge.models.registry import get_spec, list_models

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "crafted", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _image(name="x", h=8, w=8, c=4):
    return helper.make_tensor_value_info(name, F, [1, c, h, w])


def _const(name, values, dtype=None):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _conv_relu(opset=17, h=8, w=8):
    weight = _const("w", np.zeros((4, 4, 3, 3)), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return _model(nodes, [_image(h=h, w=w)], [_image("y", h=h, w=w)], [weight], opset)


def _codes(report, severity):
    return report.codes(severity)


# crafted graphs ------------------------------------------------------------------------------------

def test_clean_conv_relu_is_ok_with_nothing_to_say():
    report = check_onnx(_conv_relu(), "desktop-gpu")
    assert report.ok and report.findings == ()
    assert report.tensorrt == "10.0"


def test_maxunpool_is_an_error_on_tensorrt_8_6():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["p", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    report = check_onnx(_model(nodes, [_image()], [_image("y")]), "jetson-orin-nano")
    assert report.tensorrt == "8.6" and not report.ok
    unpool = [f for f in report.errors if f.code == "unsupported-op"]
    assert [f.node for f in unpool] == ["unpool"]
    assert "MaxUnpool is marked unsupported in TensorRT 8.6's ONNX parser" in unpool[0].message
    assert "index_free" in unpool[0].message  # says what to do


def test_maxpool_indices_output_is_an_error():
    i64 = helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4, 4, 4])
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    report = check_onnx(_model(nodes, [_image()], [_image("y", 4, 4), i64]), "desktop-gpu")
    assert [(f.code, f.node) for f in report.errors] == [("maxpool-indices", "pool")]


def test_maxpool_without_indices_is_fine():
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    assert check_onnx(_model(nodes, [_image()], [_image("y", 4, 4)]), "jetson-orin-nano").findings == ()


def _decomposed_layernorm(opset=17):
    axes = _const("axes", [1], np.int64)
    two, eps = _const("two", 2.0, np.float32), _const("eps", 1e-5, np.float32)
    mean_in = ["x", "axes"] if opset >= 18 else ["x"]
    kw = {} if opset >= 18 else {"axes": [1]}
    nodes = [
        helper.make_node("ReduceMean", mean_in, ["mu"], name="mean", **kw),
        helper.make_node("Sub", ["x", "mu"], ["d"], name="sub"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="pow"),
        helper.make_node("ReduceMean", ["d2", "axes"] if opset >= 18 else ["d2"], ["var"], name="var", **kw),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
        helper.make_node("Div", ["d", "sd"], ["y"], name="div"),
    ]
    inits = [two, eps] + ([axes] if opset >= 18 else [])
    return _model(nodes, [_image()], [_image("y")], inits, opset)


def test_decomposed_layernorm_is_an_fp16_warning():
    report = check_onnx(_decomposed_layernorm(), "jetson-agx-orin")
    assert report.ok
    found = [f for f in report.findings if f.code == "decomposed-layernorm"]
    assert len(found) == 1 and found[0].severity == "warning" and found[0].node == "sub"
    assert "LayerNormalization" in found[0].message
    assert "fp16-overflow-risk" not in report.codes()  # its Pow is the LayerNorm's, reported once


def test_layernorm_below_opset_17_is_an_error():
    report = check_onnx(_decomposed_layernorm(opset=13), "desktop-gpu")
    assert "layernorm-opset" in _codes(report, "error")


def test_layernormalization_is_unsupported_on_tensorrt_8_5_only():
    scale, bias = _const("s", np.ones(8), np.float32), _const("b", np.zeros(8), np.float32)
    nodes = [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], name="ln", axis=-1)]
    model = _model(nodes, [_image()], [_image("y")], [scale, bias])
    assert [f.code for f in check_onnx(model, "jetson-xavier-nx").errors] == ["unsupported-op"]
    assert check_onnx(model, "jetson-agx-orin").ok


def _qdq(zero_point, dtype):
    scale = _const("scale", 0.1, np.float32)
    zp = _const("zp", zero_point, dtype)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dequant"),
    ]
    return _model(nodes, [_image()], [_image("y")], [scale, zp])


def test_uint8_zero_points_are_an_error_for_tensorrt():
    report = check_onnx(_qdq(128, np.uint8), "desktop-gpu")
    assert {(f.code, f.node) for f in report.errors} == {("qdq-uint8", "quant"), ("qdq-uint8", "dequant")}
    assert 'int8_scheme = "tensorrt"' in report.errors[0].message


def test_asymmetric_int8_zero_points_are_an_error():
    assert _codes(check_onnx(_qdq(3, np.int8), "jetson-agx-orin"), "error") == {"qdq-asymmetric"}


def test_symmetric_int8_qdq_is_fine():
    assert check_onnx(_qdq(0, np.int8), "jetson-agx-orin").ok


def test_per_channel_weight_scales_on_the_wrong_axis_are_flagged():
    w = _const("w_q", np.zeros((4, 4, 3, 3)), np.int8)
    scale, zp = _const("ws", np.full(4, 0.1), np.float32), _const("wz", np.zeros(4), np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "ws", "wz"], ["w"], name="dq_w", axis=1),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    report = check_onnx(_model(nodes, [_image()], [_image("y")], [w, scale, zp]), "desktop-gpu")
    assert [(f.severity, f.code) for f in report.findings] == [("warning", "qdq-per-channel-axis")]


def _resize(mode="linear", coord="half_pixel", sizes=None, h=8, w=8, **attrs):
    inits = [_const("scales", [1.0, 1.0, 2.0, 2.0], np.float32)]
    inputs = ["x", "", "scales"]
    if sizes is not None:
        inits = [_const("sizes", sizes, np.int64)]
        inputs = ["x", "", "", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], name="resize", mode=mode,
                            coordinate_transformation_mode=coord, **attrs)
    out = helper.make_tensor_value_info("y", F, None)
    return _model([node], [_image(h=h, w=w)], [out], inits)


def test_cubic_resize_is_an_error():
    report = check_onnx(_resize(mode="cubic"), "jetson-orin-nano")
    assert [(f.code, f.node) for f in report.errors] == [("resize-unsupported", "resize")]
    assert "'cubic'" in report.errors[0].message


def test_tf_crop_and_resize_is_an_error():
    assert "resize-unsupported" in _codes(check_onnx(_resize(coord="tf_crop_and_resize"), "desktop-gpu"), "error")


def test_bilinear_half_pixel_resize_is_fine():
    assert check_onnx(_resize(), "jetson-orin-nano").findings == ()


def _avgpool(h, w):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="adaptive", kernel_shape=[8, 8], strides=[8, 8])
    return _model([node], [_image(h=h, w=w)], [helper.make_tensor_value_info("y", F, None)])


def test_baked_pool_kernel_on_a_dynamic_graph_is_a_warning():
    report = check_onnx(_avgpool("height", "width"), "desktop-gpu")
    assert report.ok
    assert [(f.severity, f.code, f.node) for f in report.findings] == [("warning", "baked-pool-kernel", "adaptive")]


def test_the_same_pool_on_a_static_graph_is_fine():
    assert check_onnx(_avgpool(64, 64), "desktop-gpu").findings == ()


def test_resize_to_constant_sizes_on_a_dynamic_graph_is_a_warning():
    report = check_onnx(_resize(sizes=[1, 4, 16, 16], h="height", w="width"), "desktop-gpu")
    assert [(f.severity, f.code) for f in report.findings] == [("warning", "baked-resize-sizes")]


def test_reshape_to_a_constant_spatial_shape_on_a_dynamic_graph_is_a_warning():
    shape = _const("shape", [1, 4, 64], np.int64)
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten_hw")
    model = _model([node], [_image(h="height", w="width")], [helper.make_tensor_value_info("y", F, None)], [shape])
    assert [(f.code, f.node) for f in check_onnx(model, "desktop-gpu").findings] == [("baked-reshape", "flatten_hw")]


def test_computed_slice_axes_are_an_error():
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape", start=1, end=2),
        helper.make_node("Slice", ["x", "zero", "one", "shp"], ["y"], name="slice"),
    ]
    inits = [_const("zero", [0], np.int64), _const("one", [1], np.int64)]
    model = _model(nodes, [_image()], [helper.make_tensor_value_info("y", F, None)], inits)
    assert [(f.code, f.node) for f in check_onnx(model, "jetson-agx-orin").errors] == [("input-not-constant", "slice")]


def test_custom_domain_op_is_an_error():
    node = helper.make_node("FusedGelu", ["x"], ["y"], name="gelu", domain="com.microsoft")
    model = _model([node], [_image()], [_image("y")])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert [f.code for f in check_onnx(model, "desktop-gpu").errors] == ["custom-op"]


def test_opset_18_is_beyond_what_tensorrt_8_6_documents_but_within_10():
    model = _conv_relu(opset=18)
    assert [(f.severity, f.code) for f in check_onnx(model, "jetson-agx-orin").findings] == [
        ("warning", "opset-above-documented")
    ]
    assert check_onnx(model, "desktop-gpu").findings == ()


def test_opset_below_tensorrt_10s_range_is_an_error():
    assert "opset-below-supported" in _codes(check_onnx(_conv_relu(opset=8), "desktop-gpu"), "error")


def test_dla_lists_layers_that_fall_back_to_the_gpu():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Erf", ["c"], ["e"], name="erf"),
        helper.make_node("Concat", ["e", "c"], ["y"], name="concat_w", axis=3),
    ]
    w = _const("w", np.zeros((4, 4, 3, 3)), np.float32)
    model = _model(nodes, [_image()], [helper.make_tensor_value_info("y", F, None)], [w])
    assert check_onnx(model, "jetson-agx-orin").findings == ()  # the profile's dla_core is -1: no DLA check
    report = check_onnx(model, "jetson-agx-orin", dla=True)
    assert report.ok and report.dla  # GPU fallback is always allowed: warnings
    assert {(f.code, f.node) for f in report.findings} == {("dla-fallback", "erf"), ("dla-fallback", "concat_w")}


def test_dla_on_a_dynamic_graph_is_a_warning():
    report = check_onnx(_avgpool("height", "width"), "jetson-xavier-nx", dla=True)
    assert "dla-dynamic-shape" in _codes(report, "warning")


def test_dla_on_a_desktop_gpu_is_an_error():
    report = check_onnx(_conv_relu(), "desktop-gpu", dla=True)
    assert [f.code for f in report.errors] == ["dla-unavailable"]


def test_profile_without_tensorrt_has_nothing_to_refuse():
    report = check_onnx(_qdq(128, np.uint8), "cpu")
    assert report.ok and report.tensorrt is None
    assert [f.code for f in report.findings] == ["not-tensorrt"]


def _unrolled_pool(h, w, bins=4):
    """What the exporter writes for adaptive pooling whose bins do not divide the input: Slice per bin,
    ReduceMean, Concat."""
    nodes, inits, outs = [], [], []
    for i in range(bins):
        inits += [_const(f"s{i}", [i]), _const(f"e{i}", [i + 2]), _const(f"a{i}", [2])]
        nodes.append(helper.make_node("Slice", ["x", f"s{i}", f"e{i}", f"a{i}"], [f"bin{i}"], name=f"slice{i}"))
        nodes.append(helper.make_node("ReduceMean", [f"bin{i}"], [f"m{i}"], name=f"mean{i}", axes=[2, 3], keepdims=1))
        outs.append(f"m{i}")
    nodes.append(helper.make_node("Concat", outs, ["y"], name="bins", axis=3))
    return _model(nodes, [_image(h=h, w=w)], [helper.make_tensor_value_info("y", F, None)], inits, opset=17)


def test_unrolled_adaptive_pooling_is_a_warning_on_a_dynamic_graph_and_a_note_on_a_static_one():
    dynamic = check_onnx(_unrolled_pool("height", "width"), "desktop-gpu")
    assert ("warning", "unrolled-adaptive-pool", "bins") in [(f.severity, f.code, f.node) for f in dynamic.findings]
    static = check_onnx(_unrolled_pool(8, 8), "desktop-gpu")
    assert ("info", "unrolled-adaptive-pool", "bins") in [(f.severity, f.code, f.node) for f in static.findings]
    assert "unrolled-adaptive-pool" not in check_onnx(_unrolled_pool(8, 8, bins=3), "desktop-gpu").codes("info")


def test_exp_outside_a_layernorm_is_an_fp16_overflow_note():
    nodes = [helper.make_node("Exp", ["x"], ["y"], name="softplus_exp")]
    report = check_onnx(_model(nodes, [_image()], [_image("y")]), "desktop-gpu")
    found = [f for f in report.findings if f.code == "fp16-overflow-risk"]
    assert [(f.severity, f.node) for f in found] == [("info", "softplus_exp")] and report.ok


FIRED: set[str] = set()  # codes the crafted graphs above emit; filled by the test below


def test_every_code_fires_on_a_crafted_graph():
    """Each code in CODES is emitted by at least one crafted graph in this file (a code that never fires is a
    rule nobody has seen work). Runs the graphs again and collects what they emit."""
    graphs = [
        (_conv_relu(), "desktop-gpu", None), (_decomposed_layernorm(), "jetson-orin-nano", None),
        (_decomposed_layernorm(opset=16), "jetson-orin-nano", None), (_qdq(128, np.uint8), "desktop-gpu", None),
        (_qdq(3, np.int8), "desktop-gpu", None), (_resize("cubic"), "desktop-gpu", None),
        (_avgpool("height", "width"), "desktop-gpu", None), (_unrolled_pool("height", "width"), "desktop-gpu", None),
        (_avgpool("height", "width"), "jetson-xavier-nx", True), (_conv_relu(), "desktop-gpu", True),
        (_qdq(128, np.uint8), "cpu", None), (_conv_relu(opset=9), "desktop-gpu", None),
        (_conv_relu(opset=18), "jetson-orin-nano", None), (_conv_relu(opset=8), "desktop-gpu", None),
        (_model([helper.make_node("Exp", ["x"], ["y"], name="e")], [_image()], [_image("y")]), "desktop-gpu", None),
    ]
    for model, profile, dla in graphs:
        FIRED.update(f.code for f in check_onnx(model, profile, dla=dla).findings)
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxUnpool", ["p", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2])]
    FIRED.update(f.code for f in check_onnx(_model(nodes, [_image()], [_image("y")], opset=18), "jetson-orin-nano").findings)
    for test in (test_per_channel_weight_scales_on_the_wrong_axis_are_flagged, test_resize_to_constant_sizes_on_a_dynamic_graph_is_a_warning,
                 test_reshape_to_a_constant_spatial_shape_on_a_dynamic_graph_is_a_warning, test_computed_slice_axes_are_an_error,
                 test_custom_domain_op_is_an_error, test_dla_lists_layers_that_fall_back_to_the_gpu,
                 test_layernormalization_is_unsupported_on_tensorrt_8_5_only):
        _record(test)
    assert sorted(set(CODES) - FIRED) == []


def _record(test):
    """Run another test of this file with check_onnx wrapped so its findings are collected."""
    import segedge.backends.tensorrt.check as check

    original = check.check_onnx

    def recording(*args, **kwargs):
        report = original(*args, **kwargs)
        FIRED.update(f.code for f in report.findings)
        return report

    globals()["check_onnx"] = recording
    try:
        test()
    finally:
        globals()["check_onnx"] = original


def test_format_report_has_one_line_per_finding_with_node_names():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["p", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    report = check_onnx(_model(nodes, [_image()], [_image("y")], opset=18), "jetson-agx-orin")
    lines = format_report(report).splitlines()
    assert lines[0].startswith("FAIL: crafted (opset 18) on profile jetson-agx-orin (TensorRT 8.6): 2 errors, 1 warning")
    assert len(lines) == 1 + len(report.findings)
    assert lines[1].startswith("  error   ") and lines[-1].startswith("  warning ")
    assert any("[unpool]" in line for line in lines) and any("[pool]" in line for line in lines)


def test_a_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ArtifactError, match="no ONNX file at .*missing.onnx; pass a .onnx path or a model name"):
        check_onnx(tmp_path / "missing.onnx", "desktop-gpu")


def test_a_file_on_disk_is_checked(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_relu(), path)
    report = check_onnx(path, load_profile("jetson-orin-nano"))
    assert report.ok and report.source == str(path)


def test_the_lowest_version_of_a_profile_decides():
    assert lowest_tensorrt_version(">=8.6,<11") == "8.6"
    assert lowest_tensorrt_version(">=10.0,<12") == "10.0"
    assert lowest_tensorrt_version("<9") is None
    assert parser_table("8.6.1").version == "8.6"
    assert parser_table("10.3").version == "10.0"
    assert "LayerNormalization" in parser_table("8.6").supported - parser_table("8.5").supported
    with pytest.raises(ProfileError, match="older than segedge's op table, which starts at 8.5"):
        parser_table("8.0")


# the zoo -------------------------------------------------------------------------------------------

TENSORRT_PROFILES = [p for p in list_profiles() if p.uses_backend("tensorrt")]


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_against_every_profile(name, zoo_export):
    """On the model's dynamic-H/W export of the test run (tests/zoo_exports.py, shared with the contract tests):
    what a dynamic graph holds beyond the fixed-size one is shape arithmetic (Shape, Gather, Concat, Cast), so an
    op TensorRT cannot parse is in both; ``check_model`` on a fixed-size export is tested below."""
    path, spec = zoo_export(name).path, get_spec(name)
    for profile in list_profiles():
        report = check_onnx(path, profile)  # never crashes
        format_report(report)
        if not profile.uses_backend("tensorrt"):
            continue
        if not spec.tensorrt_parser_safe:
            assert not report.ok, f"{name} is flagged tensorrt_parser_safe=False but passes {profile.name}"
        elif tuple(map(int, report.tensorrt.split("."))) >= (8, 6):
            assert report.ok, f"{name} claims to be TensorRT-safe:\n{format_report(report)}"
        else:
            # TensorRT 8.5 (JetPack 5) cannot import LayerNormalization: the only error a safe model may get there
            assert all(f.code == "unsupported-op" and f.message.startswith("LayerNormalization") for f in report.errors), (
                format_report(report)
            )


def test_check_model_exports_and_checks():
    report = check_model("unet", "jetson-agx-orin", input_size=(64, 64))
    assert report.ok
    assert report.source == "unet (exported at 64x64, width 0.25)"
