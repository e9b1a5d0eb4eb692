"""Scene-flow labels for the motion expert: the 3D displacement, from step t to step t+k, of the point a
query pixel sees at t, in the camera frame of t (the frame `lifting.PointLifter` puts points in).

Label sources are registered by name (`FLOW_SOURCES`) and chosen by the training config:

* `icp` (the paper's stage 1): both depth maps are lifted to world-frame point clouds and aligned with
  ICP (scipy cKDTree correspondences + Kabsch). Known weakness of the paper's literal recipe, one rigid
  fit of the whole cloud: the static background (table, walls, floor) is most of the points, so the
  fit converges to the identity and every moving point's "flow" is just the offset to its nearest
  neighbour at t+1 -- a distance to the nearest surface, short and biased towards surface normals
  rather than along the motion. We therefore fit one rigid transform per segment (MuJoCo body, from
  the segmentation) and move each point by its own segment's transform; without segmentation (e.g.
  official LIBERO files) or for a segment too small to fit, the point falls back to the global fit
  plus nearest-neighbour correspondence.
* `sim` (beyond the paper): exact flow from the simulator: each point is moved rigidly with its body
  (from the segmentation) by that body's pose change between t and t+k.

Camera conventions (suites' `Observation`): intrinsics are OpenCV-style for the delivered square image
(pixel centres at integer coordinates; fx may be negative for a mirrored image), extrinsics map OpenCV
camera axes to the world, depth is metric z-depth.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lamp_bench.harness.registry import Registry
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

FlowSource = Callable[["FlowFrame", "FlowFrame", np.ndarray], np.ndarray]
FLOW_SOURCES: Registry[np.ndarray] = Registry("scene-flow label source", "scene-flow label sources")
register_flow_source = FLOW_SOURCES.register


@dataclass
class FlowFrame:
    """What one step of one camera shows, for labelling."""

    depth: np.ndarray  # (H, W) float metres
    intrinsics: np.ndarray  # (3, 3) of the H x W image
    extrinsics: np.ndarray  # (4, 4) camera-to-world
    segmentation: np.ndarray | None = None  # (H, W) int body ids, -1 = nothing
    body_poses: np.ndarray | None = None  # (n_bodies, 7) world position + quaternion xyzw, row = body id


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample (H, W[, C]) at pixel coordinates uv (N, 2) = (column, row), edges clamped; matches
    PointLifter's grid_sample(align_corners=False) for points inside the image."""
    h, w = image.shape[:2]
    u = np.clip(uv[:, 0], 0, w - 1)
    v = np.clip(uv[:, 1], 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(int), w - 2)
    v0 = np.minimum(np.floor(v).astype(int), h - 2)
    a, b = u - u0, v - v0
    if image.ndim == 3:
        a, b = a[:, None], b[:, None]
    top = image[v0, u0] * (1 - a) + image[v0, u0 + 1] * a
    bottom = image[v0 + 1, u0] * (1 - a) + image[v0 + 1, u0 + 1] * a
    return top * (1 - b) + bottom * b


def nearest(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[np.clip(np.rint(uv[:, 1]).astype(int), 0, h - 1), np.clip(np.rint(uv[:, 0]).astype(int), 0, w - 1)]


def lift(depth: np.ndarray, intrinsics: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Pixels uv (N, 2) with depths (N,) -> camera-frame points (N, 3): p = d K^-1 [u v 1]^T."""
    rays = np.linalg.solve(intrinsics, np.concatenate([uv, np.ones((len(uv), 1))], axis=1).T).T
    return rays * depth[:, None]


def to_world(points: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    return points @ extrinsics[:3, :3].T + extrinsics[:3, 3]


def pixel_grid(h: int, w: int, stride: int = 1) -> np.ndarray:
    v, u = np.mgrid[0:h:stride, 0:w:stride]
    return np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)


def query_world_points(frame: FlowFrame, uv: np.ndarray) -> np.ndarray:
    """World points of the query pixels, depth sampled bilinearly as the model's lifter does."""
    return to_world(lift(bilinear(frame.depth.astype(np.float64), uv), frame.intrinsics, uv), frame.extrinsics)


def to_camera_flow(flow_world: np.ndarray, frame: FlowFrame) -> np.ndarray:
    """World-frame displacements -> the camera frame of `frame` (rotation only)."""
    return flow_world @ frame.extrinsics[:3, :3]


def _pose_matrix(pose: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(pose[3:7]).as_matrix()
    out[:3, 3] = pose[:3]
    return out


@register_flow_source("sim", "exact flow: every point moves with its body's simulator pose (needs segmentation, body poses)")
def sim_flow(f0: FlowFrame, f1: FlowFrame, uv: np.ndarray) -> np.ndarray:
    """(N, 2) query pixels of f0 -> (N, 3) flow in f0's camera frame."""
    if f0.segmentation is None or f0.body_poses is None or f1.body_poses is None:
        raise ValueError("the `sim` scene-flow source needs segmentation and body poses in the demonstrations "
                         "(lamp-bench's own demo files have them; use flow source `icp` for other files)")
    points = query_world_points(f0, uv)
    bodies = nearest(f0.segmentation, uv)
    flow = np.zeros_like(points)
    for body in np.unique(bodies):
        if body < 0 or body >= len(f0.body_poses):
            continue  # no geometry there (background beyond the far plane): no motion
        motion = _pose_matrix(f1.body_poses[body]) @ np.linalg.inv(_pose_matrix(f0.body_poses[body]))
        sel = bodies == body
        flow[sel] = points[sel] @ motion[:3, :3].T + motion[:3, 3] - points[sel]
    return to_camera_flow(flow, f0)


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid (R, t) with dst ~ src @ R.T + t."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, cd - cs @ rot.T


def icp(src: np.ndarray, dst: np.ndarray, tree: cKDTree | None = None, iterations: int = 30,
        tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Point-to-point ICP from the identity (per-step motions are small): (R, t) aligning src to dst.
    Pairs farther than 3x the median distance (at least 1 cm) are dropped as non-overlap."""
    tree = tree or cKDTree(dst)
    rot, trans = np.eye(3), np.zeros(3)
    previous = np.inf
    for _ in range(iterations):
        dist, idx = tree.query(src @ rot.T + trans)
        keep = dist <= max(3.0 * np.median(dist), 0.01)
        if keep.sum() < 3:
            break
        rot, trans = kabsch(src[keep], dst[idx[keep]])
        error = dist[keep].mean()
        if previous - error < tol:
            break
        previous = error
    return rot, trans


def dense_cloud(frame: FlowFrame, max_points: int) -> tuple[np.ndarray, np.ndarray | None]:
    """World points of a pixel grid thinned to about max_points, and their segment ids."""
    h, w = frame.depth.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / max_points))))
    uv = pixel_grid(h, w, stride)
    depth = nearest(frame.depth, uv).astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    points = to_world(lift(depth[valid], frame.intrinsics, uv[valid]), frame.extrinsics)
    segments = None if frame.segmentation is None else nearest(frame.segmentation, uv)[valid]
    return points, segments


@register_flow_source("icp", "the paper's stage-1 labels: ICP of consecutive depth point clouds, one rigid fit per segment")
def icp_flow(f0: FlowFrame, f1: FlowFrame, uv: np.ndarray, per_segment: bool = True, max_points: int = 8192,
             min_segment_points: int = 20) -> np.ndarray:
    """(N, 2) query pixels of f0 -> (N, 3) flow in f0's camera frame."""
    cloud0, seg0 = dense_cloud(f0, max_points)
    cloud1, seg1 = dense_cloud(f1, max_points)
    query = query_world_points(f0, uv)
    tree1 = cKDTree(cloud1)
    rot, trans = icp(cloud0, cloud1, tree1)
    # Global fallback (the paper's literal recipe): rigid fit, then nearest-neighbour correspondence.
    _, idx = tree1.query(query @ rot.T + trans)
    flow = cloud1[idx] - query
    if per_segment and seg0 is not None and seg1 is not None and f0.segmentation is not None:
        query_seg = nearest(f0.segmentation, uv)
        for segment in np.unique(query_seg):
            src, dst = cloud0[seg0 == segment], cloud1[seg1 == segment]
            if segment < 0 or len(src) < min_segment_points or len(dst) < min_segment_points:
                continue
            r, t = icp(src, dst)
            sel = query_seg == segment
            flow[sel] = query[sel] @ r.T + t - query[sel]
    return to_camera_flow(flow, f0)


def flow_labels(source: str, f0: FlowFrame, f1: FlowFrame, uv: np.ndarray) -> np.ndarray:
    """Labels from the named source: (N, 2) query pixels of f0 -> (N, 3) float32 flow, metres."""
    return np.asarray(FLOW_SOURCES.get(source)(f0, f1, uv), dtype=np.float32)
