"""An evaluation split packed for a device: the very image and mask files a figure is scored on, with a small
index saying which dataset layout they came from, the split, the classes and how each mask encodes labels.

Why not re-encode into a plain folder: the device must score the same pixels *and* prove it. Its rows' data
fingerprint (:func:`segedge.data.fingerprint.data_fingerprint`) is computed there from the files themselves,
so it equals the workstation's only when every byte, name, class and label table does; the workstation checks
that equality before any row is measured. A Cityscapes mask keeps its labelIds and the trainId table that reads
it, a VOC mask its palette indices.

Layout: ``<dir>/segedge-split.json`` and ``<dir>/<sha256[:16]>/<original file name>`` for each file (content
addressed: a file never travels twice, names never collide).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segedge.core.artifacts import sha256_cached
from segedge.data.datasets import DatasetError, Sample, SegmentationFiles, _Encoding

INDEX_NAME = "segedge-split.json"
FORMAT = 1


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
        "format": FORMAT,
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
                    raise DatasetError(f"packed split {root} lacks {item[key]} (listed in {INDEX_NAME}): copy it again")
            if item["encoding"] not in self._encodings:
                raise DatasetError(f"packed split {root}: {item['mask']} names an unknown encoding {item['encoding']!r}")
            samples.append(Sample(root / item["image"], root / item["mask"], item["encoding"]))
        return samples

    def _empty_hint(self) -> str:
        return f"{INDEX_NAME} lists no samples"


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
    path = root / INDEX_NAME
    if not root.is_dir():
        raise DatasetError(f"packed split {root} {'does not exist' if not root.exists() else 'is not a directory'}")
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{root} holds no {INDEX_NAME}: packed:DIR takes a split segedge sent to a device") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is unreadable ({exc})") from None
    needed = ("format", "origin", "kind", "split", "classes", "encodings", "samples")
    if not isinstance(index, dict) or any(k not in index for k in needed):
        raise DatasetError(f"{path} is not a segedge split index (it needs {', '.join(needed)})")
    if index["format"] != FORMAT:
        raise DatasetError(f"{path} is format {index['format']}; this segedge reads format {FORMAT}: upgrade it")
    return index
