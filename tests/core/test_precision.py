"""Precision records: the one place that names a precision's artifact, gate and default tolerance."""

import pytest

from segedge.core.errors import SegedgeError
from segedge.core.precision import PRECISIONS, STAGES, default_tolerances, get_precision, parse_precisions


def test_each_precision_names_its_artifact_and_gate():
    assert {n: p.file for n, p in PRECISIONS.items()} == {
        "fp32": "model.sim.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    assert get_precision("int8").gate is STAGES["int8"].gate
    assert [n for n, p in PRECISIONS.items() if p.optional] == ["fp16", "int8"]  # fp32 is always built


def test_gates_are_the_numbers_readme_promises():
    """README: FP32 and simplified graphs agree on >= 99.9 % of pixels; FP16 >= 99 % and <= 1.0 point mIoU
    drop; INT8 >= 90 % and <= 3.0 points. Loosening a gate must fail here."""
    gates = {name: (s.gate.min_argmax_agreement, s.gate.max_miou_drop) for name, s in STAGES.items()}
    assert gates == {"onnx": (0.999, None), "sim": (0.999, None), "fp16": (0.99, 1.0), "int8": (0.90, 3.0)}


def test_default_tolerances_come_from_the_records():
    assert default_tolerances() == {"fp32": 0.1, "fp16": 0.5, "int8": 1.0}


def test_precision_lists_are_checked_and_keep_their_order():
    assert parse_precisions("int8, fp32") == ("int8", "fp32")
    assert parse_precisions(["fp16"]) == ("fp16",)
    with pytest.raises(SegedgeError, match="unknown precision 'fp8'; choose from fp32, fp16, int8"):
        parse_precisions("fp32,fp8")


def test_export_config_takes_precisions_by_name_in_registry_order():
    from segedge.flows.export import ExportConfig

    config = ExportConfig(model="unet", precisions=("int8", "fp32", "fp16"))
    assert config.precisions == ("fp16", "int8")
    assert config.builds("fp32") and config.builds("int8")
    assert not ExportConfig(model="unet").builds("fp16")
    with pytest.raises(SegedgeError, match="unknown precision 'int4'"):
        ExportConfig(model="unet", precisions=("int4",))
