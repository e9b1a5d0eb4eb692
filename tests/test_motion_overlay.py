"""Motion diagnostics in recorded videos (run --record-motion): the LaMP policy keeps depth and projected
flow only when asked, without changing its actions; the composer and the runner put them beside the frames."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from lamp_bench.harness.motion_frames import COLORMAP, compose_motion_frame, draw_flow
from lamp_bench.harness.policy import Observation, Policy, Task, slot_indices
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.harness.runner import RunOptions, run_episodes

CAMERA = "third_person"
SIZE = 64  # the tiny preset's image size
TASK = Task("libero_spatial", 0, "t0", "put the bowl on the plate", dataset="libero_spatial")


def observations(n: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    k = np.array([[SIZE, 0, (SIZE - 1) / 2], [0, SIZE, (SIZE - 1) / 2], [0, 0, 1]], dtype=np.float32)
    return [Observation(TASK.instruction,
                        images={CAMERA: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)},
                        depth={CAMERA: rng.uniform(0.5, 2.0, (SIZE, SIZE)).astype(np.float32)},
                        intrinsics={CAMERA: k},
                        proprio=np.r_[rng.uniform(-0.3, 0.3, 3), 1.0, 0, 0, 0, 0.04, -0.04].astype(np.float32))
            for _ in range(n)]


def lamp(name: str = "sim-depth") -> Policy:
    load_builtin_entries()
    policy = POLICIES.build(name, preset="tiny")
    policy.reset([TASK, TASK], [3, 4])
    return policy


def test_lamp_keeps_diagnostics_only_when_asked_and_acts_the_same():
    obs = observations(2)
    plain = lamp()
    plain_actions = plain.act(obs)
    assert plain.motion_diagnostics([0, 1]) == [None, None]  # the default path keeps nothing

    kept = lamp()
    kept.keep_motion_diagnostics = True
    np.testing.assert_array_equal(kept.act(obs), plain_actions)
    diagnostics = kept.motion_diagnostics([1, 0])
    patches = plain.cfg.vision.num_patches
    for d, o in zip(diagnostics, [obs[1], obs[0]]):
        assert d["depth"].shape == (SIZE, SIZE)
        np.testing.assert_allclose(d["depth"], o.depth[CAMERA])  # sim-depth: what the suite gave
        assert d["uv"].shape == d["uv_flowed"].shape == (patches, 2)
        # the lifted points project back onto the patch centres they came from
        patch = SIZE // int(np.sqrt(patches))
        centres = (np.arange(SIZE // patch) + 0.5) * patch - 0.5
        np.testing.assert_allclose(d["uv"][:, 0], np.tile(centres, SIZE // patch), atol=1e-3)
        # the flowed points project with the camera's intrinsics (NaN where random weights push them behind it)
        moved = d["points"] + d["flow"]
        front = moved[:, 2] > 1e-6
        assert front.any()
        k = o.intrinsics[CAMERA]
        np.testing.assert_allclose(d["uv_flowed"][front, 0], k[0, 0] * moved[front, 0] / moved[front, 2] + k[0, 2],
                                   rtol=1e-4, atol=1e-3)
        assert np.isnan(d["uv_flowed"][~front]).all() and not np.allclose(d["uv_flowed"][front], d["uv"][front])
    # a new episode in a slot forgets the last one's diagnostics
    kept.reset([TASK], [5], [0])
    assert kept.motion_diagnostics([0])[0] is None and kept.motion_diagnostics([1])[0] is not None


def test_lamp_without_motion_pathway_has_no_diagnostics():
    policy = lamp("no-motion")
    policy.keep_motion_diagnostics = True
    policy.act(observations(2))
    assert policy.motion_diagnostics([0, 1]) == [None, None]


def test_composer_puts_depth_and_flow_beside_the_frame():
    frame = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    depth = np.tile(np.linspace(0.5, 2.0, SIZE, dtype=np.float32), (SIZE, 1))  # far to the right
    uv = np.array([[10.0, 10.0], [40.0, 50.0]])
    diagnostics = {"depth": depth, "uv": uv, "uv_flowed": uv + [[1.0, 0.0], [np.nan, 0.0]]}
    out = compose_motion_frame(frame, diagnostics)
    assert out.shape == (SIZE, 3 * SIZE, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :SIZE], frame)
    depth_panel, flow_panel = out[:, SIZE:2 * SIZE], out[:, 2 * SIZE:]
    np.testing.assert_array_equal(depth_panel[5, 0], COLORMAP[-1])  # nearest: the bright end
    np.testing.assert_array_equal(depth_panel[5, -1], COLORMAP[0])
    # one arrow, 10 px long (FLOW_GAIN x 1 px) along row 10; the NaN one is skipped
    drawn = np.argwhere(flow_panel.any(-1))
    assert set(drawn[:, 0]) == {10} and drawn[:, 1].min() == 10 and drawn[:, 1].max() == 20
    blank = compose_motion_frame(frame, None)
    assert blank.shape == out.shape and (blank[:, SIZE:] == blank[0, SIZE]).all()


def test_arrows_scale_to_a_larger_frame():
    frame = np.zeros((2 * SIZE, 2 * SIZE, 3), dtype=np.uint8)
    out = draw_flow(frame, np.array([[10.25, 10.25]]), np.array([[10.25, 11.25]]), source_size=SIZE)
    drawn = np.argwhere(out.any(-1))
    assert set(drawn[:, 1]) == {21} and drawn[:, 0].max() - drawn[:, 0].min() == 20


class MotionStub(Policy):
    """Holds still and reports a fixed depth and a rightward flow of one pixel per patch point."""

    name = "motion-stub"

    def __init__(self):
        self.acted_while_keeping: list[bool] = []

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        pass

    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        self.acted_while_keeping.append(self.keep_motion_diagnostics)
        return np.zeros((len(slot_indices(len(observations), slots)), 7))

    def motion_diagnostics(self, slots):
        uv = np.array([[2.0, 2.0], [5.0, 5.0]])
        return [{"depth": np.full((8, 8), 1.0, dtype=np.float32), "uv": uv, "uv_flowed": uv + [0.1, 0.0]}
                for _ in slots]


@pytest.mark.parametrize("record_motion", [False, True])
def test_runner_composes_motion_frames_only_when_asked(fake_plugins, tmp_path, monkeypatch, record_motion):
    import fake_suite

    from lamp_bench.harness import runner

    suite = fake_suite.FakeSuite(tasks=1, init_states=2, max_steps=4, succeed="none")
    submitted = []
    original = runner.VideoWriter.submit
    monkeypatch.setattr(runner.VideoWriter, "submit",
                        lambda self, *args: submitted.append(args[-1]) or original(self, *args))
    policy = MotionStub()
    records = run_episodes(policy, suite, suite.episodes(None, 2, 0), lambda r: None,
                           options=RunOptions(record_video=1, record_motion=record_motion, results_dir=tmp_path))
    assert len(records) == 2 and [bool(r["info"].get("video")) for r in records] == [True, False]
    frames = submitted[0]
    assert len(frames) == 5  # the reset frame and one per step
    assert all(f.shape == (8, 8 * (3 if record_motion else 1), 3) for f in frames)
    assert set(policy.acted_while_keeping) == {record_motion}
    import imageio.v2 as imageio

    written = imageio.mimread(tmp_path / records[0]["info"]["video"])  # what the writer made of them
    assert len(written) == 5 and written[0].shape[:2] == frames[0].shape[:2]
    if record_motion:
        assert all((f[:, 8:16] != frames[-1][0, 8]).any() for f in frames[:-1])  # acted on: depth drawn
        assert (frames[-1][:, 8:] == frames[-1][0, 8]).all()  # the last frame was never acted on


def test_cli_record_motion_needs_record_video(tmp_path):
    from typer.testing import CliRunner

    from lamp_bench.harness.cli import app

    result = CliRunner().invoke(app, ["run", "--suite", "libero_spatial", "--policy", "noop", "--out", str(tmp_path),
                                      "--record-motion"])
    assert result.exit_code == 2, result.output
    assert "add --record-video" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_record_motion_reaches_the_videos(fake_plugins, tmp_path):
    """Through the CLI and the inline executor: the scripted policy has no motion pathway, so its
    videos are 3x as wide with grey motion panels."""
    import imageio.v2 as imageio
    from typer.testing import CliRunner

    from lamp_bench.harness.cli import app
    from lamp_bench.results.store import EpisodeStore

    result = CliRunner().invoke(app, ["run", "--suite", "fake", "--policy", "scripted", "--out", str(tmp_path),
                                      "--envs-per-worker", "1", "--record-video", "1", "--record-motion"])
    assert result.exit_code == 0, result.output
    videos = [r["info"]["video"] for r in EpisodeStore(tmp_path).records() if r["info"].get("video")]
    assert len(videos) == 2  # init state 0 of each of the fake suite's two tasks
    assert all(imageio.mimread(tmp_path / v)[0].shape[:2] == (8, 24) for v in videos)
