"""What a test can check of a saved figure without looking at it."""

from __future__ import annotations


def png_panels(path) -> tuple[int, int, int]:
    """(width, height, panels) of a saved figure: panels are runs of non-blank columns separated by blank ones,
    so a test can tell a four-panel overlay from an empty or a one-panel image."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
    busy = (np.abs(pixels - 255) > 8).any(axis=0)
    panels = int(busy[0]) + int(np.count_nonzero(busy[1:] & ~busy[:-1]))
    return pixels.shape[1], pixels.shape[0], panels
