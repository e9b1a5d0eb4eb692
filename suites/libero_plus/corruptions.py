"""Sensor Noise: LIBERO-Plus's five corruptions of the third-person image, re-implemented with numpy/scipy."""
from __future__ import annotations

import numpy as np

NOISE_KINDS = ("motion_blur", "gaussian_blur", "zoom_blur", "fog", "glass_blur")  # bands of 10 noise indices


def corrupt(image: np.ndarray, kind: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """LIBERO-Plus's sensor corruptions (ImageNet-C style) at severity 1-10, for an (S, S, 3) uint8 image;
    pixel sizes are LIBERO-Plus's for a 224-pixel image, scaled to S."""
    from scipy import ndimage

    x = image.astype(np.float32) / 255.0
    s = image.shape[0] / 224.0
    i = severity - 1
    if kind == "gaussian_blur":
        out = ndimage.gaussian_filter(x, sigma=(severity * s, severity * s, 0))
    elif kind == "motion_blur":
        sigma = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)[i] * s
        length = max(3, int(2 * sigma) | 1)
        kernel = np.zeros((length, length), np.float32)
        offsets = np.arange(length) - length // 2
        weights = np.exp(-0.5 * (offsets / max(sigma / 2, 1e-3)) ** 2)
        angle = np.deg2rad(rng.uniform(-45, 45))
        rows = np.clip(np.round(length // 2 + offsets * np.sin(angle)).astype(int), 0, length - 1)
        cols = np.clip(np.round(length // 2 + offsets * np.cos(angle)).astype(int), 0, length - 1)
        np.add.at(kernel, (rows, cols), weights)
        kernel /= kernel.sum()
        out = np.stack([ndimage.convolve(x[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)
    elif kind == "zoom_blur":
        top = (1.11, 1.16, 1.21, 1.26, 1.31, 1.36, 1.41, 1.46, 1.51, 1.56)[i]
        out = x.copy()
        factors = np.linspace(1.0, top, 8)[1:]
        for factor in factors:
            out += _centre_zoom(x, factor)
        out /= len(factors) + 1
    elif kind == "fog":
        strength, decay = ((0.5, 3), (1.0, 2.8), (1.5, 2.5), (2.0, 2.2), (2.5, 2.0), (3.0, 1.8), (3.5, 1.6),
                           (4.0, 1.5), (4.5, 1.4), (5.0, 1.3))[i]
        size = 1 << int(np.ceil(np.log2(max(image.shape[:2]))))
        fog = _plasma(size, decay, rng)[: image.shape[0], : image.shape[1], None]
        top = x.max()
        out = (x + strength * fog) * top / (top + strength)
    elif kind == "glass_blur":
        sigma, delta, iterations = ((0.5, 1, 3), (0.7, 1, 3), (0.9, 2, 3), (1.0, 2, 2), (1.1, 3, 2), (1.3, 3, 2),
                                    (1.5, 4, 2), (1.8, 4, 2), (2.2, 5, 1), (2.5, 5, 1))[i]
        delta = max(1, round(delta * s))
        out = ndimage.gaussian_filter(x, sigma=(sigma * s, sigma * s, 0))
        h, w = out.shape[:2]
        rows, cols = np.mgrid[0:h, 0:w]
        for _ in range(iterations):  # each pixel takes a neighbour's value (a vectorised local shuffle)
            dr, dc = rng.integers(-delta, delta + 1, size=(2, h, w))
            out = out[np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)]
        out = ndimage.gaussian_filter(out, sigma=(sigma * s, sigma * s, 0))
    else:
        raise ValueError(f"unknown corruption {kind!r}; kinds: {', '.join(NOISE_KINDS)}")
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _centre_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    from scipy import ndimage

    h = x.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = ndimage.zoom(x[top: top + crop, top: top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim: trim + h, trim: trim + h]


def _plasma(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map in [0, 1] (the fog texture of ImageNet-C / LIBERO-Plus), seeded."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, 0)
        square = square + np.roll(square, -1, 1)
        grid[half:size:step, half:size:step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = grid[half:size:step, half:size:step]
        left = centres + np.roll(centres, 1, 0) + corners + np.roll(corners, -1, 1)
        grid[0:size:step, half:size:step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, 1) + corners + np.roll(corners, -1, 0)
        grid[half:size:step, 0:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()
