"""`lamp-bench serve`: any registered policy over openpi's or vla-eval's protocol.

Every connection is one slot of the policy (its own episode state); concurrent observations are batched
into one forward pass (`batching`). Binds 127.0.0.1 unless an API key is given; a client without the
key is refused. msgpack only. SIGINT / SIGTERM close the listening socket and every connection (1001),
stop the worker thread and close the policy."""
from __future__ import annotations

import asyncio
import hmac
import json
import signal
import sys
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Policy
from lamp_bench.harness.remote.batching import InferenceBatcher
from lamp_bench.harness.remote.cameras import CameraGeometry, needs_intrinsics
from lamp_bench.harness.remote.mapping import PROTOCOLS

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SERVER_NAME = "lamp-bench"
MAX_FRAME = 256 * 2**20  # bytes per request: four 2048x2048 RGB raw images fit; bigger is refused (1009)


@dataclass
class ServeConfig:
    protocol: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    dataset: str = ""  # action-statistics key for requests that name none
    camera_from_client: bool = False  # every request carries lamp/intrinsics (lamp-bench's client)
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        if self.host not in LOCAL_HOSTS and not self.api_key:
            raise ConfigError(f"serving on {self.host} (not 127.0.0.1) needs --api-key KEY; clients then send "
                              "`Authorization: Api-Key KEY`")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ConfigError("--max-batch must be >= 1 and --max-wait-ms >= 0")


def _plain(value: Any) -> Any:
    """A msgpack-safe copy of `value` (describe() may hold tuples, paths, numpy scalars)."""
    return json.loads(json.dumps(value, default=str))


class PolicyServer:
    """State shared by the connections of one server: the policy's slots, auth, metadata, batching."""

    def __init__(self, policy: Policy, config: ServeConfig, geometry: CameraGeometry):
        config.validate()
        self.policy = policy
        self.config = config
        self.geometry = geometry
        self.require_intrinsics = needs_intrinsics(policy)
        missing = [r for r in policy.needs.cameras if r not in geometry.intrinsics]
        if self.require_intrinsics and missing and not config.camera_from_client:
            raise ConfigError(
                f"policy {policy.name!r} lifts image features to 3D and needs the intrinsics of camera(s) {missing}, "
                "which neither protocol carries: pass --camera FILE, --camera-from-suite NAME, or "
                "--camera-from-client (lamp-bench's own client sends them)")
        simulator_only = [n for n in ("depth", "segmentation", "privileged") if getattr(policy.needs, n)]
        if simulator_only:
            raise ConfigError(f"policy {policy.name!r} needs the simulator's {', '.join(simulator_only)}, which no "
                              "protocol carries; serve a variant that estimates depth (e.g. dav2) instead")
        self.batcher = InferenceBatcher(policy, config.max_batch, config.max_wait_ms)
        self._free: list[int] = []
        self._next_slot = 0
        identity = policy.describe()
        self.metadata = _plain({
            "server": SERVER_NAME, "protocol": config.protocol, "policy": identity.get("policy"),
            "checkpoint_hash": identity.get("checkpoint_hash"), "policy_config": identity.get("policy_config", {}),
            "needs": asdict(policy.needs), "camera": geometry.describe(), "action_horizon": 1,
            "max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms, **config.metadata,
        })

    # -- slots ---------------------------------------------------------------------------------------

    def acquire_slot(self) -> int:
        self.batcher.clients += 1
        if self._free:
            return self._free.pop()
        self._next_slot += 1
        return self._next_slot - 1

    def release_slot(self, slot: int) -> None:
        self.batcher.clients -= 1
        self._free.append(slot)

    # -- auth ----------------------------------------------------------------------------------------

    def key_matches(self, candidate: Any) -> bool:
        if not self.config.api_key:
            return True
        return isinstance(candidate, str) and hmac.compare_digest(candidate.encode(), self.config.api_key.encode())

    def header_key(self, headers: Any) -> str | None:
        value = headers.get("Authorization") if headers is not None else None
        if isinstance(value, str) and value.startswith("Api-Key "):
            return value[len("Api-Key "):].strip()
        return None

    # -- HTTP endpoints (answered before the websocket upgrade) ----------------------------------------

    def process_request(self, connection: Any, request: Any) -> Any:
        url = urlsplit(request.path)
        if self.config.protocol == "openpi":
            if url.path == "/healthz":
                return connection.respond(HTTPStatus.OK, "OK\n")
            if not self.key_matches(self.header_key(request.headers)):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
            return None
        if url.path == "/health":
            return _json(connection, {"status": "ok"})
        key = self.header_key(request.headers)
        if url.path == "/config":
            if not self.key_matches(key):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
            return _json(connection, self._config_endpoint(parse_qs(url.query)))
        if key is not None and not self.key_matches(key):  # no header: the key may come in the hello
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong API key\n")
        return None

    def _config_endpoint(self, query: dict[str, list[str]]) -> dict[str, Any]:
        try:
            if "max_batch_size" in query:
                self.batcher.max_batch = max(1, int(query["max_batch_size"][-1]))
            if "max_wait_ms" in query:
                self.batcher.max_wait_ms = max(0.0, float(query["max_wait_ms"][-1]))
        except ValueError:
            return {"error": "max_batch_size must be an integer and max_wait_ms a number"}
        return {"max_batch_size": self.batcher.max_batch, "max_wait_ms": self.batcher.max_wait_ms,
                "batches": self.batcher.batches, "requests": self.batcher.requests}

    def close(self) -> None:
        self.batcher.stop()
        self.policy.close()


def _json(connection: Any, body: dict[str, Any]) -> Any:
    response = connection.respond(HTTPStatus.OK, json.dumps(body) + "\n")
    del response.headers["Content-Type"]  # websockets' Headers is multi-valued: replace, not add
    response.headers["Content-Type"] = "application/json"
    return response


def handler_for(server: PolicyServer) -> Callable:
    if server.config.protocol == "openpi":
        from lamp_bench.harness.remote.openpi import serve_connection
    else:
        from lamp_bench.harness.remote.vla_eval import serve_connection
    return lambda websocket: serve_connection(server, websocket)


async def serve_async(server: PolicyServer, on_ready: Callable[[str], None] | None = None,
                      stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT / SIGTERM (or `stop` is set); `on_ready` gets the URL once listening."""
    from websockets.asyncio.server import serve

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    async with serve(handler_for(server), server.config.host, server.config.port, compression=None, max_size=MAX_FRAME,
                     ping_interval=None, process_request=server.process_request) as listener:
        port = listener.sockets[0].getsockname()[1]
        url = f"ws://{server.config.host}:{port}"
        if on_ready is not None:
            on_ready(url)
        await stop.wait()


def run_server(server: PolicyServer, on_ready: Callable[[str], None] | None = None) -> None:
    try:
        asyncio.run(serve_async(server, on_ready))
    finally:
        server.close()
        sys.stderr.flush()
