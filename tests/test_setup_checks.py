"""What .ci/setup decides and verifies, each branch with the real script functions and real probes; the
failure branches get a fake `apt-cache`, a fake Vulkan driver or a PATH without Slurm."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamp_bench.harness import system_checks
from lamp_bench.harness.system_checks import FAIL, OK

REPO = Path(__file__).resolve().parent.parent
CHECKS = REPO / ".ci" / "setup_checks.sh"


def fake_program(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + script)
    path.chmod(0o755)


def run_bash(script: str, path_prefix: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{path_prefix}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", f"set -euo pipefail; . {CHECKS}; {script}"], capture_output=True,
                          text=True, env=env, cwd=cwd)


# A policy as long as apt-cache's real one on a machine with many suites: grep -q stops reading after the
# first match, so apt-cache writes into a closed pipe.
LONG_POLICY = ('echo "mesa-vulkan-drivers:"; echo "  Candidate: 25.0.7-2~bpo12+1";'
               'echo "     25.0.7-2~bpo12+1 100"; echo "        100 http://mirror bookworm-backports/main amd64";'
               'for i in $(seq 200000); do echo "        500 http://mirror bookworm/main amd64 Packages $i"; done')


def test_backports_found_in_a_long_policy_under_pipefail(tmp_path):
    fake_program(tmp_path, "apt-cache", LONG_POLICY)
    assert run_bash("backports_mesa_available", tmp_path).returncode == 0
    # the old check on the same output: the pipeline fails although the suite is there
    old = run_bash("apt-cache policy mesa-vulkan-drivers | grep -q bookworm-backports", tmp_path)
    assert old.returncode != 0


def test_backports_missing_is_detected(tmp_path):
    fake_program(tmp_path, "apt-cache", 'echo "mesa-vulkan-drivers:"; echo "  Candidate: 22.3.6-1+deb12u1";'
                                        'echo "        500 http://mirror bookworm/main amd64 Packages"')
    assert run_bash("backports_mesa_available", tmp_path).returncode == 1


def test_verify_setup_fails_loudly_when_the_doctor_fails(tmp_path):
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake_program(tmp_path / ".venv" / "bin", "lamp-bench", 'echo "vulkan driver: fail"; exit 1')
    result = run_bash("verify_setup", tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert "checks above failed" in result.stderr


def fake_lavapipe(folder: Path, mesa: str) -> Path:
    library = folder / "libvulkan_lvp.so"
    library.write_bytes(b"\x7fELF\x00junk\x00Mesa " + mesa.encode() + b"\x00more")
    icd = folder / "lvp_icd.x86_64.json"
    icd.write_text('{"ICD": {"api_version": "1.3.0", "library_path": "%s"}, "file_format_version": "1.0.0"}' % library)
    return icd


def test_mesa_version_gate(tmp_path, monkeypatch):
    monkeypatch.setenv("VK_ICD_FILENAMES", str(fake_lavapipe(tmp_path, "22.3.6")))
    check = system_checks.mesa_check()
    assert check.status == FAIL and "22.3.6" in check.detail and "bookworm-backports" in check.fix
    monkeypatch.setenv("VK_ICD_FILENAMES", str(fake_lavapipe(tmp_path, "25.0.7-2~bpo12+1")))
    assert system_checks.mesa_check().status == OK


def test_this_machine_passes_the_setup_checks():
    checks = {c.name: c for c in system_checks.setup_checks()}
    failed = [c for c in checks.values() if c.status == FAIL]
    assert not failed, failed
    assert "Mesa 25" in checks["vulkan driver (lavapipe)"].detail
    assert "CPU wheel" in checks["torch"].detail


def test_sapien_without_a_working_vulkan_driver_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("VK_ICD_FILENAMES", str(fake_lavapipe(tmp_path, "25.0.7")))
    check = system_checks.sapien_check()
    assert check.status == FAIL and "Vulkan" in check.fix


def test_mujoco_without_a_renderer_fails(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    check = system_checks.mujoco_check()
    assert check.status == FAIL and "MUJOCO_GL" in check.fix


def test_missing_slurm_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    check = system_checks.slurm_tools_check()
    assert check.status == FAIL and "slurmctld" in check.detail and "apt-get install" in check.fix


def test_nvidia_packages_fail_the_cpu_wheel_check(tmp_path, monkeypatch):
    info = tmp_path / "nvidia_cublas_cu12-12.8.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-cublas-cu12\nVersion: 12.8.0\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    check = system_checks.torch_check(require_cpu_wheel=True)
    assert check.status == FAIL and "nvidia-cublas-cu12" in check.detail and "constraints" in check.fix
    assert system_checks.torch_check(require_cpu_wheel=False).status == OK
