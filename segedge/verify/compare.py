"""Parity of a compiled artifact against the torch FP32 reference on held-out images.

Three figures, stored with every artifact: max abs logit difference (catches numerical drift), pixel argmax
agreement (what the user's segmentation map sees), and mIoU against the labels for both, so the drop is
measured on the same images rather than inferred.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from segedge.core.errors import ParityError
from segedge.core.precision import ParityGate
from segedge.core.metrics import ConfusionMatrix
from segedge.backends.base import Runner


@dataclass(frozen=True)
class ParityReport:
    images: int
    max_abs_diff: float
    mean_abs_diff: float
    argmax_agreement: float
    miou: float
    reference_miou: float

    @property
    def miou_drop(self) -> float:
        """Points (0–100 scale) of mIoU lost against the reference."""
        return round(100.0 * (self.reference_miou - self.miou), 3)

    def as_dict(self) -> dict:
        return {**asdict(self), "miou_drop_points": self.miou_drop}


@dataclass(frozen=True)
class Reference:
    """Torch FP32 logits on the evaluation images, computed once and shared by every stage's check."""

    inputs: np.ndarray  # N×3×H×W float32 network inputs
    masks: np.ndarray  # N×H×W uint8 labels
    logits: np.ndarray  # N×C×H×W float32
    num_classes: int
    ignore_index: int = 255

    @property
    def miou(self) -> float:
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        cm.update(self.masks, self.logits.argmax(1))
        return cm.scores().mean_iou


def reference_from_runner(runner: Runner, inputs: np.ndarray, masks: np.ndarray, num_classes: int) -> Reference:
    with runner:
        logits = np.concatenate([runner.infer(inputs[i : i + 1]) for i in range(len(inputs))])
    return Reference(inputs, masks, logits.astype(np.float32), num_classes)


def compare_to_reference(runner: Runner, reference: Reference) -> ParityReport:
    """Run every reference image through ``runner`` (batch 1, as deployed) and compare."""
    cm = ConfusionMatrix(reference.num_classes, reference.ignore_index)
    max_diff, sum_diff, agree, pixels = 0.0, 0.0, 0, 0
    with runner:
        for i in range(len(reference.inputs)):
            got = runner.infer(reference.inputs[i : i + 1]).astype(np.float32)
            want = reference.logits[i : i + 1]
            if got.shape != want.shape:
                raise ParityError(f"artifact returns logits shaped {got.shape}, the reference {want.shape}")
            diff = np.abs(got - want)
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.mean())
            pred = got.argmax(1)
            agree += int((pred == want.argmax(1)).sum())
            pixels += pred.size
            cm.update(reference.masks[i : i + 1], pred)
    return ParityReport(
        images=len(reference.inputs),
        max_abs_diff=max_diff,
        mean_abs_diff=sum_diff / max(1, len(reference.inputs)),
        argmax_agreement=agree / max(1, pixels),
        miou=cm.scores().mean_iou,
        reference_miou=reference.miou,
    )


def enforce_gate(stage: str, report: ParityReport, gate: ParityGate) -> None:
    """Raise :class:`ParityError` when ``report`` fails ``gate``; the caller then keeps no artifact."""
    problems = []
    if not np.isfinite(report.max_abs_diff):
        problems.append("the artifact returns non-finite logits")
    if report.argmax_agreement < gate.min_argmax_agreement:
        problems.append(
            f"argmax agreement {100 * report.argmax_agreement:.2f} % is below the gate's "
            f"{100 * gate.min_argmax_agreement:.2f} %"
        )
    if gate.max_miou_drop is not None and report.miou_drop > gate.max_miou_drop:
        problems.append(f"mIoU drop {report.miou_drop:.2f} points exceeds the gate's {gate.max_miou_drop:.2f}")
    if problems:
        raise ParityError(
            f"{stage} artifact fails the parity gate against torch FP32 on {report.images} images: "
            + "; ".join(problems)
            + f" (max abs logit diff {report.max_abs_diff:.3g}); no {stage} artifact was kept"
        )
