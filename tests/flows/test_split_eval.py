"""Joining a split evaluation's parts (``segedge.flows.bench.joined_split_row``): the parts are joined only when
together they score every image once, on the model, data and artifact the row was timed with; the joined row's
status follows the interval rule. The parts here are hand-made; the Ray run is in test_fleet."""

from __future__ import annotations

import numpy as np
import pytest

from segedge.core.errors import SegedgeError
from segedge.flows.bench import joined_split_row
from segedge.verify.compare import ImageStats


def stats(images: int, wrong: int) -> ImageStats:
    """``images`` 2-class images of 10 labelled pixels; the runner gets ``wrong`` pixels of each wrong."""
    reference = np.tile(np.array([[5, 0], [0, 5]]), (images, 1, 1))
    runner = np.tile(np.array([[5 - wrong, wrong], [0, 5]]), (images, 1, 1))
    ones = np.ones(images)
    return ImageStats(runner, reference, ones * 0.5, ones * 0.1, (10 - wrong) * ones.astype(int), 10 * ones.astype(int))


def timing(count=4, tolerance=1.0):
    scored = {"data_fingerprint": "d" * 16, "model_fingerprint": "m" * 16, "count": count}
    row = {"model": "s4", "precision": "int8", "tolerance": tolerance, "artifact_sha256": "a" * 64,
           "variant": "INT8 graph: segedge x86", "median_ms": 1.0, "eval_images": None}
    return {"row": row, **scored}


def part(start, stop, wrong, **changed):
    scored = {"data_fingerprint": "d" * 16, "model_fingerprint": "m" * 16, "count": 4, "artifact_sha256": "a" * 64}
    return {"stats": stats(stop - start, wrong), "images": [start, stop], **scored, **changed}


def test_the_joined_row_has_the_accuracy_of_all_images_and_the_status_of_its_interval():
    row = joined_split_row(timing(), [part(2, 4, 0), part(0, 2, 0)], ["b", "a"])
    assert row["miou"] == 1.0 and row["miou_drop"] == 0.0 and row["eval_images"] == 4 and row["status"] == "ok"
    assert row["variant"] == "INT8 graph: segedge x86; accuracy: 4 images split over 2 parts on a, b"
    # every pixel-class 0 image loses 3 of its 5 pixels: IoU 2/5 and 5/8 → mIoU 51.25, a 48.75-point drop
    row = joined_split_row(timing(), [part(0, 2, 3), part(2, 4, 3)], ["a", "b"])
    assert row["miou"] == pytest.approx((2 / 5 + 5 / 8) / 2) and row["status"] == "drop"
    assert row["argmax_agreement"] == pytest.approx(0.7)


@pytest.mark.parametrize("parts, refused", [
    ([part(0, 2, 0)], "not each of the 4 once"),  # a slice missing
    ([part(0, 3, 0), part(2, 4, 0)], "not each of the 4 once"),  # an image twice
    ([part(0, 2, 0), part(2, 4, 0, data_fingerprint="e" * 16)], "on another data"),
    ([part(0, 2, 0), part(2, 4, 0, model_fingerprint="n" * 16)], "on another model"),
    ([part(0, 2, 0), part(2, 4, 0, artifact_sha256="b" * 64)], "another int8 artifact"),
])
def test_parts_that_do_not_score_the_rows_images_model_and_artifact_are_refused(parts, refused):
    with pytest.raises(SegedgeError, match=refused):
        joined_split_row(timing(), parts, ["a", "b"][: len(parts)])


def test_a_refusal_names_the_device_that_scored_the_odd_part():
    with pytest.raises(SegedgeError, match="^b scored s4 int8 on another data"):
        joined_split_row(timing(), [part(2, 4, 0, data_fingerprint="e" * 16), part(0, 2, 0)], ["b", "a"])
