"""Camera geometry for `lamp-bench serve`: LaMP lifts image features to 3D with the camera intrinsics,
which neither protocol carries. Three sources, in order of precedence per request:

1. "lamp/intrinsics" / "lamp/extrinsics" keys that lamp-bench's own client sends (`--camera-from-client`
   declares that every request will carry them);
2. a calibration file (`--camera FILE`, JSON or TOML), one table per camera role:

       [third_person]                       # or "wrist"
       width = 256                          # the image size the intrinsics are for
       height = 256
       intrinsics = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # OpenCV convention, pixel centres at integers
       extrinsics = [[...4x4 camera-to-world...]]            # optional

3. a named suite's camera (`--camera-from-suite NAME`): the geometry of the suite's first episode.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamp_bench.harness.config import ConfigError, tomllib
from lamp_bench.harness.policy import CAMERA_ROLES, PolicyNeeds


@dataclass
class CameraGeometry:
    """Per role: (3, 3) intrinsics for a square `sizes[role]` image, optional (4, 4) camera-to-world."""

    intrinsics: dict[str, np.ndarray] = field(default_factory=dict)
    extrinsics: dict[str, np.ndarray] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    source: str = "none"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "roles": sorted(self.intrinsics), "sizes": self.sizes}


def _matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a {shape[0]}x{shape[1]} list of numbers") from None
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise ConfigError(f"{what} must be a finite {shape[0]}x{shape[1]} matrix; got shape {m.shape}")
    return m


def load_camera_file(path: Path) -> CameraGeometry:
    if not path.is_file():
        raise ConfigError(f"camera calibration file {path} does not exist")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"camera calibration file {path} is not valid {path.suffix[1:] or 'JSON'}: {error}") from None
    geometry = CameraGeometry(source=f"file:{path}")
    for role, entry in data.items():
        if role not in CAMERA_ROLES:
            raise ConfigError(f"{path}: unknown camera role {role!r}; roles: {', '.join(CAMERA_ROLES)}")
        if not isinstance(entry, dict) or "intrinsics" not in entry:
            raise ConfigError(f"{path}: [{role}] needs `intrinsics` (3x3), `width` and `height`")
        width, height = entry.get("width"), entry.get("height")
        if not isinstance(width, int) or width != height:
            raise ConfigError(f"{path}: [{role}] needs integer width == height (square images; got {width}x{height})")
        geometry.intrinsics[role] = _matrix(entry["intrinsics"], (3, 3), f"{path}: [{role}] intrinsics")
        geometry.sizes[role] = width
        if "extrinsics" in entry:
            geometry.extrinsics[role] = _matrix(entry["extrinsics"], (4, 4), f"{path}: [{role}] extrinsics")
    if not geometry.intrinsics:
        raise ConfigError(f"camera calibration file {path} names no camera")
    return geometry


def geometry_from_suite(name: str, needs: PolicyNeeds, suite_kwargs: dict[str, Any]) -> CameraGeometry:
    """The suite's cameras at the policy's image size, read from the first episode of its first task."""
    from dataclasses import replace

    from lamp_bench.harness.registry import SUITES

    suite = SUITES.build(name, **suite_kwargs)
    env = suite.make_env(replace(needs, depth=False, segmentation=False, privileged=False, proprio=False))
    try:
        obs = env.reset(suite.episodes([suite.tasks()[0].task_id], 1, 0)[0])
    finally:
        env.close()
    return CameraGeometry(intrinsics=dict(obs.intrinsics), extrinsics=dict(obs.extrinsics),
                          sizes={r: int(im.shape[0]) for r, im in obs.images.items()}, source=f"suite:{name}")


def needs_intrinsics(policy: Any) -> bool:
    """Whether a policy lifts image features to 3D: LaMP variants with the motion pathway on, or any
    policy that declares `needs_intrinsics = True`."""
    return bool(getattr(policy, "needs_intrinsics", False) or getattr(policy, "use_motion", False))
