"""Data the project ships with: a synthetic street-scene segmentation set, rendered from a seed, so
export, calibration and benchmarks need no download. Imports numpy only."""

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
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "SPLITS",
    "SyntheticScenes",
    "render_scene",
    "scene_seed",
]
