"""The parity gate's three rules, each fired by a hand-made report (the export tests only ever trip the
agreement rule), and the gate that each stage gets."""

import math

import pytest

from segedge.core.errors import ParityError
from segedge.core.precision import STAGES
from segedge.verify.compare import ParityReport, enforce_gate


def report(agreement=1.0, miou=0.5, reference=0.5, max_diff=0.01) -> ParityReport:
    return ParityReport(images=4, max_abs_diff=max_diff, mean_abs_diff=max_diff / 2, argmax_agreement=agreement,
                        miou=miou, reference_miou=reference)


@pytest.mark.parametrize("stage", ["onnx", "sim", "fp16", "int8"])
def test_a_faithful_artifact_passes_every_gate(stage):
    enforce_gate(stage, report(), STAGES[stage].gate)


def test_the_miou_drop_rule_fires_above_the_int8_budget_and_not_below():
    gate = STAGES["int8"].gate
    enforce_gate("int8", report(agreement=0.95, miou=0.471, reference=0.5), gate)  # 2.9 points: within 3.0
    with pytest.raises(ParityError, match=r"mIoU drop 3\.10 points exceeds the gate's 3\.00.*no int8 artifact was kept"):
        enforce_gate("int8", report(agreement=0.95, miou=0.469, reference=0.5), gate)


def test_the_fp16_drop_rule_is_one_point():
    with pytest.raises(ParityError, match=r"mIoU drop 1\.50 points exceeds the gate's 1\.00"):
        enforce_gate("fp16", report(agreement=0.995, miou=0.485, reference=0.5), STAGES["fp16"].gate)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_logits_fail_even_with_perfect_agreement(bad):
    with pytest.raises(ParityError, match="non-finite logits"):
        enforce_gate("sim", report(max_diff=bad), STAGES["sim"].gate)


def test_the_agreement_rule_names_both_figures():
    with pytest.raises(ParityError, match=r"argmax agreement 98\.90 % is below the gate's 99\.00 %"):
        enforce_gate("fp16", report(agreement=0.989), STAGES["fp16"].gate)
    with pytest.raises(ParityError, match=r"argmax agreement 89\.00 % is below the gate's 90\.00 %"):
        enforce_gate("int8", report(agreement=0.89), STAGES["int8"].gate)


def test_a_likely_cause_follows_the_figures():
    with pytest.raises(ParityError, match=r"below the gate's 90\.00 %.*no int8 artifact was kept\. Likely why: no VNNI$"):
        enforce_gate("int8", report(agreement=0.89), STAGES["int8"].gate, hint="no VNNI")
