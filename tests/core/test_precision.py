"""Precision records: the one place that names a precision's artifact, gate and default tolerance."""

import pytest

from segedge.core.errors import SegedgeError
from segedge.core.precision import PRECISIONS, STAGES, default_tolerances, get_precision, parse_precisions


def test_each_precision_names_its_artifact_and_gate():
    assert {n: p.file for n, p in PRECISIONS.items()} == {
        "fp32": "model.sim.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx",
        "bf16": "model.sim.onnx"}  # bf16 runs the FP32 graph with bf16 arithmetic: no file of its own
    assert get_precision("int8").gate is STAGES["int8"].gate
    assert [n for n, p in PRECISIONS.items() if p.optional] == ["fp16", "int8"]  # fp32 is always built


def test_gates_are_the_numbers_readme_promises():
    """README: FP32 and simplified graphs agree on >= 99.9 % of pixels; FP16 >= 99 % and <= 1.0 point mIoU
    drop; INT8 >= 90 % and <= 3.0 points. Loosening a gate must fail here."""
    gates = {name: (s.gate.min_argmax_agreement, s.gate.max_miou_drop) for name, s in STAGES.items()}
    assert gates == {"onnx": (0.999, None), "sim": (0.999, None), "fp16": (0.99, 1.0), "int8": (0.90, 3.0),
                     "int8-nncf": (0.90, 3.0)}


def test_default_tolerances_come_from_the_records():
    assert default_tolerances() == {"fp32": 0.1, "fp16": 0.5, "int8": 1.0, "bf16": 0.5}


def test_precision_lists_are_checked_and_keep_their_order():
    assert parse_precisions("int8, fp32") == ("int8", "fp32")
    assert parse_precisions(["fp16"]) == ("fp16",)
    with pytest.raises(SegedgeError, match="unknown precision 'fp8'; choose from fp32, fp16, int8, bf16"):
        parse_precisions("fp32,fp8")


def test_export_config_takes_precisions_by_name_in_registry_order():
    from segedge.flows.export import ExportConfig

    config = ExportConfig(model="unet", precisions=("int8", "fp32", "fp16"))
    assert config.precisions == ("fp16", "int8")
    assert config.builds("fp32") and config.builds("int8")
    assert not ExportConfig(model="unet").builds("fp16")
    with pytest.raises(SegedgeError, match="unknown precision 'int4'"):
        ExportConfig(model="unet", precisions=("int4",))


def test_int8_placed_by_nncf_has_its_own_file_checked_on_openvino():
    from segedge.core.precision import stage_for
    from segedge.flows.export import ExportConfig
    from segedge.graph.int8 import Int8Config

    assert stage_for("int8") == "int8" and stage_for("int8", "nncf") == "int8-nncf"
    assert stage_for("bf16", "nncf") == "sim"
    assert STAGES["int8-nncf"].file != STAGES["int8"].file and STAGES["int8-nncf"].checked_on == "openvino"
    assert ExportConfig(model="unet", precisions=("int8",), int8_config=Int8Config(scheme="openvino")).stage_of("int8") == "int8-nncf"
    assert ExportConfig(model="unet", precisions=("int8",)).stage_of("int8") == "int8"
