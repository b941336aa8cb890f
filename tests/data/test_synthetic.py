"""The synthetic street scenes: deterministic, split-safe, any size, and hard enough to be worth
training and calibrating on (long-tailed classes, thin structures, colours that overlap).

Statistics are taken over 30 scenes at 128x256 rendered once per module (about 0.2 s).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from segedge.data.synthetic import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    SPLITS,
    SyntheticScenes,
    render_scene,
    scene_seed,
)
from segedge.core.errors import InputSizeError

ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON, POLE, SIGN, TERRAIN = range(NUM_CLASSES)
HEIGHT, WIDTH = 128, 256


@pytest.fixture(scope="module")
def scenes() -> tuple[np.ndarray, np.ndarray]:
    return SyntheticScenes("train", 30, (HEIGHT, WIDTH)).batch(0, 30)


@pytest.fixture(scope="module")
def pixel_share(scenes: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Fraction of all pixels per label value 0..255."""
    _, masks = scenes
    return np.bincount(masks.ravel(), minlength=256) / masks.size


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def horizontal_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def test_public_constants() -> None:
    assert CLASS_NAMES == (
        "road", "sidewalk", "building", "sky", "vegetation",
        "car", "person", "pole", "traffic_sign", "terrain",
    )
    assert NUM_CLASSES == 10 and IGNORE_INDEX == 255
    assert SPLITS == ("train", "calib", "val")


def test_same_seed_gives_identical_bytes_and_different_seeds_differ() -> None:
    image, mask = render_scene(7, 64, 128)
    again_image, again_mask = render_scene(7, 64, 128)
    assert digest(image) == digest(again_image) and digest(mask) == digest(again_mask)
    other_image, other_mask = render_scene(8, 64, 128)
    assert digest(image) != digest(other_image)
    assert digest(mask) != digest(other_mask)


@pytest.mark.parametrize("size", [(32, 32), (37, 91), (91, 37), (64, 128), (33, 250)])
def test_shapes_dtypes_and_label_values_at_any_size(size: tuple[int, int]) -> None:
    height, width = size
    allowed = set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    for seed in range(4):
        image, mask = render_scene(seed, height, width)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= allowed


def test_geometry_scales_with_the_image() -> None:
    """Geometry is in fractions of H and W: doubling the size shows the same street."""
    for seed in range(5):
        _, small = render_scene(seed, 64, 128)
        _, large = render_scene(seed, 128, 256)
        assert (large[::2, ::2] == small).mean() > 0.95


def test_dataset_items_and_batches_are_the_rendered_scenes() -> None:
    ds = SyntheticScenes("val", 5, (48, 80), seed=3)
    assert len(ds) == 5
    image, mask = ds[2]
    expected_image, expected_mask = render_scene(scene_seed("val", 2, seed=3), 48, 80)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(ds[-1][0], ds[4][0])
    images, masks = ds.batch(1, 3)
    assert images.shape == (3, 48, 80, 3) and masks.shape == (3, 48, 80)
    np.testing.assert_array_equal(images[1], image)
    np.testing.assert_array_equal(masks[1], mask)
    assert ds.batch(5, 0)[0].shape == (0, 48, 80, 3)


def test_splits_never_share_a_seed_or_an_image() -> None:
    for base in (0, 1, 12345):
        seeds = [scene_seed(split, i, base) for split in SPLITS for i in range(300)]
        assert len(set(seeds)) == len(seeds)
    # The seed mix is a bijection, so this holds at any index, not just small ones.
    far = [scene_seed(split, i, 0) for split in SPLITS for i in (2**40, 2**40 + 1, 2**62 - 1)]
    assert len(set(far)) == len(far)
    assert scene_seed("train", 0, 0) != scene_seed("train", 0, 1)

    hashes = {
        split: {digest(SyntheticScenes(split, 30, (32, 64))[i][0]) for i in range(30)}
        for split in SPLITS
    }
    assert all(len(h) == 30 for h in hashes.values())
    assert not hashes["train"] & hashes["calib"]
    assert not hashes["train"] & hashes["val"]
    assert not hashes["calib"] & hashes["val"]


def test_every_class_appears_and_ignore_is_rare(pixel_share: np.ndarray) -> None:
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if pixel_share[c] == 0]
    assert not missing
    assert 0 < pixel_share[IGNORE_INDEX] < 0.02
    assert pixel_share[NUM_CLASSES:IGNORE_INDEX].sum() == 0


def test_class_frequencies_are_long_tailed(pixel_share: np.ndarray) -> None:
    assert pixel_share[[ROAD, BUILDING, SKY]].sum() > 0.5
    for rare in (POLE, SIGN, PERSON):
        assert pixel_share[rare] < 0.05, CLASS_NAMES[rare]
        assert pixel_share[rare] < pixel_share[ROAD] / 10, CLASS_NAMES[rare]


def test_layout_has_context(scenes: tuple[np.ndarray, np.ndarray]) -> None:
    """Sky above, road below: position is informative, as in real street scenes."""
    _, masks = scenes
    assert not (masks[:, : HEIGHT // 4] == ROAD).any()
    assert not (masks[:, HEIGHT // 2 + 1 :] == SKY).any()
    assert (masks[:, 0] == SKY).mean() > 0.8
    assert (masks[:, -1] == ROAD).mean() > 0.6


def test_thin_vertical_structures_exist(scenes: tuple[np.ndarray, np.ndarray]) -> None:
    """Some pole is at most 3 px wide over at least 8 consecutive rows: a real thin structure,
    not the corner of a thick one."""
    _, masks = scenes
    found = False
    for mask in masks:
        thin = np.zeros(mask.shape, dtype=bool)
        for y, row in enumerate(mask == POLE):
            for start, length in horizontal_runs(row):
                if length <= 3:
                    thin[y, start : start + length] = True
        for column in thin.T:
            if any(length >= 8 for _, length in horizontal_runs(column)):
                found = True
    assert found


def test_near_objects_are_big_and_far_ones_small(scenes: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = scenes
    car_widths = [n for mask in masks for row in mask == CAR for _, n in horizontal_runs(row)]
    person_heights = [
        n for mask in masks for column in (mask == PERSON).T for _, n in horizontal_runs(column)
    ]
    assert max(car_widths) >= WIDTH // 4
    assert max(person_heights) >= HEIGHT // 4
    assert min(person_heights) <= 4


def quantised_colour(images: np.ndarray, bits: int = 4) -> np.ndarray:
    levels = (images >> (8 - bits)).astype(np.int64)
    return (levels[..., 0] << (2 * bits)) | (levels[..., 1] << bits) | levels[..., 2]


def test_colour_alone_does_not_classify(scenes: tuple[np.ndarray, np.ndarray]) -> None:
    """The best colour -> class lookup table, fit on half the scenes, labels the other half badly,
    and the colours of road, building and car overlap substantially."""
    images, masks = scenes
    colour = quantised_colour(images)
    fit, held_out = slice(0, 15), slice(15, 30)

    labelled = masks[fit] < NUM_CLASSES
    votes = np.zeros((4096, NUM_CLASSES))
    np.add.at(votes, (colour[fit][labelled], masks[fit][labelled]), 1)
    lookup = votes.argmax(axis=1)
    test = masks[held_out] < NUM_CLASSES
    accuracy = (lookup[colour[held_out][test]] == masks[held_out][test]).mean()
    assert accuracy < 0.7

    def histogram(label: int) -> np.ndarray:
        counts = np.bincount(colour[masks == label], minlength=4096)
        return counts / counts.sum()

    pairs = [
        (ROAD, BUILDING), (ROAD, CAR), (BUILDING, CAR), (ROAD, SIDEWALK), (VEGETATION, TERRAIN)
    ]
    for a, b in pairs:
        overlap = np.minimum(histogram(a), histogram(b)).sum()
        assert overlap > 0.2, (CLASS_NAMES[a], CLASS_NAMES[b], overlap)


def test_invalid_arguments_raise_with_clear_messages() -> None:
    with pytest.raises(InputSizeError, match=r">= 32, got 31x64"):
        render_scene(0, 31, 64)
    with pytest.raises(ValueError, match=r">= 32"):
        SyntheticScenes("train", 1, (64, 16))
    bad_split = r"unknown split 'test'; valid splits are train, calib, val"
    with pytest.raises(ValueError, match=bad_split):
        SyntheticScenes("test", 1)
    with pytest.raises(ValueError, match=r"valid splits are train, calib, val"):
        scene_seed("training", 0)
    with pytest.raises(ValueError, match=r"length must be >= 0, got -1"):
        SyntheticScenes("train", -1)
    with pytest.raises(ValueError, match=r"index must be >= 0"):
        scene_seed("train", -1)
    with pytest.raises(ValueError, match=r"seed must be >= 0"):
        render_scene(-5, 64, 64)
    ds = SyntheticScenes("calib", 3, (32, 32))
    with pytest.raises(IndexError, match=r"index 3 out of range for 3 scenes"):
        ds[3]
    with pytest.raises(IndexError, match=r"out of range"):
        ds[-4]
    with pytest.raises(IndexError, match=r"batch 2..3 out of range for 3 scenes"):
        ds.batch(2, 2)
    with pytest.raises(ValueError, match=r"count must be >= 0"):
        ds.batch(0, -1)


def test_importing_the_data_package_does_not_import_torch() -> None:
    code = "import sys, segedge.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
