"""pyproject declares Python >= 3.10: the core package installs and works there (tomli stands in for tomllib)."""
from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def python310() -> str | None:
    candidates = [shutil.which("python3.10"), *sorted(glob.glob("/root/.pyenv/versions/3.10*/bin/python"))]
    for found in filter(None, candidates):
        probe = subprocess.run([found, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"], capture_output=True)
        if probe.returncode == 0:
            return found
    return None


@pytest.mark.slow
@pytest.mark.ci
def test_core_installs_and_runs_on_python_310(tmp_path):
    python = python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    venv = tmp_path / "venv310"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    source = tmp_path / "source"  # a copy: a regular install builds in place (build/, *.egg-info)
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "runs", "__pycache__",
                                                                 "*_work", "benchmarks"))
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    check = ("from lamp_bench.harness.config import tomllib; assert tomllib.__name__ == 'tomli';"
             "from lamp_bench.harness.sweep import load_sweep; load_sweep('%s', check_checkpoints=False);"
             "import lamp_bench.harness.cli, lamp_bench.reports, lamp_bench.results.stats" % (source / "sweeps" / "smoke.toml"))
    run = subprocess.run([str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, cwd=tmp_path,
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    listing = subprocess.run([str(venv / "bin" / "lamp-bench"), "list"], capture_output=True, text=True, cwd=tmp_path,
                             env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert listing.returncode == 0 and "libero_spatial" in listing.stdout, listing.stderr[-2000:]
