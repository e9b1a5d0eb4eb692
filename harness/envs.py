"""Environment handles the runner steps in lockstep: one in this process, or one per spawned process.

Every call is split into `send_*` and `receive`, so K environment processes step concurrently while the
runner waits on all of them. Processes are started with `spawn`, never `fork`: forked EGL/OSMesa
contexts break, and several robosuite envs in one process have been seen to return each other's frames.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.suite import Episode, SuiteEnv


class EnvFailure(RuntimeError):
    """The environment failed (raised, crashed or hung); the episode ends as an error with this reason."""


class EnvHandle(ABC):
    @abstractmethod
    def send_reset(self, episode: Episode) -> None: ...

    @abstractmethod
    def send_step(self, action: np.ndarray) -> None: ...

    @abstractmethod
    def send_episode_info(self) -> None: ...

    @abstractmethod
    def receive(self) -> Any:
        """The answer to the last send (Observation, StepResult or info dict); raises EnvFailure."""

    def close(self) -> None:
        pass


class InProcessEnv(EnvHandle):
    def __init__(self, env: SuiteEnv):
        self.env = env
        self._pending: tuple[str, Any] | None = None

    def _call(self, method: str, *args: Any) -> None:
        try:
            self._pending = ("ok", getattr(self.env, method)(*args))
        except Exception as error:  # the episode ends as an error; the runner goes on
            self._pending = ("error", f"{type(error).__name__}: {error}")

    def send_reset(self, episode: Episode) -> None:
        self._call("reset", episode)

    def send_step(self, action: np.ndarray) -> None:
        self._call("step", action)

    def send_episode_info(self) -> None:
        self._call("episode_info")

    def receive(self) -> Any:
        status, value = self._pending
        self._pending = None
        if status == "error":
            raise EnvFailure(value)
        return value

    def close(self) -> None:
        self.env.close()


def _serve_env(conn, suite_name: str, suite_kwargs: dict, needs: PolicyNeeds, threads: int) -> None:
    """Child process: build one environment and answer the parent's calls until told to close."""
    # K environment processes already keep K cores busy: thread pools inside each (torch's OpenMP, Mesa's
    # llvmpipe software rasteriser, which otherwise starts one thread per core) would only oversubscribe them.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("LP_NUM_THREADS", str(threads))
    from lamp_bench.harness.registry import SUITES, load_builtin_entries

    load_builtin_entries()
    try:
        env = SUITES.build(suite_name, **suite_kwargs).make_env(needs)
    except Exception as error:
        conn.send(("error", f"could not build {suite_name} environment: {type(error).__name__}: {error}"))
        return
    conn.send(("ok", None))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            break
        if method == "close":
            break
        try:
            conn.send(("ok", getattr(env, method)(*args)))
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"))
    env.close()


class SubprocessEnv(EnvHandle):
    """One environment in its own spawned process; a crash or a hang restarts the process."""

    def __init__(self, suite_name: str, suite_kwargs: dict, needs: PolicyNeeds,
                 timeout_s: float = 300.0, start_timeout_s: float = 600.0, threads: int = 1):
        self._args = (suite_name, suite_kwargs, needs, threads)
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._process = None
        self._conn = None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_env, args=(child, *self._args), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        self._wait(self.start_timeout_s, "start")

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def restart(self) -> None:
        self._kill()
        self._start()

    def _wait(self, timeout: float, what: str) -> Any:
        try:
            ready = self._conn.poll(timeout)
            if not ready:
                raise EnvFailure(f"environment process hung: no answer to {what} within {timeout:.0f} s")
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._process.join(timeout=5)
            raise EnvFailure(f"environment process crashed during {what} (exit code {self._process.exitcode})")
        if status == "error":
            raise EnvFailure(value)
        return value

    def _send(self, method: str, *args: Any) -> None:
        self._last = method
        try:
            self._conn.send((method, args))
        except (OSError, BrokenPipeError):
            self._broken = True
        else:
            self._broken = False

    def send_reset(self, episode: Episode) -> None:
        self._send("reset", episode)

    def send_step(self, action: np.ndarray) -> None:
        self._send("step", action)

    def send_episode_info(self) -> None:
        self._send("episode_info")

    def receive(self) -> Any:
        try:
            if self._broken:
                raise EnvFailure(f"environment process crashed before {self._last} (exit code {self._process.exitcode})")
            return self._wait(self.timeout_s, self._last)
        except EnvFailure as failure:
            if not self._process.is_alive() or "hung" in str(failure) or "crashed" in str(failure):
                self.restart()  # the next episode gets a fresh process
            raise

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            try:
                self._conn.send(("close", ()))
                self._process.join(timeout=30)
            except (OSError, BrokenPipeError):
                pass
        self._kill()
