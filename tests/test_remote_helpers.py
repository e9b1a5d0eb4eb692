"""Shared by the remote-policy tests (no tests here): start `lamp-bench serve` or a peer's server as a
real process on 127.0.0.1 and wait until it listens; read episode stores."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "tests" / "plugins"
LAMP_BENCH = [str(Path(sys.executable).parent / "lamp-bench")]
PEER_VENVS = {name: REPO / name for name in (".venv-openpi-client", ".venv-openpi-server", ".venv-vla-eval")}
URL = re.compile(r"ws://127\.0\.0\.1:(\d+)")


def plugin_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that registers the fake suite and scripted policy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
    env["LAMP_BENCH_PLUGINS"] = "fake_suite"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose merged output is collected on a thread."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.command = command
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env or plugin_env(), cwd=REPO)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern, timeout_s: float = 180.0) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = pattern.search(self.output.replace("\n", " "))
            if match:
                return match
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.command} did not print {pattern.pattern} within {timeout_s} s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


@contextmanager
def served(policy: str, protocol: str, *options: str, env: dict[str, str] | None = None):
    """`lamp-bench serve` on a free port; yields (url, process); stops it with SIGTERM and checks it
    shut down cleanly (exit 0)."""
    server = Process([*LAMP_BENCH, "serve", "--policy", policy, "--protocol", protocol, "--port", "0", *options], env)
    try:
        port = server.wait_for(URL).group(1)
        yield f"ws://127.0.0.1:{port}", server
    finally:
        code = server.stop()
    assert code in (0, -signal.SIGKILL), f"serve did not shut down cleanly (exit {code}):\n{server.output}"


@contextmanager
def peer_server(python: Path, script: str, tmp_path: Path, ready: re.Pattern):
    """A peer package's server (a script run by its venv's python) on a free port."""
    port = free_port()
    path = tmp_path / "peer_server.py"
    path.write_text(script)
    server = Process([str(python), str(path), str(port)], env={**os.environ, "PYTHONPATH": ""})
    try:
        server.wait_for(ready, timeout_s=120)
        deadline = time.monotonic() + 60
        while True:  # the ready line comes just before the socket opens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.proc.poll() is not None:
                    raise RuntimeError(f"peer server never listened:\n{server.output}")
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}", server
    finally:
        server.stop(signal.SIGKILL)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAMP_BENCH, *args], capture_output=True, text=True, env=env or plugin_env(), cwd=REPO,
                          timeout=timeout_s)


def records(results_dir: Path) -> dict[tuple[int, int], dict]:
    """(task_id, init_index) -> record, from every shard of a results directory."""
    out = {}
    for shard in sorted((results_dir / "episodes").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                out[(record["task_id"], record["init_index"])] = record
    return out


def peer_python(name: str) -> Path:
    """The peer venv's python; the test skips with a reason when `.ci/setup_peers` has not built it."""
    import pytest

    python = PEER_VENVS[name] / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{name} does not exist: run `bash .ci/setup_peers` (CI builds it)")
    return python
