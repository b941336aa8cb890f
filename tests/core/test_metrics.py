import math

import numpy as np
import pytest

from segedge.core.metrics import ConfusionMatrix, SegmentationScores, mean_iou


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


# A hand-made 5-class matrix (rows: ground truth, columns: prediction). Class 3 is predicted but never in
# the ground truth; class 4 is in neither.
#            p0  p1  p2  p3  p4      row sums (GT pixels)
HAND = [[50, 10, 0, 0, 0],  # 60
        [5, 20, 5, 0, 0],  # 30
        [0, 0, 8, 2, 0],  # 10
        [0, 0, 0, 0, 0],  # 0
        [0, 0, 0, 0, 0]]  # 0
# column sums (predicted pixels): 55, 30, 13, 2, 0; total 100; diagonal 50, 20, 8, 0, 0.
# PA    = (50 + 20 + 8) / 100 = 0.78
# acc_i = 50/60, 20/30, 8/10, NaN, NaN          MPA  = (5/6 + 2/3 + 4/5) / 3 = 2.3 / 3
# IoU_i = 50/(60+55-50) = 10/13, 20/(30+30-20) = 1/2, 8/(10+13-8) = 8/15, 0/(0+2-0) = 0, NaN
#         mIoU = (10/13 + 1/2 + 8/15 + 0) / 4
# Dice_i = 2*50/(60+55) = 20/23, 40/60 = 2/3, 16/23, 0/2 = 0, NaN
#         mean Dice = (20/23 + 2/3 + 16/23 + 0) / 4 = 77/138
# FWIoU = (60 * 10/13 + 30 * 1/2 + 10 * 8/15 + 0 * 0) / 100
HAND_IOU = (10 / 13, 1 / 2, 8 / 15, 0.0)
HAND_DICE = (20 / 23, 2 / 3, 16 / 23, 0.0)


def _labels_from_matrix(matrix):
    """Target/prediction pixel lists that produce ``matrix`` exactly (plus void pixels that must not count)."""
    t, p = [], []
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            t += [i] * count
            p += [j] * count
    t += [255] * 7
    p += [3] * 7
    return np.array(t), np.array(p)


def test_every_figure_of_a_hand_computed_matrix():
    target, prediction = _labels_from_matrix(HAND)
    cm = ConfusionMatrix(5)
    cm.update(target, prediction)
    assert cm.matrix.tolist() == HAND
    s = cm.scores()
    assert s.pixel_accuracy == pytest.approx(0.78)
    assert s.class_accuracy[:3] == pytest.approx((5 / 6, 2 / 3, 4 / 5))
    assert math.isnan(s.class_accuracy[3]) and math.isnan(s.class_accuracy[4])
    assert s.mean_accuracy == pytest.approx(2.3 / 3)
    assert s.iou[:4] == pytest.approx(HAND_IOU)
    assert math.isnan(s.iou[4])
    assert s.mean_iou == pytest.approx(sum(HAND_IOU) / 4)
    assert s.dice[:4] == pytest.approx(HAND_DICE)
    assert math.isnan(s.dice[4])
    assert s.mean_dice == pytest.approx(77 / 138)
    assert s.frequency_weighted_iou == pytest.approx((60 * 10 / 13 + 30 / 2 + 10 * 8 / 15) / 100)
    assert s.class_pixels == (60, 30, 10, 0, 0)


def test_dice_is_a_function_of_iou_per_class_but_mean_dice_is_not_of_miou():
    s = SegmentationScores.from_matrix(np.array(HAND))
    for iou, dice in zip(s.iou[:4], s.dice[:4]):
        assert dice == pytest.approx(2 * iou / (1 + iou))
    assert s.mean_dice != pytest.approx(2 * s.mean_iou / (1 + s.mean_iou))


def test_perfect_prediction_scores_one_everywhere():
    s = SegmentationScores.from_matrix(np.diag([3, 4, 5]))
    assert (s.pixel_accuracy, s.mean_accuracy, s.mean_iou, s.mean_dice, s.frequency_weighted_iou) == (1, 1, 1, 1, 1)


def test_empty_matrix_is_nan_not_an_error():
    s = ConfusionMatrix(3).scores()
    assert all(math.isnan(v) for v in (s.pixel_accuracy, s.mean_iou, s.mean_dice, s.frequency_weighted_iou))


def test_as_dict_is_strict_json_with_none_for_nan():
    import json

    d = SegmentationScores.from_matrix(np.array(HAND)).as_dict()
    assert d["iou"][4] is None and d["class_accuracy"][3] is None
    assert d["pixel_accuracy"] == pytest.approx(0.78)
    assert d["class_pixels"] == [60, 30, 10, 0, 0]
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_format_table_renders_per_class_rows_means_and_dashes():
    from segedge.core.metrics import format_table

    names = ["road", "car", "pole", "sign", "rider"]
    table = format_table(SegmentationScores.from_matrix(np.array(HAND)), names)
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [" class    ", "    IoU ", "   Dice ", "    acc ", "  GT pixels "]
    assert lines[1].startswith("|---") and lines[1].endswith(":|")
    cells = lambda line: [c.strip() for c in line.split("|")[1:-1]]  # noqa: E731
    assert cells(lines[2]) == ["road", "76.92", "86.96", "83.33", "60"]
    assert cells(lines[5]) == ["sign", "0.00", "0.00", "—", "0"]  # predicted, never true
    assert cells(lines[6]) == ["rider", "—", "—", "—", "0"]  # neither: not in any mean
    assert cells(lines[7]) == ["**mean**", "45.06", "55.80", "76.67", "100"]
    assert "pixel accuracy 78.00" in table and "frequency-weighted IoU 66.49" in table


def test_format_table_refuses_a_wrong_number_of_class_names():
    from segedge.core.metrics import format_table

    with pytest.raises(ValueError, match="2 class names for scores of 5 classes"):
        format_table(SegmentationScores.from_matrix(np.array(HAND)), ["a", "b"])
