"""vla-eval's protocol_version 1: msgpack envelopes {type, payload, seq, timestamp}; the client speaks
first (hello, answered by hello), then episode_start, observation -> action (same seq) or error,
episode_end. One connection stays open across episodes."""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from lamp_bench.harness.remote import inputs
from lamp_bench.harness.remote.codec import PROTOCOL_VERSION, pack_envelope, unpack_envelope
from lamp_bench.harness.remote.errors import RemoteProtocolError, RemoteServerError
from lamp_bench.harness.remote.openpi import auth_headers

HARNESS_VERSION = "lamp-bench-0.1.0"
POLICY_VIOLATION = 1008
TASK_VALUE_TYPES = (str, int, float, bool, list)  # what vla-eval keeps of an episode_start task map


class VlaEvalConnection:
    """Client side of one connection (one environment slot)."""

    protocol = "vla-eval"

    def __init__(self, url: str, api_key: str | None, open_timeout_s: float, timeout_s: float,
                 image_format: str = "raw", benchmark: str = "lamp_bench"):
        self.url, self.api_key = url, api_key
        self.open_timeout_s, self.timeout_s = open_timeout_s, timeout_s
        self.image_format, self.benchmark = image_format, benchmark
        self.websocket: Any = None
        self.metadata: dict[str, Any] = {}
        self.seq = 0

    async def _send(self, kind: str, payload: dict[str, Any]) -> int:
        self.seq += 1
        await self.websocket.send(pack_envelope(kind, payload, self.seq, self.image_format))
        return self.seq

    async def _receive(self, seq: int, timeout_s: float) -> Any:
        frame = await asyncio.wait_for(self.websocket.recv(), timeout_s)
        message = unpack_envelope(frame)
        if message.type == "error":
            raise RemoteServerError(f"vla-eval server error: {message.payload.get('error', message.payload)}")
        if message.seq != seq:
            raise RemoteProtocolError(f"vla-eval reply has seq {message.seq}, the request had {seq}")
        return message

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.websocket = await connect(self.url, compression=None, max_size=None, ping_interval=None,
                                       open_timeout=self.open_timeout_s, additional_headers=auth_headers(self.api_key))
        self.seq = 0
        hello = {"harness_version": HARNESS_VERSION, "protocol_version": PROTOCOL_VERSION, "benchmark": self.benchmark}
        if self.api_key:
            hello["api_key"] = self.api_key
        seq = await self._send("hello", hello)
        reply = await self._receive(seq, self.open_timeout_s)
        if reply.type != "hello":
            raise RemoteProtocolError(f"vla-eval server answered hello with {reply.type!r}")
        self.metadata = reply.payload

    async def start_episode(self, task: dict[str, Any]) -> None:
        await self._send("episode_start", {"task": {k: v for k, v in task.items() if isinstance(v, TASK_VALUE_TYPES)}})

    async def end_episode(self, result: dict[str, Any]) -> None:
        await self._send("episode_end", result)

    async def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        seq = await self._send("observation", request)
        reply = await self._receive(seq, self.timeout_s)
        if reply.type != "action":
            raise RemoteProtocolError(f"vla-eval server answered an observation with {reply.type!r}")
        return reply.payload

    async def close(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()
            self.websocket = None


# ------------------------------------------------------------------------------------------- server


async def serve_connection(server: Any, websocket: Any) -> None:
    """One client (one benchmark shard): hello, then episodes; a bad message gets an `error` reply with
    its seq and the connection stays open."""
    from websockets.exceptions import ConnectionClosed

    slot = server.acquire_slot()
    authorized = server.header_key(websocket.request.headers) is not None  # checked in process_request
    greeted = False
    task_info: dict[str, Any] | None = None  # the current episode's task; None: reset on the next observation

    async def reply(kind: str, payload: dict[str, Any], seq: int) -> None:
        await websocket.send(pack_envelope(kind, payload, seq, "raw"))

    try:
        while True:
            try:
                frame = await websocket.recv()
            except ConnectionClosed:
                return
            seq = 0
            try:
                message = unpack_envelope(frame)
                seq = message.seq
                if message.type == "hello":
                    if not (authorized or server.key_matches(message.payload.get("api_key"))):
                        await reply("error", {"error": "unauthorized: missing or wrong API key"}, seq)
                        await websocket.close(POLICY_VIOLATION, "unauthorized")
                        return
                    greeted = True
                    await reply("hello", {"harness_version": HARNESS_VERSION, "protocol_version": PROTOCOL_VERSION,
                                          "model_server": f"lamp-bench:{server.policy.name}", "capabilities": {},
                                          "lamp": server.metadata}, seq)
                elif not greeted:
                    raise RemoteProtocolError(f"{message.type!r} before hello")
                elif message.type == "episode_start":
                    task_info = message.payload.get("task") if isinstance(message.payload.get("task"), dict) else {}
                    await _reset(server, slot, task_info, task_info.get("instruction", ""))
                elif message.type == "observation":
                    obs = inputs.to_observation(message.payload, "vla-eval", server.policy.needs, server.geometry,
                                                server.require_intrinsics)
                    if task_info is None:  # an observation outside episode_start: start an episode for it
                        task_info = message.payload.get(inputs.mapping.EXTRA_TASK) or {}
                        await _reset(server, slot, task_info, obs.instruction)
                    action = await asyncio.wrap_future(server.batcher.act(slot, obs))
                    await reply("action", {"actions": np.asarray(action, dtype=np.float32)}, seq)
                elif message.type == "episode_end":
                    task_info = None
                else:
                    raise RemoteProtocolError(f"a client does not send {message.type!r}")
            except ConnectionClosed:
                return
            except Exception as error:
                await reply("error", {"error": f"observation_failed: {type(error).__name__}: {error}"}, seq)
    finally:
        server.release_slot(slot)


async def _reset(server: Any, slot: int, info: dict[str, Any], instruction: str) -> None:
    task = inputs.task_from(info, str(info.get("instruction", instruction)), server.config.dataset)
    await asyncio.wrap_future(server.batcher.reset(slot, task, inputs.seed_from(info)))
