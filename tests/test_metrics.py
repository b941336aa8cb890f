import math

import numpy as np
import pytest

from segedge.metrics import ConfusionMatrix, SegmentationScores, mean_iou


def test_confusion_matrix_counts_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])  # the 255 pixel is void: its prediction counts nowhere
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    s = cm.scores()
    assert s.pixel_accuracy == pytest.approx(4 / 5)
    # IoU: class0 1/(2+1-1)=0.5, class1 2/(2+3-2)=2/3, class2 1/1
    assert s.iou == pytest.approx((0.5, 2 / 3, 1.0))
    assert s.mean_iou == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert s.mean_accuracy == pytest.approx((0.5 + 1 + 1) / 3)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=(6, 8, 8))
    p = rng.integers(0, 4, size=(6, 8, 8))
    whole = ConfusionMatrix(4)
    whole.update(t, p)
    parts = ConfusionMatrix(4)
    for i in range(6):
        parts.update(t[i], p[i])
    assert (whole.matrix == parts.matrix).all()


def test_class_absent_from_target_and_prediction_is_nan_and_left_out_of_the_mean():
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 1, 0])
    s = SegmentationScores.from_matrix(_cm(t, p, 3))
    assert math.isnan(s.iou[2])
    assert s.mean_iou == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_predicted_but_absent_from_target_counts_as_zero():
    s = SegmentationScores.from_matrix(_cm(np.array([0, 0]), np.array([0, 1]), 2))
    assert s.iou == pytest.approx((0.5, 0.0))


def test_prediction_out_of_range_is_refused():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside 0..1"):
        cm.update(np.array([0, 1]), np.array([0, 5]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        mean_iou(np.zeros((2, 2)), np.zeros((2, 3)), 2)


def _cm(t, p, n):
    cm = ConfusionMatrix(n)
    cm.update(t, p)
    return cm.matrix
