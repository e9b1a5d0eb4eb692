"""Rendering savings (suites/render_savings.py): the proof file refuses what it has not proven, the runtime
guard falls back to the full path when a saving changes pixels, and `render="fast"` is a protocol of its own.

The guard tests draw a small real MuJoCo scene through robosuite's own offscreen context (the one LIBERO
renders with): a box above a floor plane, the floor reflective (its mirror image of the box is visible, so
turning the reflection pass off changes pixels) or matte (the reflection pass draws nothing)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.suites.render_savings import (EXACT_SAVINGS, FAST_PATH, FULL_PATH, EpisodeRendering,
                                              OffscreenRenderer, RenderPath, RenderProof, RenderSetup, choose_paths,
                                              fast_render_xml, frames_equal, guard_paths, proof_key,
                                              stack_identity)

SIZE = 64
STACK = {"mujoco": "3.9.0", "mujoco_gl": "egl", "gl_renderer": "llvmpipe", "gl_version": "4.5",
         "assets_identity": "abc"}
KEY = proof_key("libero_spatial", "task_a", "agentview", 256)
IDENTICAL = {"frames": 221, "rgb_identical": True, "depth_identical": True, "whole_episodes": True}
DIFFERED = {"frames": 3, "rgb_identical": False, "depth_identical": True, "whole_episodes": True}


def scene_xml(reflectance: float) -> str:
    return f"""<mujoco>
  <asset><material name="floor" reflectance="{reflectance}" rgba="0.4 0.5 0.6 1"/></asset>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <geom name="floor" type="plane" size="2 2 0.1" material="floor"/>
    <geom name="box" type="box" pos="0 0 0.3" size="0.15 0.15 0.15" rgba="0.9 0.2 0.1 1"/>
    <camera name="view" pos="0 -1.2 0.5" xyaxes="1 0 0 0 0.5 0.86"/>
  </worldbody>
</mujoco>"""


@pytest.fixture
def sim_of():
    """A robosuite MjSim with robosuite's offscreen render context, from a reflectance value."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    from robosuite.utils.binding_utils import MjRenderContextOffscreen, MjSim

    made = []

    def make(reflectance: float):
        sim = MjSim.from_xml_string(scene_xml(reflectance))
        MjRenderContextOffscreen(sim, device_id=-1)  # registers itself as sim._render_context_offscreen
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.free()


def renderer_for(sim) -> OffscreenRenderer:
    return OffscreenRenderer(sim, SIZE)


# ---------------------------------------------------------------------------------------------- proof file


def test_proof_refuses_what_it_has_not_proven():
    wrist = proof_key("libero_spatial", "task_a", "robot0_eye_in_hand", 256)
    proof = RenderProof(stack=STACK, entries={KEY: {"no_reflection": IDENTICAL}, wrist: {"no_reflection": DIFFERED}})
    assert proof.proven(KEY, "no_reflection", STACK, depth=False)
    assert not proof.proven(wrist, "no_reflection", STACK, depth=False)  # a frame differed
    assert not proof.proven(KEY, "another_saving", STACK, depth=False)  # never tried
    other_task = proof_key("libero_spatial", "task_b", "agentview", 256)
    assert not proof.proven(other_task, "no_reflection", STACK, depth=False)
    other_size = proof_key("libero_spatial", "task_a", "agentview", 128)
    assert not proof.proven(other_size, "no_reflection", STACK, depth=False)
    for change in ({"mujoco": "3.9.1"}, {"gl_renderer": "NVIDIA H200"}, {"assets_identity": "other"}):
        assert not proof.proven(KEY, "no_reflection", {**STACK, **change}, depth=False)
    assert not RenderProof().proven(KEY, "no_reflection", STACK, depth=False)  # no proof file at all


def test_proof_needs_depth_identity_for_depth_policies_and_frames_compared():
    rgb_only = {**IDENTICAL, "depth_identical": False}
    nothing = {**IDENTICAL, "frames": 0}
    short = {**IDENTICAL, "frames": 11, "whole_episodes": False}  # e.g. --steps 10: a smoke run, no proof
    other, third = (proof_key("libero_spatial", t, "agentview", 256) for t in ("task_b", "task_c"))
    proof = RenderProof(stack=STACK, entries={KEY: {"no_reflection": rgb_only}, other: {"no_reflection": nothing},
                                              third: {"no_reflection": short}})
    assert proof.proven(KEY, "no_reflection", STACK, depth=False)
    assert not proof.proven(KEY, "no_reflection", STACK, depth=True)
    assert not proof.proven(other, "no_reflection", STACK, depth=False)  # nothing was compared
    assert not proof.proven(third, "no_reflection", STACK, depth=False)  # not whole episodes


def test_choose_paths_takes_a_proven_saving_else_the_full_path():
    wrist = proof_key("libero_spatial", "task_a", "robot0_eye_in_hand", 256)
    proof = RenderProof(stack=STACK, entries={KEY: {"no_reflection": IDENTICAL}, wrist: {"no_reflection": DIFFERED}})
    paths = choose_paths(proof, STACK, {"agentview": KEY, "robot0_eye_in_hand": wrist}, depth=False, mode="exact")
    assert paths == {"agentview": EXACT_SAVINGS["no_reflection"], "robot0_eye_in_hand": FULL_PATH}
    assert choose_paths(proof, STACK, {"agentview": KEY}, False, "fast") == {"agentview": FAST_PATH}
    with pytest.raises(ConfigError):
        choose_paths(proof, STACK, {"agentview": KEY}, False, "quick")


def test_proof_from_another_stack_is_replaced_not_mixed():
    old = RenderProof(stack=STACK, entries={KEY: {"no_reflection": IDENTICAL}})
    new_stack = {**STACK, "mujoco": "3.9.1"}
    other = proof_key("libero_spatial", "task_b", "agentview", 256)
    merged = old.merged(new_stack, {other: {"no_reflection": IDENTICAL}})
    assert set(merged.entries) == {other} and merged.identity != old.identity
    assert set(old.merged(STACK, {other: {"no_reflection": IDENTICAL}}).entries) == {KEY, other}


def test_repository_proof_file_loads_and_only_lists_compared_frames():
    proof = RenderProof.load()
    for key, savings in proof.entries.items():
        assert len(key.split("/")) == 4
        for saving, result in savings.items():
            assert saving in EXACT_SAVINGS and result["frames"] > 0


def test_unreadable_proof_file_is_a_user_error(tmp_path: Path):
    bad = tmp_path / "proof.json"
    bad.write_text('{"format": 99}')
    with pytest.raises(ConfigError):
        RenderProof.load(bad)
    assert RenderProof.load(tmp_path / "missing.json").entries == {}


# ---------------------------------------------------------------------------------------------- guard


def test_reflection_off_changes_a_reflective_floor_and_nothing_on_a_matte_one(sim_of):
    no_reflection = EXACT_SAVINGS["no_reflection"]
    shiny = renderer_for(sim_of(0.6))
    assert not frames_equal(shiny.render("view", no_reflection, True), shiny.render("view", FULL_PATH, True))
    matte = renderer_for(sim_of(0.0))
    assert frames_equal(matte.render("view", no_reflection, True), matte.render("view", FULL_PATH, True))


def test_guard_falls_back_to_the_full_path_when_the_saving_changes_pixels(sim_of):
    renderer = renderer_for(sim_of(0.6))
    wanted = {"view": EXACT_SAVINGS["no_reflection"]}
    used, outcomes, frames = guard_paths(lambda c, p: renderer.render(c, p, False), wanted)
    assert used == {"view": FULL_PATH}
    assert [(o.path, o.result) for o in outcomes] == [("no_reflection", "failed")]
    assert np.array_equal(frames["view"][0], renderer.render("view", FULL_PATH, False)[0])  # full-path pixels


def test_guard_keeps_a_saving_that_changes_nothing(sim_of):
    renderer = renderer_for(sim_of(0.0))
    wanted = {"view": EXACT_SAVINGS["no_reflection"]}
    used, outcomes, frames = guard_paths(lambda c, p: renderer.render(c, p, True), wanted)
    assert used == wanted and outcomes[0].result == "passed"
    assert frames_equal(frames["view"], renderer.render("view", FULL_PATH, True))


def test_episode_rendering_records_the_guard_fallback(sim_of):
    """The whole chain a LIBERO episode start runs: proof says no_reflection is safe for this camera, the
    scene (a reflective floor) disagrees, the guard falls back and the episode's info says so."""
    sim = sim_of(0.6)
    stack = stack_identity(sim._render_context_offscreen, "assets")
    key = proof_key("toy", "reflective_floor", "view", SIZE)
    proof = RenderProof(stack=stack, entries={key: {"no_reflection": IDENTICAL}})
    setup = RenderSetup("exact", proof, "assets", lambda task_id, camera: proof_key("toy", "reflective_floor",
                                                                                     camera, SIZE))
    rendering = EpisodeRendering(setup, sim, SIZE, 0, ["view"], depth=False)
    assert rendering.paths == {"view": FULL_PATH}
    assert rendering.info["cameras"]["view"] == {"path": "no_reflection", "guard": "failed", "used": "full"}
    assert rendering.info["proof"] == proof.identity
    first = rendering.frame("view")[0]
    assert np.array_equal(first, rendering.frame("view")[0])  # guard's frame == the next full-path frame
    rendering.close()


def test_fast_render_builds_the_context_without_msaa_and_is_never_guarded(sim_of):
    from robosuite.utils.binding_utils import MjRenderContextOffscreen, MjSim

    fast_sim = MjSim.from_xml_string(fast_render_xml(SIZE)(scene_xml(0.0)))
    assert fast_sim.model.vis.quality.offsamples == 0 and fast_sim.model.vis.global_.offwidth == SIZE
    MjRenderContextOffscreen(fast_sim, device_id=-1)
    fast, exact = renderer_for(fast_sim), renderer_for(sim_of(0.0))
    try:
        assert exact.context.con.offSamples > 0 and fast.context.con.offSamples == 0
        fast_rgb, exact_rgb = fast.render("view", FAST_PATH, False)[0], exact.render("view", FULL_PATH, False)[0]
        assert not np.array_equal(fast_rgb, exact_rgb)  # antialiased edges differ
        assert np.abs(fast_rgb.astype(int) - exact_rgb).mean() < 5  # ... and only they
        used, outcomes, _ = guard_paths(lambda c, p: fast.render(c, p, False), {"view": FAST_PATH})
        assert used == {"view": FAST_PATH} and outcomes[0].result == "not_checked"
    finally:
        fast_sim.free()


def test_render_path_names():
    assert FULL_PATH.name == "full" and FULL_PATH.is_full
    assert RenderPath(reflection=False).name == "no_reflection"
    assert FAST_PATH.name == "no_msaa"


# ---------------------------------------------------------------------------------------------- protocol


def test_fast_render_is_a_protocol_of_its_own(libero_assets):
    from lamp_bench.harness.registry import SUITES, load_builtin_entries

    load_builtin_entries()
    exact = SUITES.build("libero_spatial").protocol_fields()
    fast = SUITES.build("libero_spatial", render="fast").protocol_fields()
    assert exact["render"] == "exact" and fast["render"] == "fast"
    assert exact != fast
    assert "render_proof" not in exact  # bit-identical savings: their proof is provenance, not protocol
    assert SUITES.build("libero_spatial").provenance()["render_proof"] == RenderProof.load().identity
    with pytest.raises(ConfigError):
        SUITES.build("libero_spatial", render="quick")


@pytest.mark.slow
def test_libero_observations_with_proven_savings_equal_the_full_path(libero_assets):
    """A LIBERO episode under the repository's proof gives the very pixels of the full path, and its info
    names the path each camera used and the guard's outcome."""
    from lamp_bench.harness.policy import PolicyNeeds
    from lamp_bench.harness.registry import SUITES, load_builtin_entries
    from lamp_bench.harness.suite import Episode

    load_builtin_entries()
    suite = SUITES.build("libero_object")  # task 0: the repository's proof has whole episodes of it
    needs = PolicyNeeds(cameras=("third_person", "wrist"), image_size=128)
    saved, full = suite.make_env(needs), suite.make_env(needs)
    full.render_setup = RenderSetup()  # no proof: the full path everywhere
    episode = Episode("libero_object", 0, 1, 0)
    try:
        a, b = saved.reset(episode), full.reset(episode)
        for _ in range(3):
            for role in needs.cameras:
                assert np.array_equal(a.images[role], b.images[role])
            action = np.array([0.3, -0.2, 0.1, 0, 0, 0, -1.0])
            a, b = saved.step(action).observation, full.step(action).observation
        info = saved.episode_info()["render"]
        assert info["mode"] == "exact" and info["proof"] == RenderProof.load().identity
        for camera, outcome in info["cameras"].items():
            assert outcome["guard"] in ("passed", "failed", "not_checked")
            assert outcome["used"] == (outcome["path"] if outcome["guard"] != "failed" else "full")
        assert set(full.episode_info()["render"]["cameras"]) == {"agentview", "robot0_eye_in_hand"}
    finally:
        saved.close(), full.close()


# ---------------------------------------------------------------------------------------------- resets


def test_reset_proof_allows_soft_resets_only_where_proven_on_this_stack():
    from lamp_bench.suites.render_resets import ResetProof, reset_key

    stack = {"mujoco": "3.9.0", "robosuite": "1.4.0", "libero": "0.1.1", "numpy": "2.4", "assets_identity": "a"}
    same, differed = reset_key("libero_spatial", "task_a"), reset_key("libero_spatial", "task_b")
    short = reset_key("libero_spatial", "task_d")
    proof = ResetProof(stack=stack, entries={same: {"identical": True, "soft_episodes": 2, "whole_episodes": True},
                                             differed: {"identical": False, "soft_episodes": 2, "whole_episodes": True},
                                             short: {"identical": True, "soft_episodes": 2, "whole_episodes": False}})
    assert proof.allows_soft(same, stack)
    assert not proof.allows_soft(differed, stack)
    assert not proof.allows_soft(short, stack)  # a replay shorter than the protocol's episodes
    assert not proof.allows_soft(reset_key("libero_spatial", "task_c"), stack)  # never replayed
    assert not proof.allows_soft(same, {**stack, "mujoco": "3.9.1"})
    no_soft = {"identical": True, "soft_episodes": 0, "whole_episodes": True}
    assert not ResetProof(stack=stack, entries={same: no_soft}).allows_soft(same, stack)


@pytest.mark.slow
def test_soft_reset_replays_the_hard_reset_trajectory(libero_assets):
    """Two episodes, the same actions: soft-resetting the second gives the hard reset's states step by step
    (the gripper's integrated command is the state a kept model would otherwise carry over)."""
    from lamp_bench.harness.policy import PolicyNeeds
    from lamp_bench.harness.registry import SUITES, load_builtin_entries
    from lamp_bench.harness.suite import Episode

    load_builtin_entries()
    suite = SUITES.build("libero_spatial")
    actions = [np.array([0.4, 0.1, -0.3, 0, 0, 0.2, 1.0])] * 6 + [np.array([0, 0, 0.3, 0, 0, 0, -1.0])] * 4

    def trajectory(soft: bool):
        env = suite.make_env(PolicyNeeds(cameras=(), proprio=True))
        env.soft_reset_allowed = lambda task_id: soft
        states, kinds = [], []
        try:
            for init in (0, 1):
                env.reset(Episode("libero_spatial", 0, init, 0))
                kinds.append(env.episode_info()["reset"])
                for action in actions:
                    env.step(action)
                    sim = env.sim_env.sim
                    states.append(np.concatenate([sim.get_state().flatten(), sim.data._data.qacc_warmstart]))
        finally:
            env.close()
        return np.stack(states), kinds

    hard, hard_kinds = trajectory(False)
    soft, soft_kinds = trajectory(True)
    assert hard_kinds == ["hard", "hard"] and soft_kinds == ["hard", "soft"]
    assert np.array_equal(hard, soft)
