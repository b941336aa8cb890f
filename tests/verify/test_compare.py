"""The parity gate's three rules, each fired by a hand-made report (the export tests only ever trip the
agreement rule), and the gate that each stage gets."""

import math

import numpy as np
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


class NoisyRunner:
    """Returns its input as the scores: the inputs below are the reference logits plus noise."""

    backend = "test"

    def infer(self, batch):
        return np.asarray(batch, dtype=np.float32)


def noisy_reference(images=7, classes=3, size=(6, 8), seed=1):
    from segedge.verify.compare import Reference

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(images, classes, *size)).astype(np.float32)
    masks = rng.integers(0, classes, size=(images, *size)).astype(np.uint8)
    masks[0, :2] = 255  # void pixels count nowhere
    inputs = logits + rng.normal(scale=0.8, size=logits.shape).astype(np.float32)
    return Reference(inputs, masks, logits, classes)


def test_stats_of_consecutive_slices_joined_give_exactly_the_figures_of_one_pass():
    from segedge.verify.compare import ImageStats, Reference, accuracy_on_active_runner, image_stats

    whole = noisy_reference()
    one_pass = accuracy_on_active_runner(NoisyRunner(), whole)
    parts = [image_stats(NoisyRunner(), Reference(whole.inputs[a:b], whole.masks[a:b], whole.logits[a:b], 3))
             for a, b in ((0, 3), (3, 5), (5, 7))]
    joined = ImageStats.joined(parts).accuracy()
    assert joined == one_pass  # every figure, the interval's ends included, bit for bit

    # and those figures are the right ones, from numpy directly
    got, want = whole.inputs.argmax(1), whole.logits.argmax(1)
    keep = whole.masks != 255

    def miou(pred):
        ious = []
        for c in range(3):
            inter = ((pred == c) & (whole.masks == c) & keep).sum()
            union = (((pred == c) & keep) | (whole.masks == c)).sum()
            if union:
                ious.append(inter / union)
        return np.mean(ious)

    assert one_pass.report.miou == pytest.approx(miou(got), abs=1e-12)
    assert one_pass.report.reference_miou == pytest.approx(miou(want), abs=1e-12)
    assert one_pass.report.argmax_agreement == pytest.approx((got == want).mean(), abs=1e-12)
    assert one_pass.report.max_abs_diff == pytest.approx(np.abs(whole.inputs - whole.logits).max())
    assert one_pass.report.mean_abs_diff == pytest.approx(np.abs(whole.inputs - whole.logits).mean(), rel=1e-6)
    assert one_pass.interval.images == 7 and one_pass.interval.low < one_pass.interval.high
    # joined out of order, the bootstrap pairs other images: not the same interval (the order is what is kept)
    shuffled = ImageStats.joined(parts[::-1]).accuracy()
    assert shuffled.report.miou == joined.report.miou and shuffled.interval != joined.interval


def test_batched_stats_drop_the_padding_of_the_last_batch():
    from segedge.verify.compare import image_stats

    whole = noisy_reference()
    assert image_stats(NoisyRunner(), whole, batch=3).accuracy() == image_stats(NoisyRunner(), whole).accuracy()
