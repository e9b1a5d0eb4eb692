"""openpi's websocket protocol: the server speaks first (msgpack metadata); then strict request/reply,
msgpack maps with `msgpack_numpy` arrays; the reply carries `actions` (H, 7) and `server_timing`; on an
error the server sends a text frame and closes with 1011. No envelope, no episode messages."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from lamp_bench.harness.remote import inputs
from lamp_bench.harness.remote.codec import openpi_pack, openpi_unpack
from lamp_bench.harness.remote.errors import RemoteProtocolError, RemoteServerError

INTERNAL_ERROR = 1011


def auth_headers(api_key: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Api-Key {api_key}"} if api_key else None


class OpenpiConnection:
    """Client side of one connection (one environment slot)."""

    protocol = "openpi"

    def __init__(self, url: str, api_key: str | None, open_timeout_s: float, timeout_s: float):
        self.url, self.api_key = url, api_key
        self.open_timeout_s, self.timeout_s = open_timeout_s, timeout_s
        self.websocket: Any = None
        self.metadata: dict[str, Any] = {}
        self.last_server_timing: dict[str, Any] = {}

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.websocket = await connect(self.url, compression=None, max_size=None, ping_interval=None,
                                       open_timeout=self.open_timeout_s, additional_headers=auth_headers(self.api_key))
        first = await asyncio.wait_for(self.websocket.recv(), self.open_timeout_s)
        if isinstance(first, str):
            raise RemoteServerError(f"openpi server sent text instead of its metadata: {first.strip()[:300]}")
        metadata = openpi_unpack(first)
        if not isinstance(metadata, dict):
            raise RemoteProtocolError(f"openpi metadata is a {type(metadata).__name__}, expected a map")
        self.metadata = metadata

    async def start_episode(self, task: dict[str, Any]) -> None:
        """openpi has no episode messages (the PyPI client's reset() does nothing)."""

    async def end_episode(self, result: dict[str, Any]) -> None:
        pass

    async def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.websocket.send(openpi_pack(request))
        reply = await asyncio.wait_for(self.websocket.recv(), self.timeout_s)
        if isinstance(reply, str):
            raise RemoteServerError(f"openpi server error: {reply.strip()[-500:]}")
        decoded = openpi_unpack(reply)
        if not isinstance(decoded, dict):
            raise RemoteProtocolError(f"openpi reply is a {type(decoded).__name__}, expected a map")
        timing = decoded.get("server_timing")
        self.last_server_timing = timing if isinstance(timing, dict) else {}
        return decoded

    async def close(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()
            self.websocket = None


# ------------------------------------------------------------------------------------------- server


async def serve_connection(server: Any, websocket: Any) -> None:
    """One client: send the metadata, then answer each request with `actions` (1, 7)."""
    from websockets.exceptions import ConnectionClosed

    slot = server.acquire_slot()
    episode = None
    previous_total_ms = None
    try:
        await websocket.send(openpi_pack(server.metadata))
        while True:
            try:
                frame = await websocket.recv()
            except ConnectionClosed:
                return
            started = time.monotonic()
            try:
                request = openpi_unpack(frame)
                obs = inputs.to_observation(request, "openpi", server.policy.needs, server.geometry,
                                            server.require_intrinsics)
                key = inputs.episode_key(request, "openpi")
                if key != episode:
                    info = request.get(inputs.mapping.EXTRA_TASK)
                    task = inputs.task_from(info, obs.instruction, server.config.dataset)
                    await asyncio.wrap_future(server.batcher.reset(slot, task, inputs.seed_from(info)))
                    episode = key
                infer_started = time.monotonic()
                action = await asyncio.wrap_future(server.batcher.act(slot, obs))
                timing = {"infer_ms": (time.monotonic() - infer_started) * 1000}
                if previous_total_ms is not None:
                    timing["prev_total_ms"] = previous_total_ms
                await websocket.send(openpi_pack({"actions": np.asarray(action, np.float32)[None, :],
                                                  "server_timing": timing}))
                previous_total_ms = (time.monotonic() - started) * 1000
            except ConnectionClosed:
                return
            except Exception as error:  # openpi's error path: a text frame, then close 1011
                await websocket.send(f"{type(error).__name__}: {error}")
                await websocket.close(INTERNAL_ERROR, "request failed")
                return
    finally:
        server.release_slot(slot)
