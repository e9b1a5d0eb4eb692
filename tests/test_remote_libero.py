"""Equivalence on real LIBERO: the same deterministic policy (untrained `no-motion`, tiny preset: its
actions depend on the image and the proprioception) run in-process and through `lamp-bench serve` +
the `remote` policy, over each protocol, takes the same action at every step of the same episodes, so
outcomes and step counts agree. Short episodes (40 steps) keep it a CI-sized run."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from test_remote_helpers import served

pytestmark = [pytest.mark.slow, pytest.mark.ci]
STEPS = 40


class Logged:
    """Delegates to a policy and keeps every action it returned, per slot."""

    def __init__(self, policy):
        self.policy, self.actions = policy, []
        self.name, self.needs = policy.name, policy.needs

    def reset(self, tasks, seeds, slots=None):
        self.policy.reset(tasks, seeds, slots)

    def act(self, observations: Sequence, slots=None) -> np.ndarray:
        actions = self.policy.act(observations, slots)
        self.actions.append(np.array(actions, dtype=np.float32))
        return actions

    def describe(self):
        return self.policy.describe()

    def close(self):
        self.policy.close()


def _run(policy, suite, episodes):
    from lamp_bench.harness.runner import run_episodes

    got = []
    logged = Logged(policy)
    try:
        run_episodes(logged, suite, episodes, got.append)
    finally:
        logged.close()
    return {r["init_index"]: (r["status"], r["steps"]) for r in got}, np.concatenate(logged.actions)


def test_in_process_and_served_policies_act_identically_on_libero(libero_assets):
    from lamp_bench.harness.registry import POLICIES, SUITES
    from lamp_bench.harness.remote.client_policy import RemotePolicy
    from lamp_bench.suites.libero import LiberoProtocol

    suite = SUITES.build("libero_spatial", protocol=LiberoProtocol(max_steps=STEPS))
    episodes = suite.episodes([0], 2, 0)
    local = POLICIES.build("no-motion", preset="tiny")
    size = local.needs.image_size
    expected, expected_actions = _run(local, suite, episodes)
    assert len(expected) == 2 and sum(steps for _, steps in expected.values()) == expected_actions.shape[0]
    assert np.ptp(expected_actions[:, :6], axis=0).max() > 0  # the policy's actions vary: a real check
    for protocol in ("openpi", "vla-eval"):
        with served("no-motion", protocol, "--preset", "tiny") as (url, _):
            remote = RemotePolicy(server=url, protocol=protocol, suite="libero_spatial", image_size=size,
                                  resize="suite", cameras=["third_person"], replan_steps=1,
                                  binarize_gripper=False, clip_actions=False)
            outcomes, actions = _run(remote, suite, episodes)
        assert outcomes == expected, protocol
        np.testing.assert_array_equal(actions, expected_actions, err_msg=protocol)


def test_camera_geometry_from_a_named_suite(libero_assets):
    from lamp_bench.harness.remote.client_policy import RemotePolicy

    options = ("--preset", "tiny", "--kwargs", '{"random_depth": true}', "--camera-from-suite", "libero_spatial")
    with served("dav2", "openpi", *options) as (url, _):
        policy = RemotePolicy(server=url, protocol="openpi")
        camera = policy.describe()["policy_config"]["server_metadata"]["camera"]
        policy.close()
    assert camera["source"] == "suite:libero_spatial" and camera["roles"] == ["third_person"]
