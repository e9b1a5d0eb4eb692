"""The privileged scripted oracle and the noop policy; end-to-end episodes on real LIBERO are `slow`."""
import os
from pathlib import Path

import numpy as np
import pytest

from lamp_bench.harness.config import LIBERO_ASSETS_ENV
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.registry import POLICIES, SUITES, load_builtin_entries

ASSETS = Path(os.environ.get(LIBERO_ASSETS_ENV) or Path(__file__).resolve().parents[2] / "shared" / "assets" / "libero")
needs_libero = pytest.mark.skipif(not (ASSETS / "scenes").is_dir(), reason=f"no LIBERO asset pack at {ASSETS}")
TASK = Task("libero_spatial", 0, "t", "pick it")


def _state(robot="panda", goal=(("on", "cube_1", "plate_1"),)):
    box = lambda c, h: np.array([np.subtract(c, h), np.add(c, h)])
    obj = lambda c, h, kind="object": {
        "kind": kind, "category": "", "pos": np.array(c, float), "quat": np.array([0, 0, 0, 1.0]),
        "aabb": box(c, h), "parts": box(c, h)[None], "obb_center": np.array(c, float), "obb_half": np.array(h, float)}
    return {
        "robot": robot, "eef_pos": np.array([-0.2, 0.0, 1.1]), "eef_quat": np.array([1.0, 0, 0, 0]),
        "gripper_qpos": np.array([0.04, -0.04]), "goal": [tuple(g) for g in goal], "sites": {}, "joints": {},
        "objects": {"cube_1": obj([0.0, 0.1, 0.92], [0.02, 0.03, 0.02]),
                    "plate_1": obj([0.1, -0.1, 0.905], [0.07, 0.07, 0.01])},
    }


def test_noop_holds_still_with_the_gripper_open_and_renders_what_it_is_told():
    load_builtin_entries()
    noop = POLICIES.build("noop", cameras=("wrist",), image_size=64)
    assert noop.needs.cameras == ("wrist",) and noop.needs.image_size == 64
    noop.reset([TASK, TASK], [0, 1])
    actions = noop.act([Observation("x"), Observation("y")], [3, 5])
    assert actions.shape == (2, 7) and np.all(actions == [0, 0, 0, 0, 0, 0, -1])


def test_oracle_heads_for_the_object_then_closes_and_stays_in_range():
    load_builtin_entries()
    oracle = POLICIES.build("oracle")
    assert oracle.needs.privileged and oracle.needs.cameras == ()
    oracle.reset([TASK], [0])
    state = _state()
    first = oracle.act([Observation("pick it", privileged=state)])[0]
    assert np.all(np.abs(first) <= 1) and first[6] == -1  # open while approaching
    assert first[0] > 0 and first[1] > 0  # toward the cube at +x, +y of the hand
    # hand above the grasp point, then on it: the script descends, then closes the gripper
    grasp = oracle._scripts[0].grasp["point"]
    state["eef_pos"] = grasp + [0, 0, oracle.config.hover]
    descend = oracle.act([Observation("pick it", privileged=state)])[0]
    state["eef_pos"] = grasp.copy()
    gripper = [oracle.act([Observation("pick it", privileged=state)])[0][6] for _ in range(3)]
    assert descend[6] == -1 and gripper[-1] == 1.0
    assert oracle.describe()["policy_config"]["gain"] > 0


def test_oracle_is_deterministic_per_seed_and_noise_follows_the_seed():
    load_builtin_entries()
    runs = []
    for seed in (7, 7, 8):
        oracle = POLICIES.build("oracle", action_noise=0.1)
        oracle.reset([TASK], [seed])
        runs.append(np.stack([oracle.act([Observation("", privileged=_state())])[0] for _ in range(3)]))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_oracle_unknown_robot_missing_state_and_unsupported_goal():
    load_builtin_entries()
    oracle = POLICIES.build("oracle")
    oracle.reset([TASK], [0])
    with pytest.raises(ValueError, match="no script for robot 'ur5'"):
        oracle.act([Observation("", privileged=_state(robot="ur5"))])
    oracle.reset([TASK], [0])
    with pytest.raises(ValueError, match="needs privileged simulator state"):
        oracle.act([Observation("")])
    oracle.reset([TASK], [0])
    held = oracle.act([Observation("", privileged=_state(goal=[("turnon", "flat_stove_1")]))])[0]
    assert np.all(held == [0, 0, 0, 0, 0, 0, -1])  # cannot do it: holds still, the episode fails on its limit


def test_oracle_opens_a_closed_drawer_before_putting_something_in_it_and_closes_last():
    from lamp_bench.models.oracle import OracleConfig
    from lamp_bench.models.oracle.panda import PandaScript

    state = _state(goal=[("close", "cab_1_bottom_region"), ("in", "cube_1", "cab_1_top_region"),
                         ("turnon", "stove_1")])
    drawer = {"fixture": "cab_1", "type": "slide", "qpos": 0.0, "axis": np.array([0, -1.0, 0]),
              "anchor": np.zeros(3), "parts": np.zeros((1, 2, 3)),
              "ranges": {"open": [-0.16, -0.14], "close": [0, 0.005]}}
    state["joints"] = {"cab_1_top": drawer, "cab_1_bottom": {**drawer, "qpos": -0.15},
                       "stove_1_knob": {**drawer, "fixture": "stove_1", "type": "hinge",
                                        "ranges": {"turnon": [0.5, 2.1]}}}
    state["sites"] = {f"cab_1_{level}_region": {"joints": [f"cab_1_{level}"]} for level in ("top", "bottom")}
    order = [(g.relation, g.obj) for g in PandaScript(OracleConfig(), 0)._order_goals(state)]
    assert order == [("open", "cab_1_top_region"), ("in", "cube_1"), ("turnon", "stove_1"),
                     ("close", "cab_1_bottom_region")]
    state["joints"]["cab_1_top"]["qpos"] = -0.15  # already open: nothing to open first
    assert [g.relation for g in PandaScript(OracleConfig(), 0)._order_goals(state)] == ["in", "turnon", "close"]
    state["goal"] = [("open", "stove_1")]  # a hinge the script cannot open: no plan, the arm holds still
    assert PandaScript(OracleConfig(), 0)._order_goals(state) == []


@needs_libero
@pytest.mark.slow
@pytest.mark.ci
def test_oracle_succeeds_on_real_libero_spatial_episodes_through_the_runner():
    from lamp_bench.harness.runner import run_episodes

    load_builtin_entries()
    suite = SUITES.build("libero_spatial", assets=str(ASSETS))
    episodes = [e for e in suite.episodes(task_ids=[4, 8], episodes_per_task=1)]  # the drawer task and an easy one
    records = []
    run_episodes(POLICIES.build("oracle"), suite, episodes, records.append)
    assert [(r["task_id"], r["status"]) for r in records] == [(4, "success"), (8, "success")], records
    assert all(r["steps"] < 220 for r in records)
    assert records[0]["provenance"]["suite"]["assets_stand_ins"] == (ASSETS / "STAND_INS.txt").is_file()
