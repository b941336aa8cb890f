"""Real-dataset loaders, on tiny trees (8x12 px) built in each dataset's own on-disk layout:
label mapping to one convention (ids 0..C-1, 255 = void), resizing that keeps ids, layout
detection, and an error that names what is missing or wrong for each kind of broken tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segedge.data.datasets import (
    ADE20K,
    DEFAULT_HOLDOUT,
    ADE20K_CLASS_NAMES,
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_TRAIN_IDS,
    KINDS,
    VOC_CLASS_NAMES,
    CamVid,
    Cityscapes,
    DatasetError,
    PascalVOC,
    SegmentationFolder,
    detect_layout,
    open_dataset,
)
from segedge.data.synthetic import SyntheticScenes
from segedge.core.errors import SegedgeError

H, W = 8, 12


def rgb(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def save_palette(path: Path, indices: np.ndarray) -> Path:
    """A VOC-style palette PNG whose pixel values are palette indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices, "L").convert("P")
    image.putdata(indices.ravel().tolist())  # convert("P") may remap; put the indices back
    palette = np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)
    image.putpalette(palette.tobytes())
    image.save(path)
    assert Image.open(path).mode == "P"
    return path


def label_mask(values: list[int]) -> np.ndarray:
    """An HxW mask whose first pixels are ``values`` and the rest the first value."""
    mask = np.full(H * W, values[0], dtype=np.uint8)
    mask[: len(values)] = values
    return mask.reshape(H, W)


# -- trees -------------------------------------------------------------------------------------


def cityscapes_tree(root: Path, split: str = "val") -> Path:
    for city, name, seed in (("aachen", "aachen_000000_000019", 1),
                             ("bonn", "bonn_000001_000019", 2)):
        save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", rgb(seed))
        save(
            root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png",
            label_mask([26, 0, 7, 33, 9, 24, 1]),
        )
    return root


def voc_tree(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000033", "2007_000039"]
    for i, image_id in enumerate(ids):
        save(voc / "JPEGImages" / f"{image_id}.jpg", rgb(i))
        save_palette(voc / "SegmentationClass" / f"{image_id}.png", label_mask([15, 255, 0, 20]))
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (lists / "val.txt").write_text(ids[2] + "\n")
    return root


def ade_tree(root: Path) -> Path:
    ade = root / "ADEChallengeData2016"
    for folder in ("training", "validation"):
        for i in range(2):
            stem = f"ADE_{folder[:5]}_{i:08d}"
            save(ade / "images" / folder / f"{stem}.jpg", rgb(i))
            save(ade / "annotations" / folder / f"{stem}.png", label_mask([0, 1, 150, 13]))
    return root


def camvid_tree(root: Path) -> Path:
    for split in ("train", "val", "test"):
        for i in range(2):
            save(root / split / f"0001TP_00{i}.png", rgb(i))
            save(root / f"{split}annot" / f"0001TP_00{i}.png", label_mask([11, 0, 10, 3]))
    return root


def folder_tree(root: Path, splits: bool = True) -> Path:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\ncrack\nrust\n")
    for stem, suffix in (("a", ".png"), ("b", ".jpg"), ("c", ".jpeg")):
        save(root / "images" / f"{stem}{suffix}", rgb(ord(stem)))
        save(root / "masks" / f"{stem}.png", label_mask([2, 0, 1, 255]))
    if splits:
        (root / "splits").mkdir()
        (root / "splits" / "train.txt").write_text("a\nb.jpg\n")
        (root / "splits" / "val.txt").write_text("c\n")
    return root


def assert_message(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# -- loading and label mapping -----------------------------------------------------------------


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    ds = Cityscapes(cityscapes_tree(tmp_path), "val")
    assert len(ds) == 2 and ds.split == "val"
    assert ds.class_names == CITYSCAPES_CLASS_NAMES and ds.num_classes == 19
    image, mask = ds[0]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    np.testing.assert_array_equal(image, rgb(1))
    # car 26 -> 13, unlabeled 0 -> 255, road 7 -> 0, bicycle 33 -> 18, parking 9 -> 255,
    # person 24 -> 11, ego vehicle 1 -> 255
    assert mask.ravel()[:7].tolist() == [13, 255, 0, 18, 255, 11, 255]
    assert ds[-1][1].ravel()[0] == 13


def test_cityscapes_table_is_the_official_one() -> None:
    assert CITYSCAPES_TRAIN_IDS == {
        7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
    }


def test_cityscapes_uses_train_ids_file_when_label_ids_are_absent(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    save(root / "leftImg8bit/train/ulm/ulm_000000_000019_leftImg8bit.png", rgb(0))
    save(
        root / "gtFine/train/ulm/ulm_000000_000019_gtFine_labelTrainIds.png",
        label_mask([13, 255, 18]),
    )
    _, mask = Cityscapes(root, "train")[0]
    assert mask.ravel()[:3].tolist() == [13, 255, 18]


def test_voc_keeps_palette_indices(tmp_path: Path) -> None:
    ds = PascalVOC(voc_tree(tmp_path), "train")  # VOCdevkit/VOC2012 is found below the root
    assert len(ds) == 2 and ds.class_names == VOC_CLASS_NAMES and ds.num_classes == 21
    assert ds.class_names[15] == "person"
    image, mask = ds[1]
    assert image.shape == (H, W, 3)
    assert mask.ravel()[:4].tolist() == [15, 255, 0, 20]
    assert len(PascalVOC(tmp_path / "VOCdevkit" / "VOC2012", "val")) == 1


def test_ade20k_shifts_ids_and_voids_other(tmp_path: Path) -> None:
    ade_tree(tmp_path)
    ds = ADE20K(tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 150
    assert ds.class_names[0] == "wall" and ds.class_names[149] == "flag"
    assert len(set(ADE20K_CLASS_NAMES)) == 150
    _, mask = ds[0]
    assert mask.ravel()[:4].tolist() == [255, 0, 149, 12]
    # the folder name works as the split and ADEChallengeData2016 itself as the root
    assert len(ADE20K(tmp_path / "ADEChallengeData2016", "training")) == 2


def test_camvid_voids_unlabelled(tmp_path: Path) -> None:
    ds = CamVid(camvid_tree(tmp_path), "test")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.class_names[0] == "Sky"
    assert ds[0][1].ravel()[:4].tolist() == [255, 0, 10, 3]


def test_folder_with_split_lists(tmp_path: Path) -> None:
    root = folder_tree(tmp_path)
    train = SegmentationFolder(root, "train")
    assert train.class_names == ("background", "crack", "rust") and train.num_classes == 3
    assert [s.image.name for s in train.samples] == ["a.png", "b.jpg"]
    assert [s.image.name for s in SegmentationFolder(root, "val").samples] == ["c.jpeg"]
    assert train[0][1].ravel()[:4].tolist() == [2, 0, 1, 255]


def test_folder_without_lists_gives_a_deterministic_holdout(tmp_path: Path) -> None:
    root = folder_tree(tmp_path, splits=False)
    val = [s.image.stem for s in SegmentationFolder(root, "val", holdout=0.34).samples]
    train = [s.image.stem for s in SegmentationFolder(root, "train", holdout=0.34).samples]
    assert len(val) == 1 and len(train) == 2 and sorted(val + train) == ["a", "b", "c"]
    assert val == [s.image.stem for s in SegmentationFolder(root, "val", holdout=0.34).samples]


# -- resizing and batching ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 24), (5, 7)])
def test_resize_keeps_mask_ids(tmp_path: Path, size: tuple[int, int]) -> None:
    ds = Cityscapes(cityscapes_tree(tmp_path), "val", size=size)
    image, mask = ds[0]
    assert image.shape == (*size, 3) and mask.shape == size
    assert set(np.unique(mask).tolist()) <= {13, 255, 0, 18, 11}
    images, masks = ds.batch(0, 2)
    assert images.shape == (2, *size, 3) and masks.shape == (2, *size)


def test_upscaling_by_two_repeats_each_mask_pixel(tmp_path: Path) -> None:
    _, small = CamVid(camvid_tree(tmp_path), "train")[0]
    _, large = CamVid(tmp_path, "train", size=(2 * H, 2 * W))[0]
    np.testing.assert_array_equal(large[::2, ::2], small)


def test_batch_of_different_sizes_asks_for_size(tmp_path: Path) -> None:
    root = folder_tree(tmp_path)
    save(root / "images" / "d.png", rgb(4, 10, 10))
    save(root / "masks" / "d.png", np.zeros((10, 10), np.uint8))
    (root / "splits" / "all.txt").write_text("a\nb\nc\nd\n")
    ds = SegmentationFolder(root, "all")
    with pytest.raises(DatasetError) as error:
        ds.batch(0, 4)
    assert_message(error, "differ in size", "size=(H, W)")
    assert SegmentationFolder(root, "all", size=(H, W)).batch(0, 4)[0].shape == (4, H, W, 3)


# -- detection and open_dataset ----------------------------------------------------------------


@pytest.mark.parametrize(
    "build, kind",
    [(cityscapes_tree, "cityscapes"), (voc_tree, "voc"), (ade_tree, "ade20k"),
     (camvid_tree, "camvid"), (folder_tree, "folder")],
)
def test_detect_layout_and_open(tmp_path: Path, build, kind: str) -> None:
    root = build(tmp_path / kind)
    assert detect_layout(root) == kind
    split = {"cityscapes": "val", "voc": "train", "ade20k": "train", "camvid": "val",
             "folder": "train"}[kind]
    for name in (kind, "auto"):
        ds = open_dataset(name, root, split, size=(4, 6))
        image, mask = ds[0]
        assert image.shape == (4, 6, 3) and mask.shape == (4, 6) and ds.split == split


def test_detect_layout_of_an_unknown_tree_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError) as error:
        detect_layout(tmp_path)
    assert_message(error, "cannot tell the dataset layout", "leftImg8bit/", "photos/")
    with pytest.raises(DatasetError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")


def test_open_dataset_synthetic_and_misuse(tmp_path: Path) -> None:
    ds = open_dataset("synthetic", None, "calib", size=(32, 64), length=3)
    assert isinstance(ds, SyntheticScenes) and len(ds) == 3 and ds[0][0].shape == (32, 64, 3)
    assert "synthetic" in KINDS
    with pytest.raises(DatasetError, match="unknown dataset kind 'kitti'"):
        open_dataset("kitti", tmp_path, "val")
    with pytest.raises(DatasetError, match="holdout applies to the folder dataset only"):
        open_dataset("camvid", tmp_path, "val", holdout=0.2)
    with pytest.raises(DatasetError, match="synthetic dataset only"):
        open_dataset("camvid", tmp_path, "val", length=4)


# -- broken trees --------------------------------------------------------------------------------


def test_not_a_cityscapes_root_names_the_missing_folder(tmp_path: Path) -> None:
    save(tmp_path / "leftImg8bit/val/aachen/x_leftImg8bit.png", rgb(0))
    with pytest.raises(DatasetError) as error:
        Cityscapes(tmp_path, "val")
    assert isinstance(error.value, SegedgeError)
    assert_message(
        error, "is not a Cityscapes root: missing gtFine/val",
        "expected leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
        "gtFine/<split>/<city>/*_gtFine_labelIds.png",
    )


def test_image_without_mask_names_the_files(tmp_path: Path) -> None:
    root = cityscapes_tree(tmp_path)
    save(root / "leftImg8bit/val/bonn/bonn_000002_000019_leftImg8bit.png", rgb(3))
    with pytest.raises(DatasetError) as error:
        Cityscapes(root, "val")
    assert_message(
        error, "leftImg8bit/val/bonn/bonn_000002_000019_leftImg8bit.png has no mask",
        "missing gtFine/val/bonn/bonn_000002_000019_gtFine_labelIds.png",
    )

    (tmp_path / "ade").mkdir()
    ade_tree(tmp_path / "ade")
    (tmp_path / "ade/ADEChallengeData2016/annotations/training/ADE_train_00000001.png").unlink()
    with pytest.raises(DatasetError, match="ADE_train_00000001.jpg has no mask"):
        ADE20K(tmp_path / "ade", "train")


def test_empty_split_says_so(tmp_path: Path) -> None:
    root = cityscapes_tree(tmp_path)
    (root / "leftImg8bit/test").mkdir()
    (root / "gtFine/test").mkdir()
    with pytest.raises(DatasetError) as error:
        Cityscapes(root, "test")
    assert_message(error, "Cityscapes split 'test'", "is empty", "leftImg8bit/test holds no")


def test_missing_split_list_names_it_and_the_lists_there(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        PascalVOC(voc_tree(tmp_path), "trainval")
    assert_message(
        error, "missing VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt",
        "lists there: train, val",
    )
    with pytest.raises(DatasetError) as error:
        SegmentationFolder(folder_tree(tmp_path / "f"), "test")
    assert_message(error, "missing splits/test.txt", "lists there: train, val")


def test_mask_value_outside_the_classes_names_file_and_value(tmp_path: Path) -> None:
    root = voc_tree(tmp_path)
    bad = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png"
    save_palette(bad, label_mask([0, 21, 254]))
    ds = PascalVOC(root, "val")
    with pytest.raises(DatasetError) as error:
        ds[0]
    assert_message(error, str(bad), "values 21, 254", "outside the VOC classes 0..20")

    root = cityscapes_tree(tmp_path / "cs")
    save(root / "gtFine/val/bonn/bonn_000001_000019_gtFine_labelIds.png", label_mask([7, 40]))
    with pytest.raises(DatasetError) as error:
        Cityscapes(root, "val")[1]
    assert_message(error, "bonn_000001_000019_gtFine_labelIds.png", "value 40",
                   "Cityscapes labelIds 0..33")


def test_folder_mask_id_beyond_classes_txt(tmp_path: Path) -> None:
    root = folder_tree(tmp_path)
    save(root / "masks" / "a.png", label_mask([3]))
    with pytest.raises(DatasetError) as error:
        SegmentationFolder(root, "train")[0]
    assert_message(error, "a.png", "value 3", "3 classes of classes.txt")


def test_unreadable_image_and_colour_mask(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    broken = root / "val" / "0001TP_000.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError) as error:
        CamVid(root, "val")[0]
    assert_message(error, "cannot read image", str(broken))

    save(root / "testannot" / "0001TP_001.png", rgb(9))
    with pytest.raises(DatasetError) as error:
        CamVid(root, "test")[1]
    assert_message(error, "0001TP_001.png is a RGB image", "mode L or P")


def test_image_and_mask_of_different_sizes(tmp_path: Path) -> None:
    root = camvid_tree(tmp_path)
    save(root / "trainannot" / "0001TP_000.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DatasetError) as error:
        CamVid(root, "train")[0]
    assert_message(error, "is 8x12 but its mask", "is 8x13")


def test_folder_without_classes_txt_and_bad_names(tmp_path: Path) -> None:
    root = folder_tree(tmp_path)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError) as error:
        SegmentationFolder(root, "train")
    assert_message(error, "is not a segmentation folder root: missing classes.txt")
    (root / "classes.txt").write_text("road\nroad\n")
    with pytest.raises(DatasetError, match="repeats road"):
        SegmentationFolder(root, "train")


def test_wrong_split_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="ADE20K has no split 'test'"):
        ADE20K(ade_tree(tmp_path), "test")
    with pytest.raises(DatasetError, match="CamVid root .* does not exist"):
        CamVid(tmp_path / "nowhere", "train")
    (tmp_path / "cv" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="is not a CamVid root: missing trainannot"):
        CamVid(tmp_path / "cv", "train")


def test_network_input_and_class_map_equal_the_plain_numpy_they_replace():
    """The lookup-table normalisation and the per-class argmax are speed-ups only: same numbers, same ids."""
    from segedge.data.transforms import class_map, to_network_input

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plain = (images.transpose(0, 3, 1, 2).astype(np.float32) / 255 - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    fast = to_network_input(images, mean, std)
    assert fast.shape == (2, 3, 17, 23) and fast.dtype == np.float32 and fast.flags.c_contiguous
    assert np.abs(fast - plain).max() < 1e-5
    assert np.array_equal(to_network_input(images.astype(np.float32), mean, std), fast) or \
        np.abs(to_network_input(images.astype(np.float32), mean, std) - fast).max() < 1e-5
    scores = rng.standard_normal((2, 7, 17, 23)).astype(np.float32)
    scores[0, 3, 0, 0] = scores[0, 5, 0, 0] = 99.0  # a tie goes to the first class, as argmax's does
    assert np.array_equal(class_map(scores), scores.argmax(1).astype(np.uint8))
    assert class_map(scores[1]).dtype == np.uint8 and class_map(scores)[0, 0, 0] == 3


# -- the evaluation images are never the training (calibration) images ---------------------------------------


def many_images_folder(root: Path, count: int = 8, stems: list | None = None) -> Path:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\ncrack\nrust\n")
    for i, stem in enumerate(stems or [f"img{i}" for i in range(count)]):
        save(root / "images" / f"{stem}.png", rgb(i))
        save(root / "masks" / f"{stem}.png", label_mask([2, 0, 1]))
    return root


def test_open_dataset_holds_out_a_quarter_of_a_folder_without_lists_by_default(tmp_path: Path) -> None:
    """The library call, not only the CLI: train and val of a folder without splits/ never share an image."""
    root = many_images_folder(tmp_path)
    train = [s.image.stem for s in open_dataset("folder", root, "train").samples]
    val = [s.image.stem for s in open_dataset("folder", root, "val").samples]
    assert len(val) == 2 and len(train) == 6 and not set(train) & set(val)
    assert sorted(train + val) == [f"img{i}" for i in range(8)]
    assert val == [s.image.stem for s in SegmentationFolder(root, "val", holdout=DEFAULT_HOLDOUT).samples]
    assert val == [s.image.stem for s in open_dataset("auto", root, "val").samples]
    with pytest.raises(DatasetError) as error:
        open_dataset("folder", root, "test")
    assert_message(error, "'test'", "train and val", "splits/test.txt")


def test_split_lists_that_share_images_are_refused_by_name(tmp_path: Path) -> None:
    """Calibration on splits/train.txt would otherwise use evaluation images silently."""
    root = many_images_folder(tmp_path, 5)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("img0\nimg1\nimg2.png\nimg3\n")
    (root / "splits" / "val.txt").write_text("img2\nimg3\nimg4\n")
    for split in ("train", "val"):
        with pytest.raises(DatasetError) as error:
            open_dataset("folder", root, split)
        assert_message(error, "splits/train.txt and splits/val.txt share 2 images", "img2, img3")
        assert "\n" not in str(error.value)


def test_a_file_name_that_is_not_utf8_is_held_out_like_any_other(tmp_path: Path) -> None:
    import os

    odd = os.fsdecode(b"caf\xff")
    try:
        root = many_images_folder(tmp_path, stems=["img0", "img1", "img2", odd])
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses a file name that is not UTF-8")
    from segedge.data.datasets import train_and_val

    train, val, holdout = train_and_val("folder", root)  # what export, bench and train open
    assert holdout == DEFAULT_HOLDOUT
    stems = sorted(s.image.stem for s in [*train.samples, *val.samples])
    assert stems == sorted(["img0", "img1", "img2", odd]) and len(val) == 1
    for dataset in (train, val):
        for i in range(len(dataset)):
            assert dataset[i][0].shape == (H, W, 3)
