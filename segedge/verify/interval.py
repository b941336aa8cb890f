"""How sure a drop is: a 95 % paired bootstrap interval over images.

A row's mIoU drop is a difference of two mIoUs on the same images, so images are resampled *in pairs* (the
runner's and the reference's confusion matrix of one image go together): what varies between images cancels
out, and what remains is the uncertainty of the difference itself. mIoU is not a mean over images, so each
resample sums the chosen images' confusion matrices and computes mIoU from the sum, exactly as the point
estimate is computed (classes absent from target and prediction are left out, :mod:`segedge.core.metrics`).

A row is ✅ when the whole interval is within the tolerance, ❎ when the whole interval is beyond it, and
"uncertain" when it straddles: then more evaluation images, not a guess, decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95


def mean_iou_of(matrices: np.ndarray) -> np.ndarray:
    """mIoU (0–1) of each confusion matrix in a stack R×K×K, NaN-classes left out as in SegmentationScores."""
    m = np.asarray(matrices, dtype=np.float64)
    true_pos = np.diagonal(m, axis1=-2, axis2=-1)
    union = m.sum(axis=-1) + m.sum(axis=-2) - true_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_pos / np.where(union > 0, union, 1), np.nan)
    scored = np.isfinite(iou).sum(axis=-1)
    return np.where(scored > 0, np.nansum(iou, axis=-1) / np.maximum(scored, 1), np.nan)


@dataclass(frozen=True)
class DropInterval:
    drop: float  # points, reference minus runner, on all images
    low: float
    high: float
    images: int
    resamples: int

    def status(self, tolerance: float) -> str:
        if self.high <= tolerance:
            return "ok"
        if self.low > tolerance:
            return "drop"
        return "uncertain"

    def as_dict(self) -> dict:
        return {"drop": self.drop, "low": self.low, "high": self.high, "images": self.images, "resamples": self.resamples}


def paired_bootstrap_drop(runner_cms: np.ndarray, reference_cms: np.ndarray, resamples: int = RESAMPLES,
                          confidence: float = CONFIDENCE, seed: int = 0) -> DropInterval:
    """Per-image confusion matrices (N×K×K) of the runner and of the reference → the drop and its interval."""
    runner_cms = np.asarray(runner_cms, dtype=np.float64)
    reference_cms = np.asarray(reference_cms, dtype=np.float64)
    if runner_cms.shape != reference_cms.shape or runner_cms.ndim != 3:
        raise ValueError(f"paired N×K×K confusion matrices expected, got {runner_cms.shape} and {reference_cms.shape}")
    n, k, _ = runner_cms.shape
    drop = float(100 * (mean_iou_of(reference_cms.sum(0)) - mean_iou_of(runner_cms.sum(0))))
    if n < 2:
        return DropInterval(round(drop, 3), float("-inf"), float("inf"), n, 0)
    # keep the work bounded for many classes: R × N × K² multiply-adds
    resamples = max(200, min(resamples, int(4e9 // max(1, n * k * k))))
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, n), dtype=np.float64)
    picks = rng.integers(0, n, size=(resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
    flat_run, flat_ref = runner_cms.reshape(n, k * k), reference_cms.reshape(n, k * k)
    drops = 100 * (mean_iou_of((counts @ flat_ref).reshape(resamples, k, k))
                   - mean_iou_of((counts @ flat_run).reshape(resamples, k, k)))
    drops = drops[np.isfinite(drops)]
    tail = 100 * (1 - confidence) / 2
    low, high = (np.percentile(drops, [tail, 100 - tail]) if drops.size else (float("-inf"), float("inf")))
    return DropInterval(round(drop, 3), round(float(low), 3), round(float(high), 3), n, resamples)


def per_image_matrix(target: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """One image's K×K confusion matrix (void pixels and labels outside 0..K-1 count nowhere)."""
    t = np.asarray(target).reshape(-1).astype(np.int64)
    p = np.asarray(prediction).reshape(-1).astype(np.int64)
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    t, p = t[keep], p[keep]
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
