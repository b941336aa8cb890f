"""A split packed for a device reads back as the dataset it came from: the same pixels, the same labels (each
layout's own label table travels with it) and the same data fingerprint; a changed byte changes the fingerprint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segedge.data.datasets import PACKED_INDEX as INDEX_NAME
from segedge.data.datasets import DatasetError, PackedSplit, open_dataset, pack_index, train_and_val
from segedge.data.fingerprint import data_fingerprint

from tests.data.test_datasets import cityscapes_tree, folder_tree, many_images_folder


def pack(dataset, count: int, target: Path, origin: str = "x") -> Path:
    index, files = pack_index(dataset, count, origin)
    for local, relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target / relative)
    (target / INDEX_NAME).write_text(json.dumps(index))
    return target


@pytest.mark.parametrize("kind, build", [("cityscapes", cityscapes_tree), ("folder", folder_tree)])
def test_a_packed_split_reads_the_same_pixels_labels_and_fingerprint(tmp_path, kind, build):
    root = build(tmp_path / "data")
    original = open_dataset(kind, root, "val", (16, 24))
    packed = PackedSplit(pack(original, len(original), tmp_path / "packed"), "val", (16, 24))
    assert len(packed) == len(original) and packed.class_names == original.class_names
    for i in range(len(original)):
        for ours, theirs in zip(packed[i], original[i]):
            np.testing.assert_array_equal(ours, theirs)
    assert data_fingerprint(packed) == data_fingerprint(original)
    # read at another size, or with one mask byte changed: another fingerprint
    assert data_fingerprint(PackedSplit(tmp_path / "packed", "val", (8, 12))) != data_fingerprint(original)
    mask = next(s.mask for s in packed.samples)
    data = bytearray(mask.read_bytes())
    data[-20] ^= 1
    mask.write_bytes(bytes(data))
    assert data_fingerprint(PackedSplit(tmp_path / "packed", "val", (16, 24))) != data_fingerprint(original)


def test_a_cityscapes_mask_keeps_its_label_ids_and_the_table_that_reads_them(tmp_path):
    original = open_dataset("cityscapes", cityscapes_tree(tmp_path / "c"), "val")
    packed = PackedSplit(pack(original, 1, tmp_path / "p"))
    _, raw = original[0]
    index = json.loads((tmp_path / "p" / INDEX_NAME).read_text())
    table = np.asarray(index["encodings"][original.samples[0].encoding]["table"])
    assert table[7] == 0 and table[26] == 13 and table[0] == 255  # road, car, unlabeled → void (cityscapesScripts)
    np.testing.assert_array_equal(packed[0][1], raw)


def test_only_the_first_count_items_travel_and_the_fingerprint_covers_that_many(tmp_path):
    original = open_dataset("folder", many_images_folder(tmp_path / "d", count=16), "val")
    assert len(original) >= 3
    packed = PackedSplit(pack(original, 2, tmp_path / "p"))
    assert len(packed) == 2 and data_fingerprint(packed) == data_fingerprint(original, 2)


def test_a_packed_split_has_no_training_images_and_says_so(tmp_path):
    original = open_dataset("folder", folder_tree(tmp_path / "d"), "val")
    pack(original, len(original), tmp_path / "p", origin="folder:/data/cells")
    train, val, holdout = train_and_val("packed", tmp_path / "p")
    assert isinstance(val, PackedSplit) and val.origin == "folder:/data/cells" and holdout is None
    with pytest.raises(DatasetError, match="holds only the evaluation images of folder:/data/cells"):
        len(train)
    assert open_dataset("auto", tmp_path / "p", "val").origin == "folder:/data/cells"


def test_a_damaged_pack_is_refused_by_name(tmp_path):
    original = open_dataset("folder", folder_tree(tmp_path / "d"), "val")
    target = pack(original, len(original), tmp_path / "p")
    with pytest.raises(DatasetError, match="holds no segedge-split.json"):
        PackedSplit(tmp_path / "d")
    missing = next(s.image for s in PackedSplit(target).samples)
    missing.unlink()
    with pytest.raises(DatasetError, match=f"lacks {missing.parent.name}/{missing.name}"):
        PackedSplit(target)
    index = json.loads((target / INDEX_NAME).read_text())
    (target / INDEX_NAME).write_text(json.dumps({**index, "format": 9}))
    with pytest.raises(DatasetError, match="format 9"):
        PackedSplit(target)
    (target / INDEX_NAME).write_text("{")
    with pytest.raises(DatasetError, match="unreadable"):
        PackedSplit(target)
