"""One forward pass for concurrent clients: every connection is a slot of one batched lamp-bench policy;
observations arriving within `max_wait_ms` of the first (up to `max_batch`, and never more than the
connections open, so a lone client never waits) go into one `act` call.

The policy runs on one worker thread (torch calls block), so the servers' event loops stay responsive.
Resets go through the same thread, in the order the connection sent them."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lamp_bench.harness.policy import ACTION_DIM, Observation, Policy, Task


@dataclass
class _Reset:
    slot: int
    task: Task
    seed: int
    future: Future = field(default_factory=Future)


@dataclass
class _Act:
    slot: int
    observation: Observation
    future: Future = field(default_factory=Future)


class InferenceBatcher:
    def __init__(self, policy: Policy, max_batch: int = 8, max_wait_ms: float = 5.0):
        self.policy = policy
        self.max_batch = max(1, int(max_batch))
        self.max_wait_ms = float(max_wait_ms)
        self.batches = 0  # forward passes run
        self.requests = 0  # observations answered
        self.clients = 0  # connections open now (set by the server): a batch never waits for more than these
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lamp-bench-batcher", daemon=True)
        self._thread.start()

    # -- called from the servers' event loop ---------------------------------------------------------

    def reset(self, slot: int, task: Task, seed: int) -> Future:
        item = _Reset(slot, task, seed)
        self._queue.put(item)
        return item.future

    def act(self, slot: int, observation: Observation) -> Future:
        item = _Act(slot, observation)
        self._queue.put(item)
        return item.future

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- worker thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                break
            if isinstance(item, _Reset):
                self._do_reset(item)
                continue
            batch = [item]
            deadline = time.monotonic() + self.max_wait_ms / 1000.0
            while len(batch) < min(self.max_batch, max(1, self.clients)):
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                if isinstance(more, _Reset):
                    self._do_reset(more)  # a slot's reset precedes its next observation (per-connection order)
                else:
                    batch.append(more)
            self._do_act(batch)
        self._fail_pending()

    def _do_reset(self, item: _Reset) -> None:
        try:
            self.policy.reset([item.task], [item.seed], [item.slot])
            item.future.set_result(None)
        except Exception as error:
            item.future.set_exception(error)

    def _do_act(self, batch: Sequence[_Act]) -> None:
        """One forward pass; if it fails, each observation alone, so one bad request fails only itself."""
        try:
            actions = self._forward(batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:
                for item in batch:
                    self._do_act([item])
            return
        self.batches += 1
        self.requests += len(batch)
        for item, action in zip(batch, actions):
            item.future.set_result(action)

    def _forward(self, batch: Sequence[_Act]) -> np.ndarray:
        actions = np.asarray(self.policy.act([b.observation for b in batch], [b.slot for b in batch]), dtype=np.float32)
        if actions.shape != (len(batch), ACTION_DIM):
            raise ValueError(f"policy returned actions of shape {actions.shape} for {len(batch)} observations")
        return actions

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
