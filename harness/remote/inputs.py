"""Server side of `mapping`: a protocol request -> the lamp-bench Observation and Task a served policy sees.

Images are resized to the policy's `needs.image_size` (Lanczos, as the suites do) and the camera
geometry scaled with them. Proprioception comes from "lamp/proprio" when lamp-bench's client sent it,
else from the protocol state (eef position + axis-angle + gripper joints for LIBERO; position +
quaternion wxyz + opening for WidowX)."""
from __future__ import annotations

from typing import Any

import numpy as np

from lamp_bench.harness.policy import Observation, PolicyNeeds, Task
from lamp_bench.harness.remote import mapping
from lamp_bench.harness.remote.cameras import CameraGeometry
from lamp_bench.harness.remote.errors import RemoteProtocolError


class BadRequest(ValueError):
    """A request the server cannot turn into an observation; answered with an error, serving goes on."""


def _images(request: dict[str, Any], protocol: str) -> tuple[dict[str, np.ndarray], str]:
    """role -> image, and the suite family the request's keys belong to."""
    if protocol == "openpi":
        found = {role: request.get(key) for role, key in mapping.OPENPI_IMAGE_KEYS.items()}
        family = "libero" if request.get("observation/wrist_image") is not None else "widowx"
    else:
        images = request.get("images")
        if not isinstance(images, dict):
            raise BadRequest("observation has no `images` map")
        family = "widowx" if "primary" in images else "libero"
        found = {role: images.get(key) for role, key in mapping.VLA_EVAL_IMAGE_KEYS[family].items()}
    out = {}
    for role, image in found.items():
        if image is None:
            continue
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadRequest(f"{role} image must be (H, W, 3) uint8; got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
        out[role] = image
    if not out:
        raise BadRequest("request carries no image")
    return out, family


def _proprio(request: dict[str, Any], protocol: str, family: str) -> np.ndarray | None:
    extra = request.get(mapping.EXTRA_PROPRIO)
    if extra is not None:
        extra = np.asarray(extra, dtype=np.float32).reshape(-1)
        if extra.shape != (9,):
            raise BadRequest(f"{mapping.EXTRA_PROPRIO} must have 9 values; got {extra.shape}")
        return extra
    state = request.get("observation/state" if protocol == "openpi" else "states")
    if state is None:
        return None
    try:
        s = np.asarray(state, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BadRequest("state is not numeric") from None
    if s.shape != (8,) or not np.all(np.isfinite(s)):
        raise BadRequest(f"state must be 8 finite values; got shape {s.shape}")
    if family == "widowx":
        fingers = mapping.WIDOWX_FINGERS[0] + s[7] * (mapping.WIDOWX_FINGERS[1] - mapping.WIDOWX_FINGERS[0])
        quat_xyzw = np.concatenate([s[4:7], s[3:4]])
        return np.concatenate([s[:3], quat_xyzw, [fingers, fingers]]).astype(np.float32)
    return np.concatenate([s[:3], mapping.quat_from_axis_angle(s[3:6]), s[6:8]]).astype(np.float32)


def _matrices(value: Any, shape: tuple[int, int], what: str) -> dict[str, np.ndarray]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a map role -> matrix")
    out = {}
    for role, m in value.items():
        m = np.asarray(m, dtype=np.float64)
        if m.shape != shape:
            raise BadRequest(f"{what}[{role}] has shape {m.shape}, expected {shape}")
        out[str(role)] = m
    return out


def to_observation(request: Any, protocol: str, needs: PolicyNeeds, geometry: CameraGeometry,
                   require_intrinsics: bool) -> Observation:
    if not isinstance(request, dict):
        raise BadRequest(f"request is a {type(request).__name__}, expected a map")
    images, family = _images(request, protocol)
    instruction = request.get("prompt" if protocol == "openpi" else "task_description", "")
    if not isinstance(instruction, str):
        raise BadRequest("the instruction (prompt / task_description) must be a string")
    size = needs.image_size
    obs = Observation(instruction)
    sent_k = _matrices(request.get(mapping.EXTRA_INTRINSICS), (3, 3), mapping.EXTRA_INTRINSICS)
    sent_e = _matrices(request.get(mapping.EXTRA_EXTRINSICS), (4, 4), mapping.EXTRA_EXTRINSICS)
    for role, image in images.items():
        obs.images[role] = mapping.resize_image(image, size, pad=False)
        if role in sent_k:
            obs.intrinsics[role] = mapping.scale_intrinsics(sent_k[role], image.shape[0], size)
        elif role in geometry.intrinsics:
            obs.intrinsics[role] = mapping.scale_intrinsics(geometry.intrinsics[role], geometry.sizes[role], size)
        if role in sent_e:
            obs.extrinsics[role] = sent_e[role]
        elif role in geometry.extrinsics:
            obs.extrinsics[role] = geometry.extrinsics[role]
    missing = [r for r in needs.cameras if r not in obs.images]
    if missing:
        raise BadRequest(f"the served policy needs camera(s) {missing}; the request has {sorted(obs.images)}")
    if require_intrinsics and any(r not in obs.intrinsics for r in needs.cameras):
        raise BadRequest(f"the served policy lifts features to 3D and needs intrinsics for {list(needs.cameras)}; "
                         f"send {mapping.EXTRA_INTRINSICS} or start the server with --camera")
    obs.proprio = _proprio(request, protocol, family)
    if needs.proprio and obs.proprio is None:
        raise BadRequest("the served policy needs proprioception; the request has no state")
    return obs


def task_from(info: Any, instruction: str, default_dataset: str) -> Task:
    """The Task for a slot's reset: from "lamp/task" (or vla-eval's episode_start task map)."""
    info = info if isinstance(info, dict) else {}
    try:
        task_id = int(info.get("task_id", 0))
    except (TypeError, ValueError):
        raise BadRequest("task_id must be an integer") from None
    return Task(suite=str(info.get("suite", "remote")), task_id=task_id, name=str(info.get("name", instruction)),
                instruction=instruction, dataset=str(info.get("dataset") or default_dataset))


def episode_key(request: dict[str, Any], protocol: str) -> tuple:
    """What identifies an episode on openpi, which has no episode messages: lamp-bench's task key when
    sent, else the prompt (a new prompt starts a new episode)."""
    info = request.get(mapping.EXTRA_TASK)
    if isinstance(info, dict):
        return ("lamp", repr(sorted(info.items())))
    return ("prompt", request.get("prompt" if protocol == "openpi" else "task_description"))


def seed_from(info: Any) -> int:
    try:
        return int(info.get("seed", 0)) if isinstance(info, dict) else 0
    except (TypeError, ValueError):
        return 0


__all__ = ["BadRequest", "to_observation", "task_from", "episode_key", "seed_from", "RemoteProtocolError"]
