"""The drop's 95 % paired bootstrap interval, checked against figures computed here without segedge: a hand-written
mIoU, an unpaired bootstrap, and simulated images whose true drop is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from segedge.verify.interval import DropInterval, paired_bootstrap_drop


def miou_points(cm: np.ndarray) -> float:
    """mIoU (0–100) of one K×K matrix (rows: label, columns: prediction), classes never seen left out; no segedge."""
    ious = []
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        union = cm[c, :].sum() + cm[:, c].sum() - tp
        if union > 0:
            ious.append(tp / union)
    return 100.0 * float(np.mean(ious))


# simulated images: two classes, each image with its own difficulty -------------------------------------------
#
# Image i has n_i background and 2000 - n_i foreground pixels (n_i uniform in 200..1800). The reference labels a
# fraction a_i of each class right (a_i uniform in 0.60..0.95, how hard the image is) and calls the rest the other
# class; the runner gets a_i - e_i right (e_i uniform in 0..0.04). The expected matrix of an image is then
# symmetric with E[a] on the diagonal, so each class's IoU over many images is E[a] / (E[a] + 2 (1 - E[a])) and the
# true drop is known exactly.

A_LOW, A_HIGH, E_HIGH = 0.60, 0.95, 0.04


def iou_of_accuracy(a: float) -> float:
    return a / (a + 2 * (1 - a))


TRUE_DROP = 100 * (iou_of_accuracy((A_LOW + A_HIGH) / 2) - iou_of_accuracy((A_LOW + A_HIGH) / 2 - E_HIGH / 2))


def simulated(images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(runner, reference) per-image confusion matrices, N×2×2 each, from the model above."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(200, 1800, images)
    counts = np.stack([background, 2000 - background], axis=1)  # N×2 pixels per class
    a = rng.uniform(A_LOW, A_HIGH, images)
    e = rng.uniform(0, E_HIGH, images)

    def matrices(right: np.ndarray) -> np.ndarray:
        cm = np.empty((images, 2, 2))
        for c in (0, 1):
            cm[:, c, c] = counts[:, c] * right
            cm[:, c, 1 - c] = counts[:, c] * (1 - right)
        return cm

    return matrices(a - e), matrices(a)


def unpaired_interval(runner: np.ndarray, reference: np.ndarray, resamples: int = 1000, seed: int = 1) -> tuple[float, float]:
    """The 95 % percentile interval when the two sides are resampled independently (what pairing avoids)."""
    rng = np.random.default_rng(seed)
    n = len(runner)
    drops = [miou_points(reference[rng.integers(0, n, n)].sum(0)) - miou_points(runner[rng.integers(0, n, n)].sum(0))
             for _ in range(resamples)]
    low, high = np.percentile(drops, [2.5, 97.5])
    return float(low), float(high)


def test_the_drop_is_the_difference_of_the_mious_of_the_summed_matrices():
    runner, reference = simulated(40, seed=3)
    interval = paired_bootstrap_drop(runner, reference)
    want = miou_points(reference.sum(0)) - miou_points(runner.sum(0))
    assert interval.drop == pytest.approx(want, abs=1e-3)
    assert interval.images == 40 and interval.low < interval.drop < interval.high


def test_pairing_makes_the_interval_much_narrower_than_resampling_each_side_alone():
    """Images differ far more from one another (a_i) than the runner differs from the reference on one image
    (e_i): resampled in pairs, the difficulty cancels; resampled apart, it swamps the drop."""
    runner, reference = simulated(60, seed=5)
    paired = paired_bootstrap_drop(runner, reference, seed=0)
    low, high = unpaired_interval(runner, reference)
    assert paired.high - paired.low > 0
    assert paired.high - paired.low < 0.4 * (high - low), (paired, (low, high))
    assert paired.low > 0  # the runner is worse on every image: the paired interval says so; unpaired cannot
    assert low < 0


def test_about_95_percent_of_intervals_contain_the_true_drop():
    seeds = 300
    covered = 0
    for seed in range(seeds):
        runner, reference = simulated(50, seed=1000 + seed)
        interval = paired_bootstrap_drop(runner, reference, resamples=500, seed=seed)
        covered += interval.low <= TRUE_DROP <= interval.high
    rate = covered / seeds
    # a binomial with p = 0.95 over 300 draws: standard deviation 1.3 points; a percentile bootstrap at 50 images
    # undercovers a little. An interval collapsed to its point never covers; an unpaired one always does.
    assert 0.88 <= rate <= 0.985, f"{covered} of {seeds} intervals contain the true drop {TRUE_DROP:.3f}"


def test_the_interval_narrows_as_images_are_added():
    def mean_width(images: int) -> float:
        widths = []
        for seed in range(8):
            interval = paired_bootstrap_drop(*simulated(images, seed=seed), seed=seed)
            widths.append(interval.high - interval.low)
        return float(np.mean(widths))

    w25, w100, w400 = mean_width(25), mean_width(100), mean_width(400)
    assert w25 > 0
    # the width of a mean's interval goes as 1/sqrt(N): half for four times the images
    assert 0.35 < w100 / w25 < 0.7 and 0.35 < w400 / w100 < 0.7, (w25, w100, w400)


# the ✅ / ❎ / ❔ rule: ok when the whole interval is within the tolerance, drop when the whole interval is beyond

@pytest.mark.parametrize("low, high, status", [
    (-0.3, 0.4, "ok"),
    (0.2, 1.0, "ok"),            # the upper end at the tolerance: within
    (0.2, 1.001, "uncertain"),   # just past it
    (1.0, 2.0, "uncertain"),     # the lower end at the tolerance: not wholly beyond
    (1.001, 2.0, "drop"),
    (-1.0, 3.0, "uncertain"),
])
def test_status_from_the_interval_at_its_boundaries(low, high, status):
    point = (low + high) / 2
    assert DropInterval(point, low, high, 10, 1000).status(1.0) == status


# the caller: a runner's drop on a reference's images is paired image by image -------------------------------

class _ReplayRunner:
    """Returns prepared class scores: input i (an image filled with the value i) gets the i-th of them."""

    backend = "replay"

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.logits[batch[:, 0, 0, 0].astype(int)]


def _one_hot_scores(classes: np.ndarray) -> np.ndarray:
    return np.stack([(classes == 0), (classes == 1)], axis=1).astype(np.float32)


def test_a_runners_interval_pairs_each_image_with_the_references_same_image():
    """Images of very different difficulty; on each, the runner mislabels a further 4 % of the pixels. The row's
    drop is the hand-computed mIoU difference, and its interval is the narrow paired one, not the unpaired one."""
    from segedge.verify.compare import Reference, accuracy_on_active_runner

    rng = np.random.default_rng(7)
    n, h, w = 40, 16, 16
    masks = (rng.random((n, h, w)) < rng.uniform(0.2, 0.8, (n, 1, 1))).astype(np.uint8)
    wrong_ref = rng.random((n, h, w)) < rng.uniform(0.02, 0.35, (n, 1, 1))  # how hard each image is
    wrong_run = wrong_ref | (rng.random((n, h, w)) < 0.04)
    ref_pred, run_pred = np.where(wrong_ref, 1 - masks, masks), np.where(wrong_run, 1 - masks, masks)
    inputs = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 3, h, w)).copy()
    reference = Reference(inputs, masks, _one_hot_scores(ref_pred), num_classes=2)
    accuracy = accuracy_on_active_runner(_ReplayRunner(_one_hot_scores(run_pred)), reference)

    def matrix(label, pred):
        return np.array([[np.sum((label == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)], dtype=np.float64)

    run_cms = np.stack([matrix(m, p) for m, p in zip(masks, run_pred)])
    ref_cms = np.stack([matrix(m, p) for m, p in zip(masks, ref_pred)])
    want = miou_points(ref_cms.sum(0)) - miou_points(run_cms.sum(0))
    interval = accuracy.interval
    assert want > 1 and interval.drop == pytest.approx(want, abs=1e-3)
    assert accuracy.report.miou_drop == pytest.approx(want, abs=1e-3)
    low, high = unpaired_interval(run_cms, ref_cms)
    assert interval.low <= interval.drop <= interval.high and interval.low > 0
    assert interval.high - interval.low < 0.5 * (high - low), (interval, (low, high))
