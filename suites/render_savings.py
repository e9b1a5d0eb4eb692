"""Rendering savings for LIBERO's offscreen renderer (robosuite's MjRenderContext, MuJoCo 3).

Two kinds of saving, kept apart:

* exact savings (`EXACT_SAVINGS`) must leave every observation bit-identical. Each is enabled only for a
  (suite, task, camera, render size) that `benchmarks/render_proof.py` proved on this rendering stack
  (MuJoCo version, GL backend and renderer, asset pack): whole episodes under a fixed action sequence,
  every frame hashed with and without the saving, never a difference. The proof lives in
  `suites/render_proof.json`; anything it does not list is unproven, and unproven means off.
    - "no_reflection": the reflection pass (`mjRND_REFLECTION`) off. MuJoCo draws the whole scene once
      more, mirrored, for every reflective plane or box in view; where that draws nothing visible it is
      pure cost. On the shared asset pack the only reflective box in LIBERO's scenes is the flat stove,
      and its reflection is visible: scenes with it fail the proof, scenes without it pass and save
      nothing (benchmarks/results/render_proof*.json).
  A runtime guard (`guard_paths`) re-checks at every episode start: one render with and one without the
  saving, compared; a camera whose frames differ falls back to the full path for the episode, and the
  outcome goes into the episode's info.
  Measured and not used: an offscreen buffer of the render size (256x256) instead of the model's 640x480
  was bit-identical but saved no measurable time (benchmarks/render_breakdown.py: buffer_640_ms), while a
  second MjrContext per episode (a hard reset frees the first) costs 0.4-1.9 s of texture upload on llvmpipe.
* `render="fast"`: MSAA off (changes pixels: mean ~1.2 grey levels). robosuite's own offscreen context is
  built without multisampling and at the render size (`fast_render_xml` edits the model XML's <visual>
  before each load). A protocol of its own (recorded in the suite's protocol identity), never the default,
  never mixed with exact-render episodes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lamp_bench.harness import config

RENDER_MODES = ("exact", "fast")
PROOF_FILE = Path(__file__).with_name("render_proof.json")
PROOF_FORMAT = 1


@dataclass(frozen=True)
class RenderPath:
    """How one camera frame is drawn. The default is robosuite's own path (sim.render)."""

    reflection: bool = True
    msaa: bool = True  # False: the context was built without multisampling (render="fast")

    @property
    def name(self) -> str:
        parts = [n for n, on in (("no_reflection", not self.reflection), ("no_msaa", not self.msaa)) if on]
        return "+".join(parts) or "full"

    @property
    def is_full(self) -> bool:
        return self == FULL_PATH


FULL_PATH = RenderPath()
FAST_PATH = RenderPath(msaa=False)
# Exact savings in order of preference (largest saving first); each is proven on its own.
EXACT_SAVINGS: dict[str, RenderPath] = {"no_reflection": RenderPath(reflection=False)}


class RenderProofError(config.ConfigError):
    """The render proof file is unreadable or of another format."""


# ---------------------------------------------------------------------------------------------- proof


def proof_key(suite: str, task: str, camera: str, size: int) -> str:
    return f"{suite}/{task}/{camera}/{size}"


@dataclass(frozen=True)
class RenderProof:
    """Proof results per (suite, task, camera, size) and the stack they were measured on."""

    stack: Mapping[str, Any] = field(default_factory=dict)
    entries: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = PROOF_FILE) -> "RenderProof":
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise RenderProofError(f"render proof {path} is not JSON ({error}); re-run benchmarks/render_proof.py") from None
        if data.get("format") != PROOF_FORMAT:
            raise RenderProofError(f"render proof {path} has format {data.get('format')!r}, expected {PROOF_FORMAT}; "
                                   "re-run benchmarks/render_proof.py")
        return cls(stack=data.get("stack", {}), entries=data.get("entries", {}))

    def to_json(self) -> dict[str, Any]:
        return {"format": PROOF_FORMAT, "stack": dict(self.stack),
                "entries": {k: self.entries[k] for k in sorted(self.entries)}}

    @property
    def identity(self) -> str:
        """Hash of the proof's content: which savings a run may use follows from it."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def proven(self, key: str, saving: str, stack: Mapping[str, Any], depth: bool) -> bool:
        """True only where the proof ran whole episodes on this very stack and no frame ever differed."""
        if not self.stack or dict(self.stack) != dict(stack):
            return False
        result = self.entries.get(key, {}).get(saving)
        if not result or result.get("frames", 0) <= 0 or not result.get("whole_episodes"):
            return False
        if not result.get("rgb_identical"):
            return False
        return bool(result.get("depth_identical")) if depth else True

    def merged(self, stack: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]) -> "RenderProof":
        """This proof plus new entries; a proof made on another stack is replaced, never mixed."""
        kept = dict(self.entries) if dict(self.stack) == dict(stack) else {}
        kept.update(entries)
        return RenderProof(stack=dict(stack), entries=kept)


def stack_identity(context, assets_identity: str) -> dict[str, Any]:
    """What pixel identity depends on: MuJoCo, the GL backend and driver, the asset pack."""
    import mujoco
    from OpenGL import GL

    context.gl_ctx.make_current()
    renderer = GL.glGetString(GL.GL_RENDERER)
    version = GL.glGetString(GL.GL_VERSION)
    return {"mujoco": mujoco.__version__, "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "gl_renderer": renderer.decode() if renderer else None, "gl_version": version.decode() if version else None,
            "assets_identity": assets_identity}


def choose_paths(proof: RenderProof, stack: Mapping[str, Any], keys: Mapping[str, str], depth: bool,
                 mode: str) -> dict[str, RenderPath]:
    """The render path per camera: fast mode's, else the largest proven exact saving, else the full path."""
    if mode not in RENDER_MODES:
        raise config.ConfigError(f"render must be one of {', '.join(RENDER_MODES)}; got {mode!r}")
    if mode == "fast":
        return {camera: FAST_PATH for camera in keys}
    paths = {}
    for camera, key in keys.items():
        paths[camera] = next((path for saving, path in EXACT_SAVINGS.items()
                              if proof.proven(key, saving, stack, depth)), FULL_PATH)
    return paths


# ---------------------------------------------------------------------------------------------- renderer


class OffscreenRenderer:
    """Draws cameras of one loaded model through robosuite's offscreen context: the full path is robosuite's
    own sim.render; a saving draws the same scene with the reflection flag off (same context, same buffer)."""

    def __init__(self, sim, size: int):
        self.sim = sim
        self.size = size
        self.context = sim._render_context_offscreen

    def render(self, camera: str, path: RenderPath, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(rgb, depth or None) bottom row first, as robosuite returns them."""
        size = self.size
        # robosuite never makes its context current before drawing, and freeing any of its EGL contexts
        # releases the thread's current one (eglReleaseThread); two environments in one process would draw
        # into whichever context happens to be current
        self.context.gl_ctx.make_current()
        if path.reflection:
            out = self.sim.render(camera_name=camera, width=size, height=size, depth=depth)
            return out if depth else (out, None)
        return self._render_without_reflection(self.sim.model.camera_name2id(camera), depth)

    def _render_without_reflection(self, camera_id: int, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import mujoco

        ctx, size = self.context, self.size
        flag = mujoco.mjtRndFlag.mjRND_REFLECTION
        before = ctx.scn.flags[flag]
        ctx.scn.flags[flag] = 0
        try:  # robosuite's own render and read-back, with the one flag changed
            ctx.render(width=size, height=size, camera_id=camera_id)
            out = ctx.read_pixels(size, size, depth=depth)
        finally:
            ctx.scn.flags[flag] = before
        return out if depth else (out, None)


def fast_render_xml(size: int) -> Callable[[str], str]:
    """robosuite XML processor for render="fast": offscreen buffer of the render size, no multisampling."""

    def process(xml: str) -> str:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(xml)
        visual = root.find("visual")
        if visual is None:
            visual = ET.SubElement(root, "visual")
        for tag, values in (("quality", {"offsamples": "0"}), ("global", {"offwidth": str(size), "offheight": str(size)})):
            element = visual.find(tag)
            if element is None:
                element = ET.SubElement(visual, tag)
            element.attrib.update(values)
        return ET.tostring(root, encoding="unicode")

    return process


# ---------------------------------------------------------------------------------------------- guard


@dataclass
class GuardOutcome:
    """One camera at one episode start: the path it was going to use and whether the check held."""

    camera: str
    path: str
    result: str  # "passed", "failed" (fell back to the full path), "not_checked" (full or fast path)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "guard": self.result}


def frames_equal(a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None]) -> bool:
    if not np.array_equal(a[0], b[0]):
        return False
    return a[1] is None or b[1] is None or np.array_equal(a[1], b[1])


def guard_paths(render: Callable[[str, RenderPath], tuple[np.ndarray, np.ndarray | None]],
                paths: Mapping[str, RenderPath]) -> tuple[dict[str, RenderPath], list[GuardOutcome],
                                                        dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """Render each camera with its exact saving and with the full path; a difference sends the camera back to
    the full path. Returns the paths to use, the outcomes, and the frames just drawn on the paths in use
    (the episode's first observation, so the guard costs one extra render per camera)."""
    used, outcomes, frames = {}, [], {}
    for camera, path in paths.items():
        if path.is_full or not path.msaa:
            used[camera] = path
            outcomes.append(GuardOutcome(camera, path.name, "not_checked"))
            continue
        saved, full = render(camera, path), render(camera, FULL_PATH)
        ok = frames_equal(saved, full)
        used[camera] = path if ok else FULL_PATH
        frames[camera] = saved if ok else full
        outcomes.append(GuardOutcome(camera, path.name, "passed" if ok else "failed"))
    return used, outcomes, frames


def frame_digest(frame: tuple[np.ndarray, np.ndarray | None]) -> tuple[str, str | None]:
    rgb, z = frame
    return (hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
            None if z is None else hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest())


def describe(paths: Mapping[str, RenderPath], outcomes: Sequence[GuardOutcome], mode: str,
             proof_identity: str) -> dict[str, Any]:
    return {"mode": mode, "proof": proof_identity,
            "cameras": {o.camera: {**o.to_dict(), "used": paths[o.camera].name} for o in outcomes}}


# ---------------------------------------------------------------------------------------------- per episode


@dataclass
class RenderSetup:
    """What a LIBERO suite hands its environments: the render mode, the proof, and how to name a proof entry."""

    mode: str = "exact"
    proof: RenderProof = field(default_factory=RenderProof)
    assets_identity: str = ""
    key: Callable[[int, str], str] | None = None  # (task id, MuJoCo camera) -> proof key; None: no savings


class EpisodeRendering:
    """The cameras of one episode: paths chosen from the proof, checked by the guard at the episode start."""

    def __init__(self, setup: RenderSetup, sim, size: int, task_id: int, cameras: Sequence[str], depth: bool):
        self.renderer = OffscreenRenderer(sim, size)
        self.depth = depth
        stack = stack_identity(self.renderer.context, setup.assets_identity) if setup.key else {}
        keys = {c: setup.key(task_id, c) if setup.key else "" for c in cameras}
        wanted = choose_paths(setup.proof, stack, keys, depth, setup.mode)
        self.paths, outcomes, self._pending = guard_paths(lambda c, p: self.renderer.render(c, p, depth), wanted)
        self.info = describe(self.paths, outcomes, setup.mode, setup.proof.identity)

    def frame(self, camera: str) -> tuple[np.ndarray, np.ndarray | None]:
        if camera in self._pending:  # drawn by the guard for this very state
            return self._pending.pop(camera)
        return self.renderer.render(camera, self.paths[camera], self.depth)

    def close(self) -> None:
        """Drop the references to the model and its context before a reset frees them (robosuite frees
        its context when the last reference goes; it must go while it is still the current one)."""
        self.renderer = None
        self._pending.clear()
