"""Demonstrations in LIBERO's own HDF5 layout: the writer (lamp-bench's oracle demos) and the low-level
reader shared by our files and official LIBERO datasets.

Layout (one file per task, `<suite>/<task name>_demo.hdf5`, as LIBERO's datasets):
    data                       attrs: problem_info (JSON with language_instruction), bddl_file_name,
                               env_args (JSON), macros_image_convention, num_demos, total, and ours:
                               lamp_bench (JSON: suite, task id/name, dataset key, cameras, image size)
                               and lamp_bench_attempts (JSON list: every rolled-out init state and its
                               outcome, so collection resumes without retrying failures)
    data/demo_<i>              attrs: num_samples, init_state, and ours: init_index, seed
        actions (T, 7)         float64, LIBERO's controller convention = harness.policy's canonical one
        states (T, D)          flattened MuJoCo state before each action
        robot_states (T, 9)    gripper qpos (2), eef pos (3), eef quat xyzw (4): LIBERO's order
        rewards, dones (T,)    uint8, 1 at the last step only
        obs/<cam>_rgb          (T, S, S, 3) uint8, cam in {agentview, eye_in_hand}
        obs/ee_pos, ee_ori, ee_states, gripper_states, joint_states   proprioception as LIBERO
      lamp-bench's additions, for the motion expert and the scene-flow labels:
        obs/<cam>_depth        (T, S, S) float32 metric z-depth (attr units="m"; official files'
                               depth, if any, is robosuite's normalised z-buffer and is ignored)
        obs/<cam>_seg          (T, S, S) int16 MuJoCo body ids (-1 = nothing)
        obs/<cam>_intrinsics   (T, 3, 3) of the S x S image as the reader returns it (see below)
        obs/<cam>_extrinsics   (T, 4, 4) camera-to-world, OpenCV camera axes
        obs/body_poses         (T, n_bodies, 7) world pos + quat xyzw of every body (row = body id;
                               attr names: the LIBERO object owning each body)
        obs/object_poses       (T, n_objects, 7) every LIBERO object/fixture root (attr names)

Image orientation. MuJoCo reads pixels bottom row first, so LIBERO's files hold images upside down
(`macros_image_convention` = "opengl"); OpenVLA rotates them 180 degrees before training, and lamp-bench's
LIBERO suite delivers observations rotated the same way. We therefore store every image-like array
(rgb, depth, segmentation) rotated back by 180 degrees -- the orientation of official files -- and the
reader rotates arrays of "opengl" files by 180 degrees, so official and our files come out exactly as
the suite shows them to a policy. Intrinsics/extrinsics describe that delivered orientation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lamp_bench.harness.config import ConfigError

LAYOUT_VERSION = 1
CAMERA_KEYS = {"third_person": "agentview", "wrist": "eye_in_hand"}  # role -> LIBERO obs key prefix
OPENGL = "opengl"  # upside-down storage (LIBERO's files)
DEMO_SUFFIX = "_demo.hdf5"


class DemoFileError(ConfigError):
    """A demonstration file that cannot be used; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class Frame:
    """One step of a demonstration, as observed before `action` was applied."""

    action: np.ndarray  # (7,)
    images: dict[str, np.ndarray]  # role -> (S, S, 3) uint8, delivered orientation
    proprio: np.ndarray  # (9,) eef xyz, eef quat xyzw, gripper joints (harness.policy)
    state: np.ndarray | None = None  # flattened simulator state
    joints: np.ndarray | None = None  # (7,) arm joint positions
    depth: dict[str, np.ndarray] = field(default_factory=dict)
    segmentation: dict[str, np.ndarray] = field(default_factory=dict)
    intrinsics: dict[str, np.ndarray] = field(default_factory=dict)
    extrinsics: dict[str, np.ndarray] = field(default_factory=dict)
    body_poses: np.ndarray | None = None  # (n_bodies, 7)
    object_poses: np.ndarray | None = None  # (n_objects, 7)


@dataclass
class TaskInfo:
    suite: str
    task_id: int
    task_name: str
    instruction: str
    dataset: str  # action-statistics key
    bddl_file: str = ""


def _rot180(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[:, ::-1, ::-1])  # (T, H, W, ...): rotate every frame


def _axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(quat_xyzw).as_rotvec()


class DemoWriter:
    """Appends successful episodes of one task to its LIBERO-layout file, one short open/close per
    episode (an interrupted run loses at most the episode being written), and records every attempt."""

    def __init__(self, path: Path, task: TaskInfo, cameras: tuple[str, ...], image_size: int):
        self.path = Path(path)
        self.task = task
        self.cameras = cameras
        self.image_size = image_size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._check_existing()

    def _check_existing(self) -> None:
        try:
            with h5py.File(self.path, "r") as f:
                meta = json.loads(f["data"].attrs["lamp_bench"])
                attempted = {a["init_index"] for a in json.loads(f["data"].attrs["lamp_bench_attempts"])}
                # A demo group written by a run killed before it recorded the attempt is incomplete.
                partial = [name for name in f["data"]
                           if int(f["data"][name].attrs.get("init_index", -1)) not in attempted]
        except (OSError, KeyError, json.JSONDecodeError) as error:
            raise DemoFileError(
                f"{self.path} exists but is not a lamp-bench demonstration file we can resume ({error}); "
                "move it away to collect this task again") from None
        if meta["task_name"] != self.task.task_name or tuple(meta["cameras"]) != tuple(self.cameras) \
                or meta["image_size"] != self.image_size:
            raise DemoFileError(
                f"{self.path} holds {meta['task_name']!r} with cameras {meta['cameras']} at {meta['image_size']} px; "
                f"this run asks for {self.task.task_name!r}, {list(self.cameras)} at {self.image_size} px: "
                "choose another --out folder")
        if partial:
            with h5py.File(self.path, "a") as f:
                for name in partial:
                    del f["data"][name]

    def _attempts(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with h5py.File(self.path, "r") as f:
            return json.loads(f["data"].attrs["lamp_bench_attempts"])

    def attempted(self) -> set[int]:
        return {a["init_index"] for a in self._attempts()}

    def successes(self) -> int:
        return sum(a["success"] for a in self._attempts())

    def total_steps(self) -> int:
        """Steps in the file's demonstrations."""
        if not self.path.exists():
            return 0
        with h5py.File(self.path, "r") as f:
            return int(f["data"].attrs["total"])

    def _create(self, f: h5py.File) -> h5py.Group:
        data = f.create_group("data")
        t = self.task
        data.attrs["problem_info"] = json.dumps({"problem_name": t.task_name, "language_instruction": t.instruction,
                                                 "domain_name": t.suite})
        data.attrs["bddl_file_name"] = t.bddl_file
        data.attrs["env_args"] = json.dumps({"env_name": t.suite, "problem_name": t.task_name, "bddl_file": t.bddl_file,
                                             "env_kwargs": {"camera_names": [CAMERA_KEYS[c] for c in self.cameras],
                                                            "camera_heights": self.image_size,
                                                            "camera_widths": self.image_size, "control_freq": 20}})
        data.attrs["macros_image_convention"] = OPENGL
        data.attrs["num_demos"] = 0
        data.attrs["total"] = 0
        data.attrs["lamp_bench"] = json.dumps({
            "layout_version": LAYOUT_VERSION, "suite": t.suite, "task_id": t.task_id, "task_name": t.task_name,
            "instruction": t.instruction, "dataset": t.dataset, "cameras": list(self.cameras),
            "image_size": self.image_size})
        data.attrs["lamp_bench_attempts"] = "[]"
        return data

    def add(self, init_index: int, seed: int, success: bool, frames: list[Frame],
            body_names: list[str] | None = None, object_names: list[str] | None = None) -> None:
        """Record one attempt; write its frames as the next demo_<i> when it succeeded. body_names:
        the object owning each body id (rows of Frame.body_poses); object_names: rows of object_poses."""
        with h5py.File(self.path, "a") as f:
            data = f["data"] if "data" in f else self._create(f)
            if success:
                self._write_demo(data, f"demo_{int(data.attrs['num_demos'])}", init_index, seed, frames,
                                 body_names, object_names)
                data.attrs["num_demos"] = int(data.attrs["num_demos"]) + 1
                data.attrs["total"] = int(data.attrs["total"]) + len(frames)
            attempts = json.loads(data.attrs["lamp_bench_attempts"])
            attempts.append({"init_index": init_index, "seed": seed, "success": success, "steps": len(frames)})
            data.attrs["lamp_bench_attempts"] = json.dumps(attempts)

    def _write_demo(self, data: h5py.Group, name: str, init_index: int, seed: int, frames: list[Frame],
                    body_names: list[str] | None, object_names: list[str] | None) -> None:
        n = len(frames)
        demo = data.create_group(name)
        obs = demo.create_group("obs")

        def put(group: h5py.Group, key: str, array: np.ndarray, image: bool = False) -> h5py.Dataset:
            if image:  # one chunk per frame, so a reader decompresses only the frames it samples
                return group.create_dataset(key, data=array, chunks=(1, *array.shape[1:]), compression="gzip",
                                            compression_opts=4, shuffle=True)
            return group.create_dataset(key, data=array)

        put(demo, "actions", np.stack([fr.action for fr in frames]).astype(np.float64))
        if frames[0].state is not None:
            states = np.stack([fr.state for fr in frames])
            put(demo, "states", states)
            demo.attrs["init_state"] = states[0]
        proprio = np.stack([fr.proprio for fr in frames]).astype(np.float64)  # eef pos, quat, gripper
        put(demo, "robot_states", np.concatenate([proprio[:, 7:9], proprio[:, :7]], axis=1))
        last = np.zeros(n, dtype=np.uint8)
        last[-1] = 1
        put(demo, "rewards", last)
        put(demo, "dones", last)
        ee_ori = _axis_angle(proprio[:, 3:7])
        put(obs, "ee_pos", proprio[:, :3])
        put(obs, "ee_ori", ee_ori)
        put(obs, "ee_states", np.concatenate([proprio[:, :3], ee_ori], axis=1))
        put(obs, "gripper_states", proprio[:, 7:9])
        if frames[0].joints is not None:
            put(obs, "joint_states", np.stack([fr.joints for fr in frames]))
        for role in self.cameras:
            key = CAMERA_KEYS[role]
            put(obs, f"{key}_rgb", _rot180(np.stack([fr.images[role] for fr in frames])), image=True)
            if role in frames[0].depth:
                put(obs, f"{key}_depth", _rot180(np.stack([fr.depth[role] for fr in frames]).astype(np.float32)),
                    image=True).attrs["units"] = "m"
            if role in frames[0].segmentation:
                put(obs, f"{key}_seg", _rot180(np.stack([fr.segmentation[role] for fr in frames]).astype(np.int16)),
                    image=True)
            if role in frames[0].intrinsics:
                put(obs, f"{key}_intrinsics", np.stack([fr.intrinsics[role] for fr in frames]).astype(np.float64))
                put(obs, f"{key}_extrinsics", np.stack([fr.extrinsics[role] for fr in frames]).astype(np.float64))
        if frames[0].body_poses is not None:
            put(obs, "body_poses", np.stack([fr.body_poses for fr in frames])).attrs["names"] = json.dumps(body_names)
        if frames[0].object_poses is not None:
            put(obs, "object_poses", np.stack([fr.object_poses for fr in frames])).attrs["names"] = \
                json.dumps(object_names)
        demo.attrs["num_samples"] = n
        demo.attrs["init_index"] = init_index
        demo.attrs["seed"] = seed


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class DemoFileInfo:
    """What a demonstration file holds (checked by `inspect_demo_file`)."""

    path: Path
    dataset: str  # action-statistics key (suite name)
    instruction: str
    demos: list[str]  # group names, sorted by index
    lengths: list[int]
    cameras: tuple[str, ...]  # roles with rgb
    flipped: bool  # stored upside down (rotate 180 degrees on read)
    has_depth: bool  # metric depth + intrinsics/extrinsics of the third-person camera
    has_segmentation: bool
    has_body_poses: bool
    has_proprio: bool = False  # obs/ee_pos and obs/gripper_states (ours and official files)


def _demo_index(name: str) -> int:
    try:
        return int(name.split("_", 1)[1])
    except (IndexError, ValueError):
        return 1 << 30


def _dataset_key(path: Path, data: h5py.Group) -> str:
    if "lamp_bench" in data.attrs:
        return json.loads(data.attrs["lamp_bench"])["dataset"]
    # Official files: bddl_file_name ends in <suite>/<task>.bddl; else the folder the file sits in.
    bddl = str(data.attrs.get("bddl_file_name", ""))
    parent = Path(bddl).parent.name if bddl else ""
    return parent or path.parent.name


def inspect_demo_file(path: str | Path) -> DemoFileInfo:
    path = Path(path)
    if not path.is_file():
        raise DemoFileError(f"demonstration file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise DemoFileError(f"{path} is not a readable HDF5 file ({error})") from None
    with f:
        if "data" not in f:
            raise DemoFileError(f"{path} has no `data` group: not a LIBERO-layout demonstration file")
        data = f["data"]
        try:
            instruction = json.loads(data.attrs["problem_info"])["language_instruction"]
        except (KeyError, TypeError, json.JSONDecodeError):
            raise DemoFileError(f"{path}: data.attrs['problem_info'] lacks a JSON language_instruction") from None
        if isinstance(instruction, list):  # some LIBERO files store it as a list of words
            instruction = " ".join(instruction)
        demos = sorted((k for k in data if k.startswith("demo_")), key=_demo_index)
        if not demos:
            raise DemoFileError(f"{path} holds no demo_<i> groups")
        lengths, cameras = [], None
        first = data[demos[0]]
        for name in demos:
            demo = data[name]
            if "actions" not in demo or "obs" not in demo:
                raise DemoFileError(f"{path}: {name} lacks `actions` or `obs`")
            actions = demo["actions"]
            if actions.ndim != 2 or actions.shape[1] != 7 or actions.shape[0] < 2:
                raise DemoFileError(f"{path}: {name}/actions has shape {actions.shape}, expected (T >= 2, 7)")
            roles = tuple(r for r, k in CAMERA_KEYS.items() if f"{k}_rgb" in demo["obs"])
            for role in roles:
                rgb = demo["obs"][f"{CAMERA_KEYS[role]}_rgb"]
                if rgb.shape[0] != actions.shape[0] or rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
                    raise DemoFileError(f"{path}: {name}/obs/{CAMERA_KEYS[role]}_rgb is {rgb.dtype} {rgb.shape}; "
                                        f"expected ({actions.shape[0]}, S, S, 3) uint8")
            cameras = roles if cameras is None else tuple(r for r in cameras if r in roles)
            lengths.append(actions.shape[0])
        if not cameras:
            raise DemoFileError(f"{path}: no camera images (obs/agentview_rgb or obs/eye_in_hand_rgb) in every demo")
        obs = first["obs"]
        depth = obs.get("agentview_depth")
        return DemoFileInfo(
            path=path,
            dataset=_dataset_key(path, data),
            instruction=str(instruction),
            demos=demos,
            lengths=lengths,
            cameras=cameras,
            flipped=str(data.attrs.get("macros_image_convention", OPENGL)) == OPENGL,
            has_depth=depth is not None and depth.attrs.get("units") == "m" and "agentview_intrinsics" in obs,
            has_segmentation="agentview_seg" in obs,
            has_body_poses="body_poses" in obs,
            has_proprio="ee_pos" in obs and "gripper_states" in obs,
        )


def find_demo_files(root: str | Path) -> list[Path]:
    """Every `*.hdf5` under a folder (or the file itself), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DemoFileError(f"demonstration folder {root} does not exist")
    return sorted(root.rglob("*.hdf5"))


class DemoReader:
    """Random access to the steps of one file, arrays in the delivered orientation. Opens the HDF5
    file lazily, so a reader can be handed to DataLoader worker processes."""

    def __init__(self, info: DemoFileInfo):
        self.info = info
        self._file: h5py.File | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"info": self.info, "_file": None}

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.info.path, "r")
        return self._file

    def demo(self, index: int) -> h5py.Group:
        return self.file["data"][self.info.demos[index]]

    def _image(self, dataset: h5py.Dataset, t: int | slice) -> np.ndarray:
        array = dataset[t]
        if self.info.flipped:  # rotate 180 degrees: flip the two image axes (rgb has channels last)
            array = array[..., ::-1, ::-1, :] if dataset.ndim == 4 else array[..., ::-1, ::-1]
        return np.ascontiguousarray(array)

    def actions(self, index: int) -> np.ndarray:
        return self.demo(index)["actions"][()]

    def rgb(self, index: int, t: int, role: str) -> np.ndarray:
        return self._image(self.demo(index)["obs"][f"{CAMERA_KEYS[role]}_rgb"], t)

    def depth(self, index: int, t: int | slice) -> np.ndarray:
        return self._image(self.demo(index)["obs"]["agentview_depth"], t)

    def segmentation(self, index: int, t: int | slice) -> np.ndarray:
        return self._image(self.demo(index)["obs"]["agentview_seg"], t)

    def camera(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(T, 3, 3) intrinsics and (T, 4, 4) extrinsics of the third-person camera."""
        obs = self.demo(index)["obs"]
        return obs["agentview_intrinsics"][()], obs["agentview_extrinsics"][()]

    def proprio(self, index: int) -> np.ndarray:
        """(T, PROPRIO_DIM) end-effector position and gripper joints (action_tokenizer.proprio_features)."""
        obs = self.demo(index)["obs"]
        return np.concatenate([obs["ee_pos"][()], obs["gripper_states"][()]], axis=1)

    def body_poses(self, index: int) -> np.ndarray:
        return self.demo(index)["obs"]["body_poses"][()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
