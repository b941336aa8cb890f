"""segedge.verify.crf: DeepLab v1's dense CRF sharpens blurred boundaries, keeps confident ones, checks its inputs,
and says how to install pydensecrf2 when it is missing. Small images only: each refine takes milliseconds."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from segedge.verify.crf import CrfParams, crf_available, refine, refine_batch, require_crf, softmax
from segedge.core.errors import InputSizeError, SegedgeError

NEEDS_CRF = "pydensecrf2 is not installed (the optional dense-CRF extra: pip install \"segedge[crf]\")"


def _two_regions(height: int = 64, width: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark left half and a bright right half split by a sharp vertical edge, with a little sensor noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2:] = 1
    image = np.where(truth[..., None] == 1, 200.0, 50.0) + rng.normal(0.0, 4.0, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _box_blur(planes: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window of each plane of a CxHxW array (edges padded by replication)."""
    pad = size // 2
    padded = np.pad(planes, [(0, 0), (pad, pad), (pad, pad)], mode="edge")
    sums = np.cumsum(np.pad(padded, [(0, 0), (0, 0), (1, 0)]), axis=2)
    rows = (sums[:, :, size:] - sums[:, :, :-size]) / size
    sums = np.cumsum(np.pad(rows, [(0, 0), (1, 0), (0, 0)]), axis=1)
    return (sums[:, size:, :] - sums[:, :-size, :]) / size


def test_defaults_are_deeplab_v1_voc_settings():
    params = CrfParams()
    assert (params.iterations, params.bilateral_weight, params.bilateral_xy, params.bilateral_rgb,
            params.spatial_weight, params.spatial_xy) == (10, 4.0, 121.0, 5.0, 3.0, 3.0)
    assert params.validate() is params


def test_softmax_is_stable_for_huge_logits():
    probabilities = softmax(np.array([[1000.0, -1000.0], [999.0, 0.0]]))
    assert np.isfinite(probabilities).all()
    assert probabilities.sum(axis=0) == pytest.approx([1.0, 1.0])
    assert probabilities[:, 0] == pytest.approx([1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))])


def test_crf_snaps_a_displaced_blurred_boundary_to_the_colour_edge():
    pytest.importorskip("pydensecrf.densecrf", reason=NEEDS_CRF)
    image, truth = _two_regions()
    height, width = truth.shape
    rng = np.random.default_rng(1)
    # The network's boundary sits 6 px right of the real edge and is smooth (logit slope 1/3 per px), as a
    # stride-8 score map upsampled bilinearly would be; plus a little noise.
    column = np.arange(width, dtype=np.float64) - (width // 2 + 6)
    logits = np.stack([np.zeros((height, width)), np.broadcast_to(column / 3.0, (height, width))])
    logits = (logits + rng.normal(0.0, 0.3, logits.shape)).astype(np.float32)

    before = float((logits.argmax(0) == truth).mean())
    refined = refine(image, logits)
    after = float((refined == truth).mean())
    assert refined.shape == truth.shape and refined.dtype == np.int64
    assert before < 0.94  # the 6-px shift is wrong on ~6/96 of each row
    assert after >= 0.99, f"CRF pixel accuracy {after:.4f} (argmax {before:.4f})"
    assert after - before >= 0.04, f"CRF pixel accuracy {after:.4f} vs argmax {before:.4f}"


def test_confident_correct_prediction_is_kept():
    pytest.importorskip("pydensecrf.densecrf", reason=NEEDS_CRF)
    image, truth = _two_regions(seed=2)
    logits = np.stack([np.where(truth == 0, 8.0, -8.0), np.where(truth == 1, 8.0, -8.0)]).astype(np.float32)
    refined = refine(image, logits[None])  # a batch of one is squeezed
    assert float((refined == truth).mean()) >= 0.99


def test_refine_batch_matches_refine_one_by_one():
    pytest.importorskip("pydensecrf.densecrf", reason=NEEDS_CRF)
    image_a, truth_a = _two_regions(32, 48, seed=3)
    image_b, truth_b = _two_regions(32, 48, seed=4)
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 1.0, (2, 3, 32, 48)).astype(np.float32)
    params = CrfParams(iterations=3)
    batch = refine_batch(np.stack([image_a, image_b]), logits, params)
    assert batch.shape == (2, 32, 48)
    np.testing.assert_array_equal(batch[0], refine(image_a, logits[0], params))
    np.testing.assert_array_equal(batch[1], refine(image_b, logits[1], params))
    assert refine_batch(np.zeros((0, 32, 48, 3), np.uint8), np.zeros((0, 3, 32, 48), np.float32)).shape == (0, 32, 48)


def test_dense_crf_raises_miou_on_synthetic_scenes_with_blurred_logits():
    """Street scenes of the repo's own data set, "network logits" = one-hot truth blurred by a 9x9 box + noise.

    The stds are DeepLab's VOC values scaled to this 128-px-wide image (VOC images are ~500 px wide, so
    121 -> 30 and 3 -> 1): with the VOC values unchanged the bilateral kernel spans the whole image, becomes a
    colour-only clustering of textured surfaces whose colours overlap across classes, and the gain over the
    argmax is within noise (from -1.2 to +1 mIoU point depending on the noise seed and logit scale).
    """
    pytest.importorskip("pydensecrf.densecrf", reason=NEEDS_CRF)
    from segedge.data.synthetic import NUM_CLASSES, SyntheticScenes
    from segedge.core.metrics import ConfusionMatrix

    images, masks = SyntheticScenes("val", 2, size=(64, 128)).batch(0, 2)
    rng = np.random.default_rng(0)
    params = CrfParams(bilateral_xy=30.0, spatial_xy=1.0)
    raw, refined = ConfusionMatrix(NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    for image, mask in zip(images, masks):
        labels = np.where(mask == 255, 0, mask)  # void pixels score nowhere; any class will do for the logits
        onehot = (np.arange(NUM_CLASSES)[:, None, None] == labels).astype(np.float64)
        logits = (4.0 * _box_blur(onehot, 9) + rng.normal(0.0, 0.05, onehot.shape)).astype(np.float32)
        raw.update(mask, logits.argmax(0))
        refined.update(mask, refine(image, logits, params))
    before, after = raw.scores().mean_iou, refined.scores().mean_iou
    # measured: 0.6700 -> 0.6876 (and +1.6 to +2.1 points over four noise seeds)
    assert after - before >= 0.01, f"CRF mIoU {after:.4f} vs argmax {before:.4f}"


def _image_and_logits(height: int = 8, width: int = 12, classes: int = 3):
    return np.zeros((height, width, 3), np.uint8), np.zeros((classes, height, width), np.float32)


@pytest.mark.parametrize(
    ("image", "logits", "message"),
    [
        (np.zeros((8, 12, 3), np.uint8), np.zeros((3, 8, 10), np.float32),
         "the CRF logits are 8x10 (HxW) but the image is 8x12"),
        (np.zeros((8, 12, 3), np.float32), np.zeros((3, 8, 12), np.float32),
         "the CRF image must be uint8 (0-255 RGB), got dtype float32"),
        (np.zeros((8, 12), np.uint8), np.zeros((3, 8, 12), np.float32),
         "the CRF image must be HxWx3 RGB, got shape (8, 12)"),
        (np.zeros((8, 12, 3), np.uint8), np.zeros((1, 8, 12), np.float32),
         "the CRF needs logits of at least 2 classes, got 1"),
        (np.zeros((8, 12, 3), np.uint8), np.zeros((3, 8, 12), np.int64),
         "the CRF logits must be floating point, got dtype int64"),
        (np.zeros((8, 12, 3), np.uint8), np.zeros((8, 12), np.float32),
         "the CRF logits must be CxHxW (or 1xCxHxW), got shape (8, 12)"),
        (np.zeros((8, 12, 3), np.uint8), np.zeros((2, 3, 8, 12), np.float32),
         "got a batch of 2: use refine_batch"),
        (np.zeros((8, 12, 3), np.uint8), np.full((3, 8, 12), np.nan, np.float32),
         "the CRF logits hold NaN or infinite values"),
    ],
    ids=["hw-mismatch", "image-dtype", "image-shape", "one-class", "logits-dtype", "logits-shape", "batch",
         "nan"],
)
def test_bad_inputs_are_named(image, logits, message):
    # inputs are checked before the library is needed: these run with or without pydensecrf2
    with pytest.raises(InputSizeError) as info:
        refine(image, logits)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (CrfParams(iterations=0), "CRF iterations must be an integer >= 1, got 0"),
        (CrfParams(iterations=2.5), "CRF iterations must be an integer >= 1, got 2.5"),
        (CrfParams(bilateral_weight=0.0), "CRF bilateral_weight must be a positive finite number, got 0.0"),
        (CrfParams(bilateral_xy=-1.0), "CRF bilateral_xy must be a positive finite number, got -1.0"),
        (CrfParams(bilateral_rgb=float("nan")), "CRF bilateral_rgb must be a positive finite number, got nan"),
        (CrfParams(spatial_weight=-3.0), "CRF spatial_weight must be a positive finite number, got -3.0"),
        (CrfParams(spatial_xy=float("inf")), "CRF spatial_xy must be a positive finite number, got inf"),
    ],
)
def test_bad_params_are_named(params, message):
    with pytest.raises(InputSizeError, match="^" + re.escape(message) + "$"):
        params.validate()
    image, logits = _image_and_logits()
    with pytest.raises(InputSizeError, match="CRF"):
        refine(image, logits, params)
    with pytest.raises(InputSizeError, match="CRF"):
        refine_batch(image[None], logits[None], params)


def test_refine_batch_checks_its_batch():
    image, logits = _image_and_logits()
    with pytest.raises(InputSizeError, match="refine_batch got 2 images but 1 logit maps"):
        refine_batch(np.stack([image, image]), logits[None])
    with pytest.raises(InputSizeError, match=r"refine_batch images must be NxHxWx3, got shape \(8, 12, 3\)"):
        refine_batch(image, logits[None])
    with pytest.raises(InputSizeError, match=r"refine_batch logits must be NxCxHxW, got shape \(3, 8, 12\)"):
        refine_batch(image[None], logits)


def test_missing_library_names_the_package_and_the_extra(monkeypatch):
    # None in sys.modules makes `import pydensecrf...` raise ImportError, installed or not
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.utils", None)
    image, truth = _two_regions(16, 24)
    logits = np.stack([truth == 0, truth == 1]).astype(np.float32)

    assert crf_available() is False
    for call in (lambda: refine(image, logits), require_crf):
        with pytest.raises(SegedgeError) as info:
            call()
        message = str(info.value)
        assert "pydensecrf2" in message and 'pip install "segedge[crf]"' in message
        assert "\n" not in message
        assert not isinstance(info.value, InputSizeError)  # a missing extra is not a bad input


def test_crf_available_when_installed():
    pytest.importorskip("pydensecrf.densecrf", reason=NEEDS_CRF)
    assert crf_available() is True
    require_crf()
