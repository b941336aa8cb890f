"""Segmentation metrics from one streaming confusion matrix.

A confusion matrix accumulated batch by batch (numpy ``bincount``) gives pixel accuracy, mean IoU and
the rest exactly, at any dataset size, in constant memory. Void pixels (``ignore_index``) count nowhere.

A class absent from both the ground truth and the prediction of the whole evaluated set has an undefined
IoU (0/0): it is reported as NaN and left out of the mean, so that evaluating on a split where a rare
class happens not to occur neither rewards nor punishes the model for it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    iou: tuple[float, ...]  # per class; NaN where the class is absent from target and prediction

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "SegmentationScores":
        m = matrix.astype(np.float64)
        true_pos = np.diag(m)
        per_target = m.sum(axis=1)
        per_pred = m.sum(axis=0)
        union = per_target + per_pred - true_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, true_pos / union, np.nan)
            class_acc = np.where(per_target > 0, true_pos / per_target, np.nan)
        total = m.sum()
        return cls(
            pixel_accuracy=float(true_pos.sum() / total) if total else float("nan"),
            mean_accuracy=_nanmean(class_acc),
            mean_iou=_nanmean(iou),
            iou=tuple(float(v) for v in iou),
        )


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def mean_iou(target: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """mIoU of one set of label maps (a convenience over :class:`ConfusionMatrix`)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(target, prediction)
    return cm.scores().mean_iou
