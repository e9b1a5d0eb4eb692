"""Image resizing shared by the suites (observations are delivered at the policy's square size)."""
from __future__ import annotations

import numpy as np


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3), Lanczos as OpenVLA's evaluation resizes."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.LANCZOS))


def resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize for depth and segmentation (no blending across object edges)."""
    rows = ((np.arange(size) + 0.5) * image.shape[0] / size).astype(int)
    cols = ((np.arange(size) + 0.5) * image.shape[1] / size).astype(int)
    return np.ascontiguousarray(image[rows][:, cols])
