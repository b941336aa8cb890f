"""Write a labelled "cells" dataset in segedge's ``folder`` layout: a set that is not the street scenes.

Grey microscopy-like images: a smooth uneven background, 5–25 cells (ellipses of varied size, brightness and
blur, some touching, some dim), a few bright debris specks that are *not* cells, and sensor noise. Masks:
0 background, 1 cell. Deterministic from the seed. No ``splits/``: segedge holds out a fixed 25 % for evaluation.

    python benchmarks/make_cells.py --out /tmp/cells --images 96 --size 128x128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def render_cell_image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = 60 + 25 * np.sin(xx / w * rng.uniform(1, 4) + rng.uniform(0, 6)) * np.cos(yy / h * rng.uniform(1, 3))
    image = background.copy()
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(5, 26))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(3, 11), rng.uniform(3, 11)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
        r = u * u + v * v
        inside = r <= 1.0
        brightness = rng.uniform(25, 110)  # some cells barely stand out
        image += brightness * np.clip(1.15 - r, 0, 1) ** rng.uniform(0.3, 1.0)
        mask[inside] = 1
    for _ in range(int(rng.integers(0, 6))):  # debris: small, very bright, not cells
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        image[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] += 140
    image += rng.normal(0, rng.uniform(4, 14), size=(h, w))
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), mask


def write_cells(out: Path, images: int = 96, size: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        image, mask = render_cell_image(rng, size)
        Image.fromarray(image).save(out / "images" / f"cell{i:04d}.png")
        Image.fromarray(mask).save(out / "masks" / f"cell{i:04d}.png")
    (out / "classes.txt").write_text("background\ncell\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", default="128x128", help="HxW")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(write_cells(args.out, args.images, (h, w), args.seed))


if __name__ == "__main__":
    main()
