"""The `remote` policy: a policy served over openpi's or vla-eval's protocol, evaluated on lamp-bench's
suites. One websocket per environment slot; the K slots of a batched `act` call send their K requests
concurrently (one asyncio loop on a background thread).

    lamp-bench run --suite libero_spatial --policy remote --server ws://HOST:PORT --protocol openpi|vla-eval

Other options are keyword arguments (sweep files' policy tables): api_key, replan_steps (openpi: rows of
an (H, 7) chunk executed before asking again, default 5, at most H), timeout_s (per reply, default 30),
connect_timeout_s (default 5), retries (reconnects per request, default 2), and the wire options of
`mapping.WireOptions` (image_size, resize, axis_angle, binarize_gripper, clip_actions, send_extras,
image_format). `suite` (set by `run --suite`) picks the cameras: LIBERO's two, or WidowX's one.

An unreachable server, or one that refuses the key, is a ConfigError from the constructor, before any
episode starts. A reply that breaks the protocol raises RemoteProtocolError, an error reply
RemoteServerError, a lost server RemoteConnectionError: the runner records it for that episode."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import Observation, Policy, PolicyNeeds, Task, slot_indices
from lamp_bench.harness.registry import register_policy
from lamp_bench.harness.remote import mapping
from lamp_bench.harness.remote.errors import RemoteConnectionError, RemoteTimeoutError
from lamp_bench.harness.remote.openpi import OpenpiConnection
from lamp_bench.harness.remote.vla_eval import VlaEvalConnection

LATENCY_WINDOW = 10_000  # round trips kept for the recorded percentiles


class _Slot:
    def __init__(self, connection: Any):
        self.connection = connection
        self.plan: deque[np.ndarray] = deque()  # openpi: rows of the current chunk still to execute
        self.task: Task | None = None
        self.seed = 0
        self.episode = -1
        self.steps = 0
        self.started = 0.0


@register_policy("remote")
class RemotePolicy(Policy):
    """A policy served elsewhere (openpi or vla-eval protocol), reached over websockets."""

    name = "remote"

    def __init__(self, server: str | None = None, protocol: str | None = None, api_key: str | None = None,
                 suite: str | None = None, replan_steps: int = 5, timeout_s: float = 30.0,
                 connect_timeout_s: float = 5.0, retries: int = 2, cameras: Sequence[str] | None = None,
                 **wire: Any):
        if not server or not protocol:
            raise ConfigError("the remote policy needs --server ws://HOST:PORT and --protocol openpi|vla-eval")
        if not server.startswith(("ws://", "wss://")):
            raise ConfigError(f"--server must be a ws:// or wss:// URL; got {server!r}")
        try:
            self.options = mapping.WireOptions.for_protocol(protocol, **wire)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"remote policy: {error}") from None
        if replan_steps < 1 or retries < 0 or timeout_s <= 0 or connect_timeout_s <= 0:
            raise ConfigError("remote policy: replan_steps >= 1, retries >= 0 and timeouts > 0 are required")
        self.server, self.protocol, self.api_key = server, protocol, api_key
        self.family = mapping.suite_family(suite)
        self.replan_steps, self.retries = int(replan_steps), int(retries)
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        roles = tuple(cameras) if cameras else mapping.FAMILY_CAMERAS[self.family]
        self.needs = PolicyNeeds(cameras=roles, image_size=self.options.suite_image_size(self.family), proprio=True)
        self._slots: dict[int, _Slot] = {}
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._reconnects = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lamp-bench-remote", daemon=True)
        self._thread.start()
        self._config: dict[str, Any] = {}
        self._check()

    # -- plumbing ------------------------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _connection(self) -> Any:
        if self.protocol == "openpi":
            return OpenpiConnection(self.server, self.api_key, self.connect_timeout_s, self.timeout_s)
        return VlaEvalConnection(self.server, self.api_key, self.connect_timeout_s, self.timeout_s,
                                 self.options.image_format, benchmark=f"lamp_bench:{self.family}")

    def _check(self) -> None:
        """Open slot 0's connection now: an unreachable server fails before any episode starts."""
        from websockets.exceptions import InvalidStatus

        connection = self._connection()
        started = time.perf_counter()
        try:
            self._run(connection.open())
        except InvalidStatus as error:
            self.close()
            status = error.response.status_code
            reason = "refused the API key" if status in (401, 403) else f"refused the connection (HTTP {status})"
            raise ConfigError(f"policy server {self.server} {reason}; pass the right api_key") from None
        except Exception as error:  # refused, timed out, not a server of this protocol
            self.close()
            raise ConfigError(f"cannot reach the {self.protocol} policy server at {self.server}: "
                              f"{type(error).__name__}: {error}".rstrip(": ")) from None
        self._slots[0] = _Slot(connection)
        self._handshake_ms = (time.perf_counter() - started) * 1000
        self._config.update({
            "server": self.server, "protocol": self.protocol, "suite_family": self.family,
            "replan_steps": self.replan_steps, "timeout_s": self.timeout_s, "retries": self.retries,
            "wire": self.options.to_dict(), "cameras": list(self.needs.cameras),
            "server_metadata": _plain(connection.metadata), "handshake_ms": round(self._handshake_ms, 3),
            "latency_ms": {},
        })

    async def _reconnect(self, slot: _Slot) -> None:
        """(Re)open a slot's connection; on vla-eval the running episode is announced again."""
        fresh = slot.connection.metadata == {} and slot.episode <= 0
        await _quiet_close(slot.connection)
        slot.connection = self._connection()
        await slot.connection.open()
        self._reconnects += 0 if fresh else 1
        if slot.task is not None:
            await slot.connection.start_episode(self._task_map(slot))

    def _task_map(self, slot: _Slot) -> dict[str, Any]:
        task = slot.task
        return {"name": task.name, "suite": task.suite, "task_id": task.task_id, "episode_idx": slot.episode,
                "instruction": task.instruction, "dataset": task.dataset, "seed": slot.seed}

    async def _request(self, slot: _Slot, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """One round trip; a lost connection or a timeout reconnects and resends, `retries` times."""
        from websockets.exceptions import ConnectionClosed

        for attempt in range(self.retries + 1):
            try:
                if slot.connection.websocket is None:
                    await self._reconnect(slot)
                started = time.perf_counter()
                reply = await slot.connection.infer(request)
                return reply, (time.perf_counter() - started) * 1000
            except (ConnectionClosed, OSError, asyncio.TimeoutError) as error:
                failure = error
                await _quiet_close(slot.connection)
                if attempt < self.retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
        kind = RemoteTimeoutError if isinstance(failure, asyncio.TimeoutError) else RemoteConnectionError
        raise kind(f"{self.protocol} server {self.server} lost: {type(failure).__name__} {failure} "
                   f"(after {self.retries} reconnects)")

    async def _act_slot(self, slot: _Slot, obs: Observation) -> tuple[np.ndarray, float | None]:
        if slot.plan:
            return slot.plan.popleft(), None
        request = mapping.build_request(obs, self.family, self.options, slot.task, slot.seed, slot.episode)
        reply, ms = await self._request(slot, request)
        if self.protocol == "openpi":
            rows = mapping.openpi_actions(reply)
            slot.plan.extend(mapping.to_lamp_action(r, self.family, self.options)
                             for r in rows[:self.replan_steps])
            return slot.plan.popleft(), ms
        return mapping.to_lamp_action(mapping.vla_eval_action(reply), self.family, self.options), ms

    async def _act_all(self, slots: list[_Slot], observations: Sequence[Observation]) -> list:
        return await asyncio.gather(*(self._act_slot(s, o) for s, o in zip(slots, observations)))

    async def _reset_slot(self, slot: _Slot, task: Task, seed: int) -> None:
        if slot.task is not None:
            await _ignore_lost(slot.connection.end_episode(
                {"metrics": {}, "steps": slot.steps, "elapsed_sec": time.perf_counter() - slot.started}))
        slot.task, slot.seed, slot.episode = task, int(seed), slot.episode + 1
        slot.plan.clear()
        slot.steps, slot.started = 0, time.perf_counter()
        try:
            if slot.connection.websocket is None:
                await self._reconnect(slot)  # starts the episode itself
            else:
                await slot.connection.start_episode(self._task_map(slot))
        except Exception:
            await _quiet_close(slot.connection)
            await self._reconnect(slot)

    # -- Policy --------------------------------------------------------------------------------------

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int], slots: Sequence[int] | None = None) -> None:
        for index, task, seed in zip(slot_indices(len(tasks), slots), tasks, seeds):
            slot = self._slots.setdefault(index, _Slot(self._connection()))
            try:
                self._run(self._reset_slot(slot, task, seed))
            except (OSError, asyncio.TimeoutError) as error:
                raise RemoteConnectionError(f"{self.protocol} server {self.server} unreachable: "
                                            f"{type(error).__name__}: {error}") from None

    def act(self, observations: Sequence[Observation], slots: Sequence[int] | None = None) -> np.ndarray:
        index = slot_indices(len(observations), slots)
        chosen = [self._slots[i] for i in index]
        results = self._run(self._act_all(chosen, observations))
        for slot in chosen:
            slot.steps += 1
        self._latencies.extend(ms for _, ms in results if ms is not None)
        self._update_latency()
        return np.stack([action for action, _ in results]).astype(np.float32)

    def _update_latency(self) -> None:
        if not self._latencies:
            return
        values = np.asarray(self._latencies)
        # Updated in place: the runner keeps this dict for every record it writes later.
        self._config["latency_ms"] = {"requests": int(values.size), "median": round(float(np.median(values)), 3),
                                      "p90": round(float(np.percentile(values, 90)), 3),
                                      "max": round(float(values.max()), 3)}
        self._config["reconnects"] = self._reconnects

    def describe(self) -> dict[str, Any]:
        metadata = self._config.get("server_metadata") or {}
        inner = metadata.get("lamp", metadata) if isinstance(metadata, dict) else {}
        return {"policy": self.name, "policy_config": self._config,
                "checkpoint_hash": inner.get("checkpoint_hash") if isinstance(inner, dict) else None}

    def close(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._run(_close_all([s.connection for s in self._slots.values()]))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


async def _quiet_close(connection: Any) -> None:
    try:
        await asyncio.wait_for(connection.close(), 2.0)
    except Exception:
        connection.websocket = None


async def _close_all(connections: list) -> None:
    await asyncio.gather(*(_quiet_close(c) for c in connections))


async def _ignore_lost(coroutine: Any) -> None:
    try:
        await coroutine
    except Exception:  # the episode is over either way; the next request reconnects
        pass


def _plain(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else str(v)))
