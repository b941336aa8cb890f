"""The export's run check: exact enough to catch a broken graph, tolerant of a max-pool switch that flips on a tie."""
import numpy as np
import pytest

from segedge.core.errors import ArtifactError
from segedge.graph.export import RUN_CHECK_OUTLIER_SHARE, _localized_diff


def _logits(seed: int = 0, shape=(1, 4, 64, 128)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3


def test_a_few_pixels_off_pass_and_are_reported():
    want = _logits()
    got = want + 1e-6
    got[0, :, 5, 7] += 0.5  # one tied switch routed elsewhere: one pixel differs in every class
    got[0, 2, 40, 100] -= 0.5
    diff, share = _localized_diff(got, want, (64, 128))
    assert diff == pytest.approx(0.5, rel=1e-3)
    assert share == pytest.approx(2 / (64 * 128), rel=1e-3)


def test_a_graph_off_on_many_pixels_fails():
    want = _logits()
    got = want.copy()
    rows = int(np.ceil(RUN_CHECK_OUTLIER_SHARE * 64)) + 1  # a band of whole rows, over the share
    got[0, 1, :rows, :] += 0.5
    with pytest.raises(ArtifactError, match=r"differs from torch at input 64x128 on .* % of the pixels"):
        _localized_diff(got, want, (64, 128))


def test_a_baked_size_differs_everywhere_and_fails():
    want = _logits()
    got = _logits(seed=1)
    with pytest.raises(ArtifactError, match="a size baked into the graph"):
        _localized_diff(got, want, (64, 128))


def test_a_graph_within_tolerance_has_no_outliers():
    want = _logits()
    diff, share = _localized_diff(want + 1e-5, want, (64, 128))
    assert share == 0.0 and diff == pytest.approx(1e-5, abs=1e-6)
