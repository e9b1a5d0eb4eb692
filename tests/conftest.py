"""Fixtures shared by the test modules."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def libero_assets() -> str:
    """LIBERO's assets folder, exported in this process's environment so that env processes, local
    workers and Slurm jobs started by a test inherit it."""
    if not os.environ.get("LAMP_BENCH_LIBERO_ASSETS"):
        shared = REPO.parent / "shared" / "assets" / "libero"
        if not shared.is_dir():
            pytest.skip("set LAMP_BENCH_LIBERO_ASSETS to LIBERO's assets folder")
        os.environ["LAMP_BENCH_LIBERO_ASSETS"] = str(shared)
    return os.environ["LAMP_BENCH_LIBERO_ASSETS"]


@pytest.fixture
def fake_plugins(monkeypatch) -> None:
    """Registers the simulator-free suite "fake" and policy "scripted" (tests/plugins/fake_suite.py) in
    this process and in every process a test starts (env processes, local workers, Slurm jobs)."""
    import importlib

    from lamp_bench.harness.registry import PLUGINS_ENV, load_builtin_entries

    plugins = str(REPO / "tests" / "plugins")
    monkeypatch.syspath_prepend(plugins)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [plugins, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(PLUGINS_ENV, ",".join(filter(None, [os.environ.get(PLUGINS_ENV), "fake_suite"])))
    load_builtin_entries()
    importlib.import_module("fake_suite")
