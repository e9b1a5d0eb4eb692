"""`lamp-bench serve` and the `remote` policy against each other, as real processes on 127.0.0.1:
equivalence with the in-process policy, health endpoints, batching, API keys, garbage frames, wrong
action shapes, a server killed mid-episode, and startup errors."""
from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.remote import codec
from test_remote_helpers import free_port, records, run_cli, served

PROTOCOLS = ("openpi", "vla-eval")


def _http(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, "", error.read().decode()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_policy_gives_the_in_process_outcomes(protocol, tmp_path):
    local = run_cli("run", "--suite", "fake", "--policy", "scripted", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    with served("scripted", protocol) as (url, _):
        remote = run_cli("run", "--suite", "fake", "--policy", "remote", "--server", url, "--protocol", protocol,
                         "--out", str(tmp_path / "remote"))
        assert remote.returncode == 0, remote.stderr
    mine, theirs = records(tmp_path / "local"), records(tmp_path / "remote")
    assert len(mine) == 8 and mine.keys() == theirs.keys()
    for key, record in mine.items():
        other = theirs[key]
        assert (other["status"], other["steps"]) == (record["status"], record["steps"]), key
        assert other["info"]["last_gripper"] == record["info"]["last_gripper"]  # the action came back intact
        config = other["policy_config"]
        assert config["protocol"] == protocol and config["server_metadata"]
    last = max(theirs.values(), key=lambda r: r["finished_at"])["policy_config"]
    assert last["latency_ms"]["requests"] > 0 and last["latency_ms"]["median"] > 0
    metadata = last["server_metadata"].get("lamp", last["server_metadata"])
    assert metadata["policy"] == "scripted" and metadata["server"] == "lamp-bench"


def test_health_endpoints_and_live_batch_config():
    with served("scripted", "openpi") as (url, _):
        assert _http(url.replace("ws", "http") + "/healthz")[::2] == (200, "OK\n")
    with served("scripted", "vla-eval") as (url, _):
        status, content_type, body = _http(url.replace("ws", "http") + "/health")
        assert (status, content_type, json.loads(body)) == (200, "application/json", {"status": "ok"})
        status, _, body = _http(url.replace("ws", "http") + "/config?max_batch_size=3")
        assert status == 200 and json.loads(body)["max_batch_size"] == 3


def _observations(k: int) -> list[Observation]:
    return [Observation("do fake thing 0", images={r: np.full((8, 8, 3), i, np.uint8) for r in ("third_person", "wrist")},
                        proprio=np.zeros(9, np.float32)) for i in range(k)]


def test_concurrent_clients_share_forward_passes(fake_plugins):
    from lamp_bench.harness.remote.client_policy import RemotePolicy

    with served("scripted", "vla-eval", "--max-batch", "4", "--max-wait-ms", "200") as (url, _):
        policy = RemotePolicy(server=url, protocol="vla-eval")
        try:
            task = Task("fake", 0, "fake_task_0", "do fake thing 0", dataset="fake")
            policy.reset([task] * 4, [0, 1, 2, 3], [0, 1, 2, 3])
            actions = policy.act(_observations(4), [0, 1, 2, 3])
        finally:
            policy.close()
        stats = json.loads(_http(url.replace("ws", "http") + "/config")[2])
    assert actions.shape == (4, 7) and np.all(actions[:, -1] == -1)
    assert stats["requests"] == 4 and stats["batches"] < 4  # four connections, fewer forward passes


def test_unreachable_server_fails_before_any_episode(tmp_path):
    started = time.monotonic()
    result = run_cli("run", "--suite", "fake", "--policy", "remote", "--server", f"ws://127.0.0.1:{free_port()}",
                     "--protocol", "openpi", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "cannot reach the openpi policy server" in result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 60
    assert not records(tmp_path / "out")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_api_key_is_required_and_checked(protocol, fake_plugins):
    from lamp_bench.harness.remote.client_policy import RemotePolicy

    with served("scripted", protocol, "--api-key", "s3cret") as (url, _):
        for key in (None, "wrong"):
            with pytest.raises(ConfigError):
                RemotePolicy(server=url, protocol=protocol, api_key=key)
        policy = RemotePolicy(server=url, protocol=protocol, api_key="s3cret")
        policy.reset([Task("fake", 0, "t", "do fake thing 0")], [0], [0])
        assert policy.act(_observations(1), [0]).shape == (1, 7)
        policy.close()


def test_non_local_bind_needs_a_key():
    result = run_cli("serve", "--policy", "scripted", "--protocol", "openpi", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "--api-key" in result.stderr


def test_policy_that_lifts_to_3d_needs_camera_geometry(tmp_path):
    estimated_depth = ("--preset", "tiny", "--kwargs", '{"random_depth": true}')  # dav2 of the real size, random
    result = run_cli("serve", "--policy", "dav2", *estimated_depth, "--protocol", "openpi", "--port", "0")
    assert result.returncode == 2 and "intrinsics" in result.stderr and "Traceback" not in result.stderr
    depth = run_cli("serve", "--policy", "sim-depth", "--preset", "tiny", "--protocol", "vla-eval", "--port", "0",
                    "--camera-from-client")
    assert depth.returncode == 2 and "depth" in depth.stderr  # no protocol carries simulator depth
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"third_person": {"width": 224, "height": 224,
                                                   "intrinsics": [[200, 0, 111.5], [0, 200, 111.5], [0, 0, 1]]}}))
    with served("dav2", "openpi", *estimated_depth, "--camera", str(camera)) as (url, _):
        assert _http(url.replace("ws", "http") + "/healthz")[0] == 200


async def _raw_exchange(url: str, frames: list, protocol: str, expect_close: bool = False) -> list:
    """Send each frame and collect one reply per frame; with `expect_close`, then the close code."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    replies = []
    async with connect(url, max_size=None, compression=None) as ws:
        if protocol == "openpi":
            replies.append(codec.openpi_unpack(await ws.recv()))  # metadata
        for frame in frames:
            await ws.send(frame)
            replies.append(await asyncio.wait_for(ws.recv(), 10))
        if expect_close:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            replies.append(("close_code", ws.close_code))
    return replies


def test_garbage_frames_get_error_replies_and_the_server_keeps_serving():
    hello = codec.pack_envelope("hello", {"protocol_version": 1, "harness_version": "test"}, 1)
    good = codec.pack_envelope("observation", {"images": {"agentview": np.zeros((8, 8, 3), np.uint8),
                                                          "wrist": np.zeros((8, 8, 3), np.uint8)},
                                               "task_description": "x", "states": np.zeros(8)}, 3, "png")
    bad_image = codec.pack_envelope("observation", {"images": {"agentview": np.zeros((8, 8), np.float32)},
                                                    "task_description": "x"}, 2)
    with served("scripted", "vla-eval") as (url, _):
        replies = asyncio.run(_raw_exchange(url, [b"\x00garbage", hello, bad_image, good], "vla-eval"))
        kinds = [codec.unpack_envelope(r) for r in replies]
        assert [k.type for k in kinds] == ["error", "hello", "error", "action"]
        assert kinds[2].seq == 2 and kinds[3].seq == 3 and kinds[3].payload["actions"].shape == (7,)
    request = {"observation/image": np.zeros((8, 8, 3), np.uint8), "observation/wrist_image": np.zeros((8, 8, 3), np.uint8),
               "observation/state": np.zeros(8), "prompt": "x"}
    with served("scripted", "openpi") as (url, _):
        replies = asyncio.run(_raw_exchange(url, [msgpack.packb({"a": 1}) + b"\xc1trailing"], "openpi", True))
        assert isinstance(replies[1], str) and ("close_code", 1011) in replies
        again = asyncio.run(_raw_exchange(url, [codec.openpi_pack(request)], "openpi"))  # a new client is served
        assert codec.openpi_unpack(again[1])["actions"].shape == (1, 7)


class _BrokenServer:
    """A deliberately non-conforming server on a thread: answers every request with `reply(request)`."""

    def __init__(self, protocol: str, reply):
        self.protocol, self.reply = protocol, reply
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.stop = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.stop is None and time.monotonic() < deadline:
            time.sleep(0.02)

    async def _handler(self, ws):
        if self.protocol == "openpi":
            await ws.send(codec.openpi_pack({}))
        async for frame in ws:
            if self.protocol == "openpi":
                await ws.send(codec.openpi_pack(self.reply(codec.openpi_unpack(frame))))
                continue
            message = codec.unpack_envelope(frame)
            if message.type == "hello":
                await ws.send(codec.pack_envelope("hello", {"protocol_version": 1}, message.seq))
            elif message.type == "observation" and self.reply(message) is not None:  # None: stay silent
                kind, payload, seq = self.reply(message)
                await ws.send(codec.pack_envelope(kind, payload, seq))

    async def _main(self):
        from websockets.asyncio.server import serve

        async with serve(self._handler, "127.0.0.1", self.port, max_size=None):
            self.stop = asyncio.Event()
            await self.stop.wait()

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


@pytest.mark.parametrize("protocol,reply", [
    ("openpi", lambda request: {"actions": np.zeros((5, 6), np.float32)}),  # 6-D rows
    ("openpi", lambda request: {"action": np.zeros((5, 7), np.float32)}),  # no "actions"
    ("vla-eval", lambda m: ("action", {"actions": np.zeros((1, 7), np.float32)}, m.seq)),  # 2-D
    ("vla-eval", lambda m: ("action", {"actions": np.zeros(7, np.float32)}, m.seq + 5)),  # wrong seq
])
def test_protocol_violations_end_each_episode_as_policy_errors(protocol, reply, tmp_path):
    server = _BrokenServer(protocol, reply)
    try:
        result = run_cli("run", "--suite", "fake", "--policy", "remote", "--server", f"ws://127.0.0.1:{server.port}",
                         "--protocol", protocol, "--out", str(tmp_path / "out"), "--envs-per-worker", "1")
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    got = records(tmp_path / "out")
    assert len(got) == 8
    for record in got.values():
        assert record["status"] == "policy_error" and "RemoteProtocolError" in record["failure_reason"]


def test_server_killed_mid_episode_is_a_policy_error_and_the_run_goes_on(fake_plugins):
    from lamp_bench.harness.registry import SUITES
    from lamp_bench.harness.remote.client_policy import RemotePolicy
    from lamp_bench.harness.runner import run_episodes

    suite = SUITES.build("fake")
    episodes = suite.episodes([0], 4, 0)  # init 0 succeeds at step 3; init 1 runs to max steps (6)
    with served("scripted", "openpi") as (url, server):
        class KillsTheServer(RemotePolicy):
            calls = 0

            def act(self, observations, slots=None):
                self.calls += 1
                if self.calls == 6:  # the third step of the second episode
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.wait()
                return super().act(observations, slots)

        policy = KillsTheServer(server=url, protocol="openpi", retries=1)
        got = []
        try:
            run_episodes(policy, suite, episodes, got.append)
        finally:
            policy.close()
    by_init = {r["init_index"]: r for r in got}
    assert sorted(by_init) == [0, 1, 2, 3]  # every episode was recorded: the run went on
    assert by_init[0]["status"] == "success"
    assert by_init[1]["status"] == "policy_error" and by_init[1]["steps"] == 2
    assert "RemoteConnectionError" in by_init[1]["failure_reason"]
    assert all(by_init[i]["status"] == "policy_error" for i in (2, 3))


def test_a_silent_server_times_out_and_a_restarted_one_is_reconnected(fake_plugins):
    from lamp_bench.harness.remote import RemoteTimeoutError
    from lamp_bench.harness.remote.client_policy import RemotePolicy

    silent = _BrokenServer("vla-eval", lambda m: None)
    try:
        policy = RemotePolicy(server=f"ws://127.0.0.1:{silent.port}", protocol="vla-eval", timeout_s=1, retries=0)
        policy.reset([Task("fake", 0, "t", "do fake thing 0")], [0], [0])
        with pytest.raises(RemoteTimeoutError):
            policy.act(_observations(1), [0])
        policy.close()
    finally:
        silent.close()
    port = str(free_port())
    with served("scripted", "openpi", "--port", port) as (url, first):
        policy = RemotePolicy(server=f"ws://127.0.0.1:{port}", protocol="openpi", retries=3)
        policy.reset([Task("fake", 0, "t", "do fake thing 0")], [0], [0])
        policy.act(_observations(1), [0])
    with served("scripted", "openpi", "--port", port):  # the same address, a new server process
        assert policy.act(_observations(1), [0]).shape == (1, 7)
        assert policy.describe()["policy_config"]["reconnects"] == 1
        policy.close()
