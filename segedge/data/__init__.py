"""Data: the built-in synthetic street scenes (rendered from a seed, so export, calibration and benchmarks
need no download) and loaders for the standard dataset layouts. Imports numpy only; Pillow is imported
when a real image is first read."""

from segedge.data.datasets import (
    ADE20K,
    KINDS,
    CamVid,
    Cityscapes,
    DatasetError,
    PascalVOC,
    SegmentationFolder,
    detect_layout,
    open_dataset,
)
from segedge.data.synthetic import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    SPLITS,
    SyntheticScenes,
    render_scene,
    scene_seed,
)

__all__ = [
    "ADE20K", "CLASS_NAMES", "CamVid", "Cityscapes", "DatasetError", "IGNORE_INDEX", "KINDS", "NUM_CLASSES",
    "PascalVOC", "SPLITS", "SegmentationFolder", "SyntheticScenes", "detect_layout", "open_dataset",
    "render_scene", "scene_seed",
]
