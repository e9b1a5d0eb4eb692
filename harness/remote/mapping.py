"""Suite observations <-> protocol requests, and protocol replies -> lamp-bench's 7-D actions.

lamp-bench's observations are already rotated 180 degrees (LIBERO renders 256 px and the suite turns
them as OpenVLA does), so both protocols' `[::-1, ::-1]` flip is the suite's own; only the size differs.

LIBERO and LIBERO-Plus (suite names libero_*), family "libero":
  openpi (its examples/libero/main.py):
    observation/image        third_person, rendered 256, resized with padding (bilinear) to 224
    observation/wrist_image  wrist, the same
    observation/state        f8[8]: eef position, axis-angle of the eef quaternion, 2 gripper joints;
                             axis-angle as robosuite's quat2axisangle (no antipodal step: ~(+3.14, 0, -0.09)
                             at LIBERO's home pose)
    prompt                   the task instruction
    reply actions (H, 7)     LIBERO's own deltas, executed as-is (no gripper binarisation)
  vla-eval (vla_eval.benchmarks.libero):
    images.agentview / images.wrist  256 px, not resized
    task_description                 the instruction
    states                           f8[8] as above, axis-angle with the antipodal step (q -> -q if w < 0:
                                     ~(-3.14, 0, 0.09) at home); `controller_states` is not sent
    reply actions (7,)               gripper binarised: g < 0 -> -1 (open), else +1 (close)
SimplerEnv-WidowX (simpler_widowx), family "widowx" (vla-eval's vla_eval.benchmarks.simpler; openpi has
no WidowX example, so the openpi request mirrors it under openpi's key names):
  images.primary (openpi: observation/image)  third_person, the suite's square resize of the 640x480 view
  states (openpi: observation/state)          f4[8]: eef position, quaternion wxyz, gripper opening in
                                              [0, 1] (1 = open); world frame (vla-eval sends base frame)
  reply actions (7,) / (H, 7)                 BridgeData units: metres and radians (axis-angle), gripper
                                              1 = open; converted to lamp-bench's form by / 0.05, / 0.5,
                                              and g > 0.5 -> -1 (open) else +1 (binarised), or 1 - 2 g
Every choice is a field of `WireOptions`, recorded in the remote policy's policy_config.

lamp-bench's own client adds "lamp/..." keys (`send_extras`): the raw proprioception, each camera's
intrinsics (for the image as sent) and extrinsics, and the task; `lamp-bench serve` prefers them, so a
policy served to lamp-bench sees exactly what it would see in-process. Other servers ignore them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from lamp_bench.harness.policy import ACTION_DIM, Observation, Task
from lamp_bench.harness.remote.errors import RemoteProtocolError

PROTOCOLS = ("openpi", "vla-eval")
LIBERO_RENDER = 256  # LIBERO's render side under both reference benchmarks
WIDOWX_POS_SCALE, WIDOWX_ROT_SCALE = 0.05, 0.5  # lamp-bench's action units (harness.policy)
WIDOWX_FINGERS = (0.014, 0.038)  # closed / open finger joint positions (metres)
EXTRA_PROPRIO, EXTRA_INTRINSICS, EXTRA_EXTRINSICS, EXTRA_TASK = "lamp/proprio", "lamp/intrinsics", "lamp/extrinsics", "lamp/task"
OPENPI_IMAGE_KEYS = {"third_person": "observation/image", "wrist": "observation/wrist_image"}
VLA_EVAL_IMAGE_KEYS = {"libero": {"third_person": "agentview", "wrist": "wrist"}, "widowx": {"third_person": "primary"}}
FAMILY_CAMERAS = {"libero": ("third_person", "wrist"), "widowx": ("third_person",)}


@dataclass(frozen=True)
class WireOptions:
    """How observations go on the wire and replies come back; defaults follow each protocol's reference."""

    protocol: str
    image_size: int  # image side on the wire
    resize: str  # "pad": render 256 and resize with padding (openpi); "suite": the suite renders image_size
    axis_angle: str  # "robosuite" (no antipodal step, openpi) | "antipodal" (vla-eval)
    binarize_gripper: bool  # vla-eval's benchmarks binarise; openpi's LIBERO example does not
    clip_actions: bool = True  # simulators clip to [-1, 1] themselves; lamp-bench's runner refuses > 1
    send_extras: bool = True  # the "lamp/..." keys (see the module docstring)
    image_format: str = "raw"  # vla-eval only: png | jpeg | raw (lossless raw is cheapest on a LAN)

    @classmethod
    def for_protocol(cls, protocol: str, **overrides: Any) -> "WireOptions":
        if protocol == "openpi":
            base = cls("openpi", 224, "pad", "robosuite", False)
        elif protocol == "vla-eval":
            base = cls("vla-eval", LIBERO_RENDER, "suite", "antipodal", True)
        else:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        options = replace(base, **given)
        options.validate()
        return options

    def validate(self) -> None:
        if self.resize not in ("pad", "suite"):
            raise ValueError(f"resize must be pad or suite; got {self.resize!r}")
        if self.axis_angle not in ("robosuite", "antipodal"):
            raise ValueError(f"axis_angle must be robosuite or antipodal; got {self.axis_angle!r}")
        if self.image_format not in ("png", "jpeg", "raw"):
            raise ValueError(f"image_format must be png, jpeg or raw; got {self.image_format!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16; got {self.image_size}")

    def suite_image_size(self, family: str) -> int:
        """The side the suite renders/resizes to before the client's own resize."""
        return LIBERO_RENDER if self.resize == "pad" and family == "libero" else self.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suite_family(suite: str | None) -> str:
    return "widowx" if suite and suite.startswith("simpler") else "libero"


# --------------------------------------------------------------------------------------- geometry


def axis_angle_from_quat(quat_xyzw: np.ndarray, convention: str) -> np.ndarray:
    """Axis-angle (3,) of a unit quaternion; "antipodal" first flips q to w >= 0 (angle <= pi)."""
    q = np.asarray(quat_xyzw, dtype=np.float64).copy()
    if convention == "antipodal" and q[3] < 0:
        q = -q
    w = float(np.clip(q[3], -1.0, 1.0))
    s = np.sqrt(1.0 - w * w)
    if np.isclose(s, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / s


def quat_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternion xyzw of an axis-angle vector (either sign convention gives the same rotation)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 0.0, 1.0])
    return np.concatenate([v / angle * np.sin(angle / 2), [np.cos(angle / 2)]])


def scale_intrinsics(k: np.ndarray, source: int, target: int) -> np.ndarray:
    """Intrinsics of a square image resized from `source` to `target` px (pixel centres at integers)."""
    if source == target:
        return np.asarray(k, dtype=np.float64)
    s = target / source
    k = np.asarray(k, dtype=np.float64).copy()
    k[0, 0] *= s
    k[1, 1] *= s
    k[0, 2] = (k[0, 2] + 0.5) * s - 0.5
    k[1, 2] = (k[1, 2] + 0.5) * s - 0.5
    return k


def resize_image(image: np.ndarray, size: int, pad: bool) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): bilinear with zero padding to keep the aspect (openpi's
    resize_with_pad) when `pad`, else a Lanczos stretch (the suites' resize)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    from PIL import Image

    source = Image.fromarray(np.ascontiguousarray(image))
    if not pad:
        return np.asarray(source.resize((size, size), Image.LANCZOS))
    h, w = image.shape[:2]
    ratio = max(w / size, h / size)
    new_w, new_h = int(w / ratio), int(h / ratio)
    canvas = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = np.asarray(source.resize((new_w, new_h), Image.BILINEAR))
    return canvas


# --------------------------------------------------------------------------------------- requests


def protocol_state(obs: Observation, family: str, options: WireOptions) -> np.ndarray:
    if obs.proprio is None:
        raise ValueError("the remote policy needs proprioception; the suite delivered none")
    p = np.asarray(obs.proprio, dtype=np.float64)
    if family == "widowx":
        opening = (p[7:9].mean() - WIDOWX_FINGERS[0]) / (WIDOWX_FINGERS[1] - WIDOWX_FINGERS[0])
        return np.concatenate([p[:3], p[6:7], p[3:6], [np.clip(opening, 0.0, 1.0)]]).astype(np.float32)
    return np.concatenate([p[:3], axis_angle_from_quat(p[3:7], options.axis_angle), p[7:9]])


def wire_images(obs: Observation, family: str, options: WireOptions) -> dict[str, np.ndarray]:
    pad = options.resize == "pad"
    return {role: resize_image(obs.images[role], options.image_size, pad)
            for role in FAMILY_CAMERAS[family] if role in obs.images}


def extras(obs: Observation, task: Task | None, seed: int, episode: int, options: WireOptions) -> dict[str, Any]:
    sizes = {role: image.shape[0] for role, image in obs.images.items()}
    out: dict[str, Any] = {
        EXTRA_INTRINSICS: {r: scale_intrinsics(k, sizes.get(r, options.image_size), options.image_size)
                           for r, k in obs.intrinsics.items()},
        EXTRA_EXTRINSICS: {r: np.asarray(e, dtype=np.float64) for r, e in obs.extrinsics.items()},
    }
    if obs.proprio is not None:
        out[EXTRA_PROPRIO] = np.asarray(obs.proprio, dtype=np.float32)
    if task is not None:
        out[EXTRA_TASK] = {"suite": task.suite, "task_id": task.task_id, "name": task.name, "dataset": task.dataset,
                           "seed": int(seed), "episode": int(episode)}
    return out


def build_request(obs: Observation, family: str, options: WireOptions, task: Task | None = None, seed: int = 0,
                  episode: int = 0) -> dict[str, Any]:
    """The request (openpi) or observation payload (vla-eval) for one observation."""
    images = wire_images(obs, family, options)
    state = protocol_state(obs, family, options)
    if options.protocol == "openpi":
        request: dict[str, Any] = {OPENPI_IMAGE_KEYS[r]: im for r, im in images.items()}
        request.update({"observation/state": state, "prompt": obs.instruction})
    else:
        names = VLA_EVAL_IMAGE_KEYS[family]
        request = {"images": {names[r]: im for r, im in images.items()}, "task_description": obs.instruction,
                   "states": state}
    if options.send_extras:
        request.update(extras(obs, task, seed, episode, options))
    return request


# --------------------------------------------------------------------------------------- replies


def _as_actions(value: Any, what: str) -> np.ndarray:
    if value is None:
        raise RemoteProtocolError(f"{what} carries no actions")
    try:
        actions = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RemoteProtocolError(f"{what}: actions are not numeric") from None
    if not np.all(np.isfinite(actions)):
        raise RemoteProtocolError(f"{what}: actions are not finite")
    return actions


def openpi_actions(reply: Any) -> np.ndarray:
    """(H, 7) from an openpi reply; a 1-D (7,) reply is one row."""
    if not isinstance(reply, dict):
        raise RemoteProtocolError(f"openpi reply is a {type(reply).__name__}, expected a map with 'actions'")
    actions = _as_actions(reply.get("actions"), "openpi reply")
    if actions.ndim == 1:
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != ACTION_DIM:
        raise RemoteProtocolError(f"openpi reply: actions of shape {actions.shape}, expected (H, {ACTION_DIM})")
    return actions


def vla_eval_action(payload: dict[str, Any]) -> np.ndarray:
    """(7,) from a vla-eval `action` payload ("actions", or "action")."""
    value = payload.get("actions", payload.get("action"))
    action = _as_actions(value, "vla-eval action")
    if action.shape != (ACTION_DIM,):
        raise RemoteProtocolError(f"vla-eval action of shape {action.shape}, expected ({ACTION_DIM},)")
    return action


def to_lamp_action(action: np.ndarray, family: str, options: WireOptions) -> np.ndarray:
    """One protocol action row -> lamp-bench's [-1, 1] 7-D form (see harness.policy)."""
    a = np.asarray(action, dtype=np.float64).copy()
    if family == "widowx":
        a[:3] /= WIDOWX_POS_SCALE
        a[3:6] /= WIDOWX_ROT_SCALE
        a[6] = (-1.0 if a[6] > 0.5 else 1.0) if options.binarize_gripper else 1.0 - 2.0 * a[6]
    elif options.binarize_gripper:
        a[6] = -1.0 if a[6] < 0 else 1.0
    return np.clip(a, -1.0, 1.0) if options.clip_actions else a
