"""`lamp-bench doctor` on this machine, with a broken part, and the canaries' verdicts."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from lamp_bench.harness import canaries, doctor
from lamp_bench.harness.canaries import CanaryMeasurement
from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.provenance import mujoco_warning, package_versions
from lamp_bench.harness.system_checks import FAIL, OK, WARN, version_checks

CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]


def doctor_json(*args, env=None):
    done = subprocess.run([*CLI, "doctor", "--json", "-", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    return done.returncode, json.loads(done.stdout)


def statuses(report):
    return {c["name"]: c["status"] for checks in report["sections"].values() for c in checks}


def test_doctor_on_this_machine_has_no_failure(libero_assets):
    code, report = doctor_json("--no-canaries")
    assert code == 0 and report["ok"], report
    status = statuses(report)
    for name in ("python", "torch", "mujoco (egl rendering)", "vulkan driver (lavapipe)", "sapien (SimplerEnv renderer)"):
        assert status[name] == OK
    assert status["LIBERO assets"] == WARN  # the shared pack has stand-ins: said, not hidden


def test_doctor_fails_on_a_missing_asset_folder(tmp_path, libero_assets):
    code, report = doctor_json("--no-canaries", env={"LAMP_BENCH_LIBERO_ASSETS": str(tmp_path / "gone")})
    assert code == 1 and not report["ok"]
    libero = next(c for c in report["sections"]["assets and versions"] if c["name"] == "LIBERO assets")
    assert libero["status"] == FAIL and "does not exist" in libero["detail"] and libero["fix"]


def test_mujoco_on_the_warn_list_warns():
    assert mujoco_warning("3.2.0") is None
    assert "contact physics" in mujoco_warning("3.9.0")
    installed = package_versions()["mujoco"]
    check = {c.name: c for c in version_checks()}["mujoco version"]
    assert check.status == (WARN if mujoco_warning(installed) else OK)  # this machine's 3.9: WARN


def measurement_from_reference(family: str) -> CanaryMeasurement:
    reference = canaries.load_reference()[family]
    return CanaryMeasurement(reference["suite"], reference["positions"], reference["fingerprint"], reference["task"])


@pytest.mark.parametrize("family", sorted(canaries.PROBE_SUITE))
def test_canary_tolerances(family):
    reference = canaries.load_reference()[family]
    same = canaries.compare(family, measurement_from_reference(family), reference, {})
    assert same.status == "ok" and same.pose_error_m == 0.0

    moved = measurement_from_reference(family)
    name = next(iter(moved.positions))
    moved.positions[name] = [moved.positions[name][0] + 0.005, *moved.positions[name][1:]]
    result = canaries.compare(family, moved, reference, {})
    assert result.status == "fail" and "5.00 mm" in result.detail

    darker = copy.deepcopy(measurement_from_reference(family))
    darker = CanaryMeasurement(darker.suite, darker.positions, (np_array(darker.fingerprint) * 0.9).tolist(), darker.task)
    assert canaries.compare(family, darker, reference, {}).status == "fail"

    within = CanaryMeasurement(moved.suite, reference["positions"], (np_array(reference["fingerprint"]) + 1.0).tolist())
    assert canaries.compare(family, within, reference, {}).status == "ok"

    fewer = CanaryMeasurement(moved.suite, {k: v for k, v in reference["positions"].items() if k != name},
                              reference["fingerprint"])
    assert canaries.compare(family, fewer, reference, {}).status == "fail"
    assert canaries.compare(family, fewer, None, {}).status == "no-reference"


def np_array(value):
    import numpy as np

    return np.asarray(value, dtype=float)


def test_preflight_refuses_a_suite_whose_renderer_is_missing(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(ConfigError, match="mujoco"):
        doctor.preflight(["libero_spatial"])


def test_run_refuses_before_any_progress_bar(tmp_path, libero_assets):
    done = subprocess.run([*CLI, "run", "--suite", "libero_spatial", "--policy", "noop", "--tasks", "0",
                           "--episodes-per-task", "1", "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "MUJOCO_GL": "no-such-backend"}, timeout=300)
    assert done.returncode == 2
    assert "cannot run libero_spatial" in done.stderr and "lamp-bench doctor" in done.stderr
    assert "0/1" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "episodes").exists()
