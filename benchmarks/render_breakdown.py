"""Where one rendered LIBERO step's time goes, in lamp-bench's own path (robosuite's offscreen context).

Per camera frame, each stage timed on its own with glFinish after it (llvmpipe and GPU drivers queue work, so
without it the drawing would be billed to the read-back):
  physics      one control step without rendering (LIBERO's env.step, 10 ms of simulated time)
  scene        mjv_updateScene (geoms, lights, camera into the abstract scene)
  draw         mjr_render with the reflection pass off (the scene once)
  reflection   mjr_render with it on, minus draw (the mirrored scene per reflective plane/box in view)
  resolve      mjr_readPixels from the 4x MSAA buffer minus the same from a 1-sample buffer
  readback     mjr_readPixels from a 1-sample buffer (GPU/llvmpipe -> numpy)
  depth_read   the extra read-back of the depth buffer (only policies that need depth pay it)
  flip         OpenVLA's 180-degree rotation (a copy)
  resize       Lanczos resize to the policy's image size
  buffer_640   drawing + reading into robosuite's 640x480 buffer minus a 256x256 one
Then whole env steps per second with one camera: render="exact" (with the savings the proof allows) and
render="fast" (MSAA off); and what one offscreen context costs to create (LIBERO rebuilds it every reset).
Stages are interleaved and repeated; medians reported. The load average goes into the result: on a busy
machine the numbers are indicative only.

Full run (quiet machine): python benchmarks/render_breakdown.py --tasks 0,5 --repeats 30 --steps 60
Small run:                python benchmarks/render_breakdown.py --tasks 0 --repeats 3 --steps 5
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np

from lamp_bench.harness.config import parse_ids
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.suite import Episode

RESULTS = Path(__file__).parent / "results" / "render_breakdown.json"
CAMERAS = ("agentview", "robot0_eye_in_hand")


def timed(fn, finish) -> float:
    started = time.perf_counter()
    fn()
    finish()
    return time.perf_counter() - started


class Stages:
    """The stages of one camera frame on one loaded LIBERO model."""

    def __init__(self, sim, size: int, image_size: int):
        import mujoco

        self.mj, self.sim, self.size, self.image_size = mujoco, sim, size, image_size
        self.ctx = sim._render_context_offscreen
        self.model, self.data = sim.model._model, sim.data._data
        self.viewport = mujoco.MjrRect(0, 0, size, size)
        self.sized = make_context(sim, size, samples=4)  # robosuite's 4x MSAA, at the render size
        self.plain = make_context(sim, size, samples=0)  # 1 sample, at the render size
        from OpenGL import GL

        self.finish = GL.glFinish

    def scene(self, camera: int) -> None:
        mj, ctx = self.mj, self.ctx
        ctx.cam.type, ctx.cam.fixedcamid = mj.mjtCamera.mjCAMERA_FIXED, camera
        mj.mjv_updateScene(self.model, self.data, ctx.vopt, ctx.pert, ctx.cam, mj.mjtCatBit.mjCAT_ALL, ctx.scn)

    def draw(self, con, reflection: bool) -> None:
        mj, flags = self.mj, self.ctx.scn.flags
        before = flags[mj.mjtRndFlag.mjRND_REFLECTION]
        flags[mj.mjtRndFlag.mjRND_REFLECTION] = int(reflection)
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, con)
        mj.mjr_render(self.viewport, self.ctx.scn, con)
        flags[mj.mjtRndFlag.mjRND_REFLECTION] = before

    def read(self, con, depth: bool = False) -> np.ndarray:
        rgb = np.empty((self.size, self.size, 3), dtype=np.uint8)
        z = np.empty((self.size, self.size), dtype=np.float32) if depth else None
        self.mj.mjr_readPixels(rgb=rgb, depth=z, viewport=self.viewport, con=con)
        return rgb

    def measure(self, camera: int) -> dict[str, float]:
        from lamp_bench.suites.images import resize_rgb

        self.ctx.gl_ctx.make_current()
        t, f = {}, self.finish
        t["scene"] = timed(lambda: self.scene(camera), f)
        t["draw_sized"] = timed(lambda: self.draw(self.sized, False), f)
        t["draw_reflect_sized"] = timed(lambda: self.draw(self.sized, True), f)
        t["read_msaa"] = timed(lambda: self.read(self.sized), f)
        t["read_msaa_depth"] = timed(lambda: self.read(self.sized, depth=True), f)
        self.draw(self.plain, True)
        f()
        t["read_plain"] = timed(lambda: self.read(self.plain), f)
        t["draw_reflect_640"] = timed(lambda: self.draw(self.ctx.con, True), f)
        t["read_640"] = timed(lambda: self.read(self.ctx.con), f)
        rgb = self.read(self.ctx.con)
        t["flip"] = timed(lambda: np.ascontiguousarray(rgb[::-1, ::-1]), f)
        t["resize"] = timed(lambda: resize_rgb(rgb[::-1, ::-1], self.image_size), f)
        self.mj.mjr_setBuffer(self.mj.mjtFramebuffer.mjFB_OFFSCREEN, self.ctx.con)
        return t


def make_context(sim, size: int, samples: int):
    """An extra MjrContext on robosuite's GL context with its own buffer size and sample count."""
    import mujoco

    model, ctx = sim.model._model, sim._render_context_offscreen
    saved = model.vis.global_.offwidth, model.vis.global_.offheight, model.vis.quality.offsamples
    model.vis.global_.offwidth = model.vis.global_.offheight = size
    model.vis.quality.offsamples = samples
    try:
        ctx.gl_ctx.make_current()
        return mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
    finally:
        model.vis.global_.offwidth, model.vis.global_.offheight, model.vis.quality.offsamples = saved
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, ctx.con)


def stage_summary(samples: list[dict[str, float]], physics: list[float]) -> dict[str, float]:
    m = {k: float(np.median([s[k] for s in samples])) * 1e3 for k in samples[0]}
    return {
        "physics_ms": float(np.median(physics)) * 1e3,
        "scene_ms": m["scene"],
        "draw_ms": m["draw_sized"],
        "reflection_ms": m["draw_reflect_sized"] - m["draw_sized"],
        "resolve_ms": m["read_msaa"] - m["read_plain"],
        "readback_ms": m["read_plain"],
        "depth_read_ms": m["read_msaa_depth"] - m["read_msaa"],
        "flip_ms": m["flip"],
        "resize_ms": m["resize"],
        "buffer_640_ms": (m["draw_reflect_640"] + m["read_640"]) - (m["draw_reflect_sized"] + m["read_msaa"]),
        "raw_median_ms": m,
    }


def env_steps_per_second(suite_name: str, task_id: int, render: str, steps: int, image_size: int) -> dict:
    """One camera (third_person, 256 px rendered), LIBERO's own path end to end: env.step + observation."""
    from lamp_bench.harness.registry import SUITES, load_builtin_entries

    load_builtin_entries()
    suite = SUITES.build(suite_name, render=render)
    env = suite.make_env(PolicyNeeds(cameras=("third_person",), image_size=image_size))
    try:
        started = time.perf_counter()
        env.reset(Episode(suite_name, task_id, 0, 0))
        reset_s = time.perf_counter() - started
        action = np.array([0.0, 0, 0, 0, 0, 0, -1.0])
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            env.step(action)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"render": render, "steps": steps, "steps_per_s": steps / wall, "cpu_s_per_step": cpu / steps,
                "reset_s": reset_s, "paths": env.episode_info().get("render")}
    finally:
        env.close()


def context_creation_s(sim) -> float:
    import mujoco

    sim._render_context_offscreen.gl_ctx.make_current()
    started = time.perf_counter()
    con = mujoco.MjrContext(sim.model._model, mujoco.mjtFontScale.mjFONTSCALE_150)
    elapsed = time.perf_counter() - started
    con.free()
    mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, sim._render_context_offscreen.con)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--tasks", default="0,5")
    parser.add_argument("--repeats", type=int, default=30, help="frames measured per (task, camera)")
    parser.add_argument("--steps", type=int, default=60, help="env steps per render mode for steps/s")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from lamp_bench.harness.registry import SUITES, load_builtin_entries

    load_builtin_entries()
    suite = SUITES.build(args.suite)
    out = {"command": vars(args) | {"out": str(args.out)}, "load_average_before": os.getloadavg(),
           "mujoco_gl": os.environ.get("MUJOCO_GL"), "tasks": {}}
    for task_id in parse_ids(args.tasks) or [0]:
        env = suite.make_env(PolicyNeeds(cameras=("third_person", "wrist"), image_size=args.image_size))
        env.reset(Episode(args.suite, task_id, 0, 0))
        sim = env.sim_env.sim
        stages = Stages(sim, suite.protocol.render_size, args.image_size)
        samples = {c: [] for c in CAMERAS}
        physics = []
        action = np.array([0.2, 0.0, -0.1, 0, 0, 0, -1.0])
        for _ in range(args.repeats):
            physics.append(timed(lambda: env._env.step(action), lambda: None))
            for c in CAMERAS:  # interleaved: load spikes hit every stage alike
                samples[c].append(stages.measure(sim.model.camera_name2id(c)))
        task = {c: stage_summary(samples[c], physics) for c in CAMERAS}
        task["context_creation_s"] = context_creation_s(sim)
        stages.sized.free(), stages.plain.free()
        # robosuite's EGL context calls eglReleaseThread when freed: let this task's context go now, while it
        # is current, not when a later task's is (references held here would delay it)
        del stages, sim
        gc.collect()
        env.close()
        task["env_steps"] = {r: env_steps_per_second(args.suite, task_id, r, args.steps, args.image_size)
                             for r in ("exact", "fast")}
        steps = task["env_steps"]
        task["fast_speedup"] = steps["fast"]["steps_per_s"] / steps["exact"]["steps_per_s"]
        task["fast_speedup_cpu"] = steps["exact"]["cpu_s_per_step"] / steps["fast"]["cpu_s_per_step"]
        out["tasks"][suite.task(task_id).name] = task
    out["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for name, task in out["tasks"].items():
        print(name)
        for c in CAMERAS:
            print(" ", c, {k: round(v, 1) for k, v in task[c].items() if isinstance(v, float)})
        print("  steps/s", {r: round(v["steps_per_s"], 2) for r, v in task["env_steps"].items()},
              "fast speed-up (wall, CPU)", round(task["fast_speedup"], 2), round(task["fast_speedup_cpu"], 2), "context", round(task["context_creation_s"], 3))


if __name__ == "__main__":
    main()
