"""Video frames that show what a policy's motion pathway saw and predicted (run --record-motion):

    [camera frame | depth map, colourised | camera frame with the predicted scene flow as arrows]

Pure numpy (no cv2, no matplotlib in the stepping loop). Depth uses a fixed viridis table with near =
bright, scaled per frame between the 2nd and 98th percentile. Each arrow starts at a lifted point's pixel
position and points to where the predicted flow moves it, drawn FLOW_GAIN times its projected length
(one step's flow is a few millimetres, under a pixel at true scale). Without diagnostics for a frame
(the episode's last frame, or a policy without a motion pathway) the two right panels are grey.
"""
from __future__ import annotations

import numpy as np

FLOW_GAIN = 10.0
ARROW_COLOUR = np.array([255, 64, 64], dtype=np.uint8)
TAIL_COLOUR = np.array([255, 255, 255], dtype=np.uint8)
EMPTY_GREY = 96
# viridis at 0, 1/8, ..., 1 (matplotlib's table, sampled); interpolated to 256 entries below
_VIRIDIS_ANCHORS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                             (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64)
COLORMAP = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_VIRIDIS_ANCHORS)), channel)
                     for channel in _VIRIDIS_ANCHORS.T], axis=1).round().astype(np.uint8)  # (256, 3)


def colourise_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) metres -> (height, width, 3) uint8, nearest-neighbour resized; non-finite depth is black."""
    rows = np.arange(height) * depth.shape[0] // height
    cols = np.arange(width) * depth.shape[1] // width
    d = np.asarray(depth, dtype=np.float64)[rows[:, None], cols[None, :]]
    finite = np.isfinite(d)
    if not finite.any():
        return np.zeros((height, width, 3), dtype=np.uint8)
    near, far = np.percentile(d[finite], [2, 98])
    closeness = np.clip((far - d) / max(far - near, 1e-9), 0.0, 1.0)  # 1 = nearest
    out = COLORMAP[np.nan_to_num(closeness * 255).astype(np.int64)]
    out[~finite] = 0
    return out


def draw_flow(frame: np.ndarray, uv: np.ndarray, uv_flowed: np.ndarray, source_size: int,
              gain: float = FLOW_GAIN) -> np.ndarray:
    """A copy of frame (H, W, 3) with one arrow per point; uv, uv_flowed (N, 2) are pixel positions in the
    policy's source_size x source_size image (OpenCV convention: pixel centres at integers)."""
    out = np.array(frame, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    scale = np.array([width / source_size, height / source_size])
    start = (np.asarray(uv, dtype=np.float64) + 0.5) * scale - 0.5
    end = start + gain * (np.asarray(uv_flowed, dtype=np.float64) - np.asarray(uv, dtype=np.float64)) * scale
    keep = np.isfinite(start).all(1) & np.isfinite(end).all(1)
    start, end = start[keep], end[keep]
    if not len(start):
        return out
    # an arrow longer than the frame's diagonal leaves it (its start is inside): shorten it to that, so
    # sampling one point per pixel of the longest arrow stays cheap for a wild (untrained) flow
    length = np.linalg.norm(end - start, axis=1, keepdims=True)
    diagonal = float(np.hypot(height, width))
    end = start + (end - start) * np.minimum(1.0, diagonal / np.maximum(length, 1e-9))
    samples = int(np.ceil(min(length.max(), diagonal))) + 2
    t = np.linspace(0.0, 1.0, samples)[None, :, None]
    _paint(out, (start[:, None] + t * (end - start)[:, None]).reshape(-1, 2), ARROW_COLOUR)
    _paint(out, start, TAIL_COLOUR)
    return out


def _paint(image: np.ndarray, points: np.ndarray, colour: np.ndarray) -> None:
    """Set the pixels nearest to points (M, 2) as (x, y) that fall inside the image."""
    x, y = np.rint(points[:, 0]).astype(np.int64), np.rint(points[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < image.shape[1]) & (y >= 0) & (y < image.shape[0])
    image[y[inside], x[inside]] = colour


def compose_motion_frame(frame: np.ndarray, diagnostics: dict[str, np.ndarray] | None) -> np.ndarray:
    """(H, W, 3) camera frame + a policy's motion diagnostics (Policy.motion_diagnostics) -> (H, 3W, 3)."""
    frame = np.asarray(frame, dtype=np.uint8)
    height, width = frame.shape[:2]
    if diagnostics is None:
        empty = np.full((height, width, 3), EMPTY_GREY, dtype=np.uint8)
        return np.concatenate([frame, empty, empty], axis=1)
    depth = diagnostics["depth"]
    flow = draw_flow(frame, diagnostics["uv"], diagnostics["uv_flowed"], source_size=depth.shape[1])
    return np.concatenate([frame, colourise_depth(depth, height, width), flow], axis=1)
