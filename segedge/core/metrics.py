"""Segmentation metrics from one streaming confusion matrix.

A confusion matrix accumulated batch by batch (numpy ``bincount``) gives every figure below exactly, at any
dataset size, in constant memory. Void pixels (``ignore_index``) count nowhere. With ``p[i, j]`` the pixels of
true class ``i`` predicted as ``j`` (the seed's notation):

- pixel accuracy  PA    = sum_i p_ii / sum_ij p_ij
- class accuracy  acc_i = p_ii / sum_j p_ij                  (recall of class i); MPA is their mean
- IoU_i                 = p_ii / (sum_j p_ij + sum_j p_ji - p_ii); mIoU is their mean
- Dice_i (= F1_i)       = 2 p_ii / (sum_j p_ij + sum_j p_ji);     mean Dice is their mean
- FWIoU                 = sum_i (sum_j p_ij) IoU_i / sum_ij p_ij

**Classes with nothing to score.** A class absent from both the ground truth and the prediction of the whole
evaluated set has an undefined IoU and Dice (0/0): they are NaN for that class and left out of mIoU and mean
Dice, so that evaluating on a split where a rare class happens not to occur neither rewards nor punishes the
model for it. A class predicted but absent from the ground truth scores IoU = Dice = 0 (every predicted pixel
is a false positive). Class accuracy is a ratio over ground-truth pixels only, so it is NaN for *every* class
absent from the ground truth (predicted or not) and MPA averages the others; the seed's ``1/(k+1)`` divides by
all classes, which only agrees when every class occurs. FWIoU weights each class by its ground-truth pixel
share, so absent classes weigh 0 and it needs no such rule. With no scored pixel at all, every figure is NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> None:
        """Add a batch of label maps (any shape, same for both)."""
        target = np.asarray(target)
        prediction = np.asarray(prediction)
        if target.shape != prediction.shape:
            raise ValueError(f"target shape {target.shape} != prediction shape {prediction.shape}")
        t = target.reshape(-1).astype(np.int64)
        p = prediction.reshape(-1).astype(np.int64)
        keep = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
        t, p = t[keep], p[keep]
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"prediction holds labels outside 0..{self.num_classes - 1}")
        n = self.num_classes
        self.matrix += np.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def scores(self) -> "SegmentationScores":
        return SegmentationScores.from_matrix(self.matrix)


@dataclass(frozen=True)
class SegmentationScores:
    """Every figure of one confusion matrix; per-class tuples are NaN where the module docstring says."""

    pixel_accuracy: float
    mean_accuracy: float  # MPA
    mean_iou: float
    iou: tuple[float, ...]  # per class; NaN where the class is absent from target and prediction
    frequency_weighted_iou: float
    class_accuracy: tuple[float, ...]  # per class; NaN where the class is absent from the target
    dice: tuple[float, ...]  # per class Dice = F1; NaN where the class is absent from target and prediction
    mean_dice: float
    class_pixels: tuple[int, ...]  # ground-truth pixels per class (the FWIoU weights, before normalising)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "SegmentationScores":
        m = np.asarray(matrix).astype(np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"a confusion matrix is square, got shape {m.shape}")
        true_pos = np.diag(m)
        per_target = m.sum(axis=1)
        per_pred = m.sum(axis=0)
        union = per_target + per_pred - true_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, true_pos / union, np.nan)
            class_acc = np.where(per_target > 0, true_pos / per_target, np.nan)
            dice = np.where(union > 0, 2 * true_pos / (per_target + per_pred), np.nan)
        total = m.sum()
        present = per_target > 0  # a class in the ground truth always has union > 0, so its IoU is a number
        return cls(
            pixel_accuracy=float(true_pos.sum() / total) if total else math.nan,
            mean_accuracy=_nanmean(class_acc),
            mean_iou=_nanmean(iou),
            iou=_floats(iou),
            frequency_weighted_iou=float((per_target[present] * iou[present]).sum() / total) if total else math.nan,
            class_accuracy=_floats(class_acc),
            dice=_floats(dice),
            mean_dice=_nanmean(dice),
            class_pixels=tuple(int(v) for v in per_target),
        )

    @property
    def num_classes(self) -> int:
        return len(self.iou)

    def as_dict(self) -> dict:
        """Plain JSON-ready dict: tuples become lists and NaN becomes None (strict JSON has no NaN)."""

        def clean(value):
            if isinstance(value, (tuple, list)):
                return [clean(v) for v in value]
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        return {key: clean(value) for key, value in asdict(self).items()}


def format_table(scores: SegmentationScores, class_names: Sequence[str]) -> str:
    """Per-class IoU / Dice / accuracy as a Markdown table (percent), a mean row, then PA and FWIoU.

    A dash marks a NaN: the class has nothing to score (see the module docstring) and is left out of the mean.
    """
    if len(class_names) != scores.num_classes:
        raise ValueError(f"{len(class_names)} class names for scores of {scores.num_classes} classes")
    pct = lambda v: "—" if math.isnan(v) else f"{100 * v:.2f}"  # noqa: E731
    name_width = max([len("class"), len("**mean**")] + [len(str(n)) for n in class_names])
    header = f"| {'class':<{name_width}} | {'IoU':>6} | {'Dice':>6} | {'acc':>6} | {'GT pixels':>10} |"
    rule = f"|{'-' * (name_width + 2)}|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 11}:|"
    lines = [header, rule]
    for name, iou, dice, acc, pixels in zip(
        class_names, scores.iou, scores.dice, scores.class_accuracy, scores.class_pixels
    ):
        lines.append(f"| {name:<{name_width}} | {pct(iou):>6} | {pct(dice):>6} | {pct(acc):>6} | {pixels:>10} |")
    total = sum(scores.class_pixels)
    lines.append(
        f"| {'**mean**':<{name_width}} | {pct(scores.mean_iou):>6} | {pct(scores.mean_dice):>6} "
        f"| {pct(scores.mean_accuracy):>6} | {total:>10} |"
    )
    lines.append("")
    lines.append(
        f"figures in %; pixel accuracy {pct(scores.pixel_accuracy)} · "
        f"frequency-weighted IoU {pct(scores.frequency_weighted_iou)}"
        + (" · — : class absent from ground truth (and, for IoU/Dice, from prediction); not in the mean"
           if any(math.isnan(v) for v in scores.iou + scores.class_accuracy) else "")
    )
    return "\n".join(lines)


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def mean_iou(target: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """mIoU of one set of label maps (a convenience over :class:`ConfusionMatrix`)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(target, prediction)
    return cm.scores().mean_iou
