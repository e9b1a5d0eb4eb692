"""The LaMP policy variants behind the registry (tiny preset, CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.models.lamp.action_tokenizer import GRIPPER_CANONICAL, PROPRIO_DIM, ActionStats
from lamp_bench.models.lamp.checkpoint import save_checkpoint
from lamp_bench.models.lamp.config import preset
from lamp_bench.models.lamp.model import build_model
from lamp_bench.models.lamp.policies import VARIANTS
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer

CAMERA = "third_person"
MONOCULAR = ("midas", "zoedepth", "dav2")


def observations(n: int = 2, size: int = 64, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    k = np.array([[size, 0, (size - 1) / 2], [0, size, (size - 1) / 2], [0, 0, 1]], dtype=np.float32)
    return [Observation("put the bowl on the plate",
                        images={CAMERA: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)},
                        depth={CAMERA: rng.uniform(0.5, 2.0, (size, size)).astype(np.float32)},
                        intrinsics={CAMERA: k},
                        proprio=np.r_[rng.uniform(-0.3, 0.3, 3), 1.0, 0, 0, 0, 0.04, -0.04].astype(np.float32))
            for _ in range(n)]


TASKS = [Task("libero_spatial", 0, "t0", "put the bowl on the plate", dataset="libero_spatial")] * 2


def build(name: str, **kwargs):
    load_builtin_entries()
    return POLICIES.build(name, random_depth=name in MONOCULAR, **kwargs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints: LaMP with sim depth (gated), and the action expert alone."""
    hand = (np.full(PROPRIO_DIM, -0.3), np.full(PROPRIO_DIM, 0.3))
    stats = {"libero_spatial": ActionStats(np.full(7, -0.5), np.full(7, 0.5), np.ones(7, bool), GRIPPER_CANONICAL, *hand),
             "libero_goal": ActionStats(np.full(7, -1.0), np.full(7, 1.0), np.ones(7, bool), GRIPPER_CANONICAL, *hand)}
    root = tmp_path_factory.mktemp("ckpts")
    cfg = preset("tiny")
    lamp = save_checkpoint(build_model(cfg), root / "lamp", byte_level_tokenizer(), stats)
    openvla = save_checkpoint(build_model(cfg.replace(motion=None, bridge=None)), root / "openvla",
                              byte_level_tokenizer(), stats)
    return {"lamp": str(lamp), "openvla": str(openvla)}


def test_registry_lists_every_variant():
    load_builtin_entries()
    assert set(VARIANTS) <= set(POLICIES.names())


# MiDaS (DPT-Large) and ZoeDepth (BEiT-L) estimators are ~350M parameters each even randomly initialised.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("midas", "zoedepth") else n
                                  for n in sorted(VARIANTS)])
def test_every_variant_builds_and_acts(name):
    policy = build(name)
    needs_motion = name not in ("openvla", "no-motion")
    # Only simulator depth is read from the suite; estimator variants lift with the camera's intrinsics.
    assert policy.needs.depth == (needs_motion and name not in ("midas", "zoedepth", "dav2"))
    assert policy.needs.image_size == 64 and policy.needs.proprio  # the tiny preset's proprioception token
    policy.reset(TASKS, seeds=[0, 1])
    actions = policy.act(observations())
    assert actions.shape == (2, 7) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    # Reproducible per episode: the same seeds give the same actions; one slot restarts alone.
    policy.reset(TASKS[:1], seeds=[0], slots=[0])
    policy.reset(TASKS[:1], seeds=[1], slots=[1])
    assert np.array_equal(policy.act(observations()), actions)
    description = policy.describe()
    assert description["policy"] == name and description["checkpoint_hash"] is None
    assert description["policy_config"]["euler_steps"] == (0 if not needs_motion else
                                                           int(name.split("-")[1]) if name.startswith("steps-") else 1)


def test_checkpoint_variants(checkpoints):
    policy = build("lamp", checkpoint=checkpoints["lamp"])
    assert policy.describe()["checkpoint_hash"] and policy.depth_source == "sim"
    policy.reset(TASKS, seeds=[3, 4])
    assert policy.act(observations()).shape == (2, 7)
    blind = observations()
    blind[1].proprio = None
    with pytest.raises(ValueError, match="has a proprioception token and needs proprio in every observation"):
        policy.act(blind)
    assert not build("no-motion", checkpoint=checkpoints["lamp"]).needs.depth
    assert build("steps-10", checkpoint=checkpoints["lamp"]).cfg.motion.steps == 10
    assert not build("openvla", checkpoint=checkpoints["openvla"]).needs.depth


@pytest.mark.parametrize("name, checkpoint, message", [
    ("ungated", "lamp", "needs a checkpoint with ungated cross-attention; this one is gated"),
    ("midas", "lamp", "needs a checkpoint trained with 'midas' depth; this one uses 'sim'"),
    ("dav2", "lamp", "needs a checkpoint trained with 'dav2' depth"),
    ("openvla", "lamp", "use policy 'no-motion'"),
    ("lamp", "openvla", "needs a motion expert, but this checkpoint has none"),
    ("steps-5", "openvla", "needs a motion expert"),
])
def test_variant_incompatible_with_checkpoint(checkpoints, name, checkpoint, message):
    with pytest.raises(ConfigError, match=message):
        build(name, checkpoint=checkpoints[checkpoint])


def test_dataset_statistics_are_chosen_by_task(checkpoints):
    policy = build("no-motion", checkpoint=checkpoints["lamp"])
    policy.reset(TASKS, seeds=[0, 0])
    spatial = policy.act(observations())
    goal_tasks = [Task("libero_goal", 0, "t", "put the bowl on the plate", dataset="libero_goal")] * 2
    policy.reset(goal_tasks, seeds=[0, 0])
    assert np.allclose(policy.act(observations()), np.clip(2 * spatial, -1, 1), atol=1e-6)  # q range twice as wide
    with pytest.raises(ConfigError, match=r"asks for action statistics 'bridge'.*\['libero_goal', 'libero_spatial'\]"):
        policy.reset([Task("simpler", 0, "t", "x", dataset="bridge")], seeds=[0])


def test_bad_observations():
    policy = build("lamp")
    policy.reset(TASKS, seeds=[0, 1])
    with pytest.raises(RuntimeError, match=r"slots \[5\] before reset"):
        policy.act(observations(1), slots=[5])
    with pytest.raises(ValueError, match=r"image of shape \(64, 64, 3\); got \(32, 32, 3\)"):
        policy.act(observations(size=32))
    missing = observations()
    missing[1].intrinsics.clear()
    with pytest.raises(ValueError, match="needs 'third_person' intrinsics"):
        policy.act(missing)


def test_monocular_depth_without_weights_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_BENCH_DEPTH_WEIGHTS", str(tmp_path))
    with pytest.raises(ConfigError, match=f"no dav2 depth weights in {tmp_path / 'dav2'}"):
        POLICIES.build("dav2")
    with pytest.raises(ConfigError, match=f"no midas depth weights in {tmp_path / 'elsewhere'}"):
        POLICIES.build("midas", depth_weights=str(tmp_path / "elsewhere"))
