"""lamp-bench against the real peer packages, each in its own virtual environment (`.ci/setup_peers`):
openpi-client's WebsocketClientPolicy and vla-eval's own Connection + SyncEpisodeRunner call
`lamp-bench serve`; lamp-bench's `remote` policy evaluates policies served by openpi-server's
WebsocketPolicyServer and by a vla-eval PredictModelServer. Every peer script is run by the peer
venv's python in a subprocess, on 127.0.0.1."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from test_remote_helpers import REPO, peer_python, peer_server, records, run_cli, served

OPENPI_CLIENT = """
import json, sys
import numpy as np
from openpi_client import websocket_client_policy as wcp

url, key = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
try:
    client = wcp.WebsocketClientPolicy(host=url, api_key=key)
except Exception as error:
    print(json.dumps({"refused": type(error).__name__})); sys.exit(0)
obs = {"observation/image": np.zeros((224, 224, 3), np.uint8), "observation/wrist_image": np.zeros((224, 224, 3), np.uint8),
       "observation/state": np.zeros(8), "prompt": "do fake thing 0"}
replies = [client.infer(obs) for _ in range(3)]
try:
    client.infer({"prompt": 3})  # malformed: the server answers with an error
    error = None
except RuntimeError as e:
    error = str(e).splitlines()[0]
again = wcp.WebsocketClientPolicy(host=url, api_key=key).infer(obs)  # the server keeps serving
print(json.dumps({"metadata": client.get_server_metadata(), "shape": list(replies[0]["actions"].shape),
                  "gripper": float(replies[-1]["actions"][0, -1]), "timing": sorted(replies[1]["server_timing"]),
                  "error": error, "again": list(again["actions"].shape)}))
"""

VLA_EVAL_CLIENT = """
import asyncio, json, sys
import numpy as np
from vla_eval.benchmarks.base import StepBenchmark, StepResult
from vla_eval.connection import Connection
from vla_eval.runners.sync_runner import SyncEpisodeRunner

class Counting(StepBenchmark):
    # a LIBERO-shaped observation; the episode succeeds after 3 steps with a closed-loop check of the reply
    def reset(self, task):
        self.t, self.actions = 0, []
        return None
    def step(self, action):
        a = np.asarray(action["actions"]); assert a.shape == (7,), a.shape
        self.actions.append(a.tolist()); self.t += 1
        return StepResult(obs=None, reward=0.0, done=self.t >= 3, info={})
    def make_obs(self, raw, task):
        image = np.full((256, 256, 3), self.t, np.uint8)
        return {"images": {"agentview": image, "wrist": image}, "task_description": task["description"],
                "states": np.zeros(8)}
    def get_step_result(self, result):
        return {"success": bool(result.done)}
    def get_tasks(self):
        return [{"name": "t0", "suite": "fake", "task_id": 0, "description": "do fake thing 0"}]

async def main(url):
    bench = Counting()
    async with Connection(url, timeout=30) as conn:
        await conn.connect(benchmark="test:Counting")
        results = []
        for episode in range(2):
            task = {**bench.get_tasks()[0], "episode_idx": episode}
            results.append(await SyncEpisodeRunner().run_episode(bench, task, conn, max_steps=10))
        print(json.dumps({"server_info": conn.server_info, "results": results, "last_actions": bench.actions}))

asyncio.run(main(sys.argv[1]))
"""

OPENPI_SERVER = """
import sys
import numpy as np
from openpi_server.websocket_policy_server import WebsocketPolicyServer

class Checked:
    # replies with a 10-row chunk of "hold still, gripper open"; refuses a request not shaped as openpi's LIBERO example
    def infer(self, obs):
        for key in ("observation/image", "observation/wrist_image"):
            assert obs[key].shape == (224, 224, 3) and obs[key].dtype == np.uint8, (key, obs[key].shape)
        assert obs["observation/state"].shape == (8,) and obs["observation/state"].dtype == np.float64
        assert isinstance(obs["prompt"], str)
        actions = np.zeros((10, 7), np.float32); actions[:, -1] = -1.0
        return {"actions": actions}

print("ready", flush=True)
WebsocketPolicyServer(Checked(), host="127.0.0.1", port=int(sys.argv[1]), metadata={"peer": "openpi-server"}).serve_forever()
"""

VLA_EVAL_SERVER = """
import sys
import numpy as np
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import serve

class Checked(PredictModelServer):
    # "hold still, gripper open" (any g < 0 binarises to open); refuses observations not shaped as vla-eval's LIBERO
    def predict(self, obs, ctx):
        for key in ("agentview", "wrist"):
            assert obs["images"][key].shape == (256, 256, 3), (key, obs["images"][key].shape)
        assert np.asarray(obs["states"]).shape == (8,) and isinstance(obs["task_description"], str)
        action = np.zeros(7, np.float32); action[-1] = -0.7
        return {"actions": action}
    def get_action_spec(self):
        return {}
    def get_observation_spec(self):
        return {}

print("ready", flush=True)
serve(Checked(max_batch_size=1), host="127.0.0.1", port=int(sys.argv[1]))
"""


def _run_peer(python, script: str, tmp_path, *args: str) -> dict:
    path = tmp_path / "peer_client.py"
    path.write_text(script)
    result = subprocess.run([str(python), str(path), *args], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_openpi_client_calls_lamp_bench_serve(tmp_path):
    python = peer_python(".venv-openpi-client")
    with served("scripted", "openpi", "--api-key", "k3y") as (url, _):
        got = _run_peer(python, OPENPI_CLIENT, tmp_path, url, "k3y")
        refused = _run_peer(python, OPENPI_CLIENT, tmp_path, url)
    assert got["metadata"]["server"] == "lamp-bench" and got["metadata"]["policy"] == "scripted"
    assert got["shape"] == [1, 7] and got["gripper"] == -1.0 and "infer_ms" in got["timing"]
    assert got["error"] == "Error in inference server:" and got["again"] == [1, 7]
    assert refused == {"refused": "InvalidStatus"}  # no key: the handshake is refused (HTTP 401)


def test_vla_eval_runner_talks_to_lamp_bench_serve(tmp_path):
    python = peer_python(".venv-vla-eval")
    with served("scripted", "vla-eval") as (url, _):
        got = _run_peer(python, VLA_EVAL_CLIENT, tmp_path, url)
    assert got["server_info"]["protocol_version"] == 1 and got["server_info"]["model_server"] == "lamp-bench:scripted"
    assert [r["steps"] for r in got["results"]] == [3, 3]
    assert all(r["metrics"]["success"] for r in got["results"])
    assert got["last_actions"][-1] == [0, 0, 0, 0, 0, 0, -1]


def _in_process(tmp_path) -> dict:
    local = run_cli("run", "--suite", "fake", "--policy", "scripted", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    return records(tmp_path / "local")


@pytest.mark.parametrize("protocol,venv,script", [
    ("openpi", ".venv-openpi-server", OPENPI_SERVER),
    ("vla-eval", ".venv-vla-eval", VLA_EVAL_SERVER),
])
def test_remote_policy_evaluates_a_peer_server(protocol, venv, script, tmp_path):
    python = peer_python(venv)
    expected = _in_process(tmp_path)  # the peer's policy acts as the scripted one: hold still, gripper open
    with peer_server(python, script, tmp_path, re.compile("ready")) as (url, _):
        result = run_cli("run", "--suite", "fake", "--policy", "remote", "--server", url, "--protocol", protocol,
                         "--out", str(tmp_path / "remote"))
    assert result.returncode == 0, result.stderr
    got = records(tmp_path / "remote")
    assert got.keys() == expected.keys()
    for key, record in got.items():
        assert (record["status"], record["steps"]) == (expected[key]["status"], expected[key]["steps"]), record
        assert record["info"]["last_gripper"] == -1.0
    configs = [r["policy_config"] for r in got.values()]
    if protocol == "openpi":
        assert configs[0]["server_metadata"] == {"peer": "openpi-server"}
        # 10-row chunks, 5 executed per request: 3-step episodes ask once, 6-step episodes twice
        assert max(c["latency_ms"]["requests"] for c in configs) == 4 * 1 + 4 * 2
    else:
        assert configs[0]["server_metadata"]["protocol_version"] == 1
        assert max(c["latency_ms"]["requests"] for c in configs) == 4 * 3 + 4 * 6


def test_peer_venvs_hold_no_cuda_packages():
    for name in (".venv-openpi-client", ".venv-openpi-server", ".venv-vla-eval"):
        python = peer_python(name)
        listing = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, cwd=REPO).stdout
        assert "nvidia" not in listing.lower(), name
