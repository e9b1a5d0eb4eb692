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
