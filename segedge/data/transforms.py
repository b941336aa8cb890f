"""Image → network-input conversion, shared by training, calibration, parity checks and benchmarks.

One function does it so that every stage feeds the network exactly the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def to_network_input(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) or (H, W, 3) → float32 (N, 3, H, W), scaled to [0, 1] then normalised."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images shaped (N, H, W, 3), got {images.shape}")
    scale = np.float32(1.0 / 255.0)
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) * scale
    return np.ascontiguousarray((x - mean_arr) * inv_std, dtype=np.float32)


def random_crop_flip(
    image: np.ndarray, mask: np.ndarray, crop: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random crop of ``crop`` (H, W) and a horizontal flip with p = 0.5, applied alike to image and mask."""
    height, width = mask.shape
    ch, cw = crop
    if ch > height or cw > width:
        raise ValueError(f"crop {ch}x{cw} is larger than the image {height}x{width}")
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    image = image[top : top + ch, left : left + cw]
    mask = mask[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask
