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
from typing import Any, Callable

import numpy as np

from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.policy import PolicyNeeds
from lamp_bench.harness.suite import Episode, SuiteEnv, SuiteSpec


class EnvFailure(RuntimeError):
    """The environment failed (raised, crashed, hung or could not start): the episode is an env_error,
    retried in a fresh environment. The message is the one-line reason recorded with the episode."""


class EnvRaised(EnvFailure):
    """A call into the environment raised an exception."""


class EnvCrashed(EnvFailure):
    """The environment process died."""


class EnvHung(EnvFailure):
    """The environment process gave no answer within its timeout."""


class EnvHandle(ABC):
    @abstractmethod
    def send_reset(self, episode: Episode) -> None: ...

    @abstractmethod
    def send_step(self, action: np.ndarray) -> None: ...

    @abstractmethod
    def send_episode_info(self) -> None: ...

    @abstractmethod
    def receive(self) -> Any:
        """The answer to the last send (Observation, StepResult or info dict); raises EnvFailure, or
        ConfigError when the environment reports bad configuration (never retried)."""

    @abstractmethod
    def restart(self) -> None:
        """Replace the environment by a fresh one (after a failure, before the episode is retried)."""

    def close(self) -> None:
        pass


class InProcessEnv(EnvHandle):
    """The environment in this process, built by `factory` (again on restart)."""

    def __init__(self, factory: Callable[[], SuiteEnv]):
        self.factory = factory
        self.env: SuiteEnv | None = factory()
        self._broken: EnvFailure | None = None
        self._pending: tuple[str, Any] | None = None

    def _call(self, method: str, *args: Any) -> None:
        if self.env is None:
            self._pending = ("error", self._broken)
            return
        try:
            self._pending = ("ok", getattr(self.env, method)(*args))
        except ConfigError as error:
            self._pending = ("config_error", error)
        except Exception as error:  # the episode ends as an env error; the runner goes on
            self._pending = ("error", EnvRaised(f"{type(error).__name__}: {error}"))

    def send_reset(self, episode: Episode) -> None:
        self._call("reset", episode)

    def send_step(self, action: np.ndarray) -> None:
        self._call("step", action)

    def send_episode_info(self) -> None:
        self._call("episode_info")

    def receive(self) -> Any:
        status, value = self._pending
        self._pending = None
        if status != "ok":
            raise value
        return value

    def restart(self) -> None:
        try:
            if self.env is not None:
                self.env.close()
        except Exception:  # a broken environment may fail to close; a fresh one replaces it anyway
            pass
        try:
            self.env, self._broken = self.factory(), None
        except ConfigError:
            raise
        except Exception as error:  # the retried episode ends as an env error with this reason
            self.env, self._broken = None, EnvRaised(f"could not rebuild the environment: {type(error).__name__}: {error}")

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def _serve_env(conn, suite: SuiteSpec, needs: PolicyNeeds, threads: int) -> None:
    """Child process: build one environment and answer the parent's calls until told to close."""
    # K environment processes already keep K cores busy: thread pools inside each (torch's OpenMP, Mesa's
    # llvmpipe software rasteriser, which otherwise starts one thread per core) would only oversubscribe them.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("LP_NUM_THREADS", str(threads))
    try:
        env = suite.build().make_env(needs)
    except ConfigError as error:
        conn.send(("config_error", str(error)))
        return
    except Exception as error:
        conn.send(("error", f"could not build {suite.name} environment: {type(error).__name__}: {error}"))
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
        except ConfigError as error:
            conn.send(("config_error", str(error)))
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"))
    env.close()


class SubprocessEnv(EnvHandle):
    """One environment in its own spawned process. A failure to start is reported by the next `receive`
    (the episode becomes an env error and is retried after `restart`)."""

    def __init__(self, suite: SuiteSpec, needs: PolicyNeeds,
                 timeout_s: float = 300.0, start_timeout_s: float = 600.0, threads: int = 1):
        self._args = (suite, needs, threads)
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._process = None
        self._conn = None
        self._failure: EnvFailure | None = None  # the process is unusable until restarted
        self._last = "start"
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_env, args=(child, *self._args), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        try:
            self._wait(self.start_timeout_s, "start")
            self._failure = None
        except EnvFailure as failure:
            self._failure = failure

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
                raise EnvHung(f"environment process hung: no answer to {what} within {timeout:.0f} s")
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(timeout=5)
            raise EnvCrashed(f"environment process crashed during {what} (exit code {self._process.exitcode})")
        if status == "config_error":
            raise ConfigError(value)
        if status == "error":
            raise EnvRaised(value)
        return value

    def _send(self, method: str, *args: Any) -> None:
        self._last = method
        if self._failure is not None:
            return
        try:
            self._conn.send((method, args))
        except OSError:  # BrokenPipeError included
            self._failure = EnvCrashed(f"environment process crashed before {method} "
                                       f"(exit code {self._process.exitcode})")

    def send_reset(self, episode: Episode) -> None:
        self._send("reset", episode)

    def send_step(self, action: np.ndarray) -> None:
        self._send("step", action)

    def send_episode_info(self) -> None:
        self._send("episode_info")

    def receive(self) -> Any:
        if self._failure is not None:
            raise self._failure
        try:
            return self._wait(self.timeout_s, self._last)
        except (EnvHung, EnvCrashed) as failure:
            self._failure = failure  # nothing more can be asked of this process
            raise

    def close(self) -> None:
        if self._process is not None and self._process.is_alive() and self._failure is None:
            try:
                self._conn.send(("close", ()))
                self._process.join(timeout=30)
            except OSError:
                pass
        self._kill()
