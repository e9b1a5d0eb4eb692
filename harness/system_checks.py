"""Checks of the machine a number is measured on: each returns one `Check` (ok / warn / fail, with the fix).

Probes that touch a renderer run in a child process: a broken EGL or Vulkan driver can crash the process
that loads it, and the doctor must live to say so.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from lamp_bench.harness import config

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_MESA = (25, 0)
CUDA_WHEEL = re.compile(r"^nvidia-[a-z0-9-]+-cu\d+$")
PROBE_TIMEOUT_S = 120
ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _probe(code: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Run `code` in a fresh interpreter; (succeeded, its last line of output or error)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return False, f"no answer in {PROBE_TIMEOUT_S} s"
    lines = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"exit code {done.returncode}"


def python_check() -> Check:
    version = platform.python_version()
    if sys.version_info < (3, 10):
        return Check("python", FAIL, version, "lamp-bench needs Python >= 3.10")
    return Check("python", OK, f"{version} ({sys.executable})")


def torch_check(require_cpu_wheel: bool = False) -> Check:
    try:
        import torch
    except ImportError as error:
        return Check("torch", FAIL, f"not importable: {error}", "bash .ci/setup (installs torch==2.13.0, the CPU wheel)")
    # CUDA runtime wheels (nvidia-cublas-cu12, nvidia-cudnn-cu12, ...); nvidia-ml-py is only NVML bindings
    nvidia = sorted(d.metadata["Name"] for d in metadata.distributions()
                    if CUDA_WHEEL.match((d.metadata["Name"] or "").lower()))
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU wheel"
    detail = f"{torch.__version__} ({build})"
    if torch.cuda.is_available():
        detail += f", GPU: {torch.cuda.get_device_name(0)}"
    if require_cpu_wheel and (torch.version.cuda or nvidia):
        return Check("torch", FAIL, detail + (f"; nvidia packages: {', '.join(nvidia[:4])}" if nvidia else ""),
                     "a CUDA build was pulled in: rm -rf .venv && bash .ci/setup (every pip install is pinned by "
                     ".ci/constraints.txt)")
    return Check("torch", OK, detail)


def lavapipe_icd() -> Path | None:
    """The lavapipe ICD file the Vulkan loader would use: VK_DRIVER_FILES / VK_ICD_FILENAMES when set (the
    loader then reads only those), else the standard folders."""
    chosen = os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")
    if chosen:
        files = [Path(p) for p in chosen.split(os.pathsep) if p]
        return next((p for p in files if p.is_file() and "lvp" in p.name), None)
    for folder in ICD_DIRS:
        for path in sorted(Path(folder).glob("lvp_icd*.json")):
            return path
    return None


def lavapipe_mesa_version() -> str | None:
    """The Mesa release of the lavapipe (CPU Vulkan) driver, read from the library its ICD file names."""
    icd = lavapipe_icd()
    if icd is None:
        return None
    library = Path(json.loads(icd.read_text())["ICD"]["library_path"])
    candidates = [library] if library.is_absolute() else [Path(d) / library for d in LIB_DIRS]
    for path in candidates:
        if path.is_file():
            match = re.search(rb"Mesa (\d+\.\d+\.\d+[^\s\"\x00]*)", path.read_bytes())
            return match.group(1).decode() if match else None
    return None


def mesa_check() -> Check:
    version = lavapipe_mesa_version()
    fix = ("add bookworm-backports to the Suites: line of /etc/apt/sources.list.d/debian.sources, then "
           "apt-get update && apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1 (bash .ci/setup does)")
    if version is None:
        return Check("vulkan driver (lavapipe)", FAIL, "no lavapipe Vulkan driver found", fix)
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    if major_minor < MIN_MESA:
        return Check("vulkan driver (lavapipe)", FAIL,
                     f"Mesa {version}: SAPIEN needs Mesa >= {'.'.join(map(str, MIN_MESA))}", fix)
    return Check("vulkan driver (lavapipe)", OK, f"Mesa {version}")


def sapien_check() -> Check:
    ok, line = _probe("import sapien; d = sapien.Device('cpu'); import sapien.render as r; "
                      "s = r.get_device_summary(); print(s.strip().splitlines()[0] if s.strip() else 'no devices')")
    if not ok:
        return Check("sapien (SimplerEnv renderer)", FAIL, line,
                     "SAPIEN finds no Vulkan device: install Mesa 25's lavapipe (see the vulkan driver check)")
    return Check("sapien (SimplerEnv renderer)", OK, f"Vulkan device: {line}")


MUJOCO_PROBE = """
import mujoco, numpy as np
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 3"/><geom type="box" size=".1 .1 .1" rgba="1 0 0 1"/></worldbody></mujoco>')
data = mujoco.MjData(model); mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 64, 64); renderer.update_scene(data); frame = renderer.render()
assert frame.shape == (64, 64, 3) and frame.max() > 0, "rendered an empty frame"
print(mujoco.__version__)
"""


def mujoco_check() -> Check:
    backend = os.environ.get("MUJOCO_GL", "egl")
    env = {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", backend)}
    ok, line = _probe(MUJOCO_PROBE, env)
    if not ok:
        return Check(f"mujoco ({backend} rendering)", FAIL, line,
                     "apt-get install libegl1 libgl1 libgles2 libosmesa6 (bash .ci/setup does), or set MUJOCO_GL=osmesa")
    return Check(f"mujoco ({backend} rendering)", OK, f"MuJoCo {line} rendered a 64x64 frame")


def tool_check(name: str, programs: tuple[str, ...], fix: str, required: bool = True) -> Check:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        return Check(name, FAIL if required else WARN, f"not found: {', '.join(missing)}", fix)
    return Check(name, OK, ", ".join(shutil.which(p) for p in programs))


def slurm_tools_check() -> Check:
    return tool_check("slurm + munge", ("slurmctld", "slurmd", "munged", "sbatch", "sinfo"),
                      "apt-get install slurmctld slurmd slurm-client munge (bash .ci/setup does)")


def sinfo_check() -> Check:
    if shutil.which("sinfo") is None:
        return Check("slurm cluster", FAIL, "sinfo not found", "apt-get install slurm-client, and point SLURM_CONF at the cluster")
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return Check("slurm cluster", FAIL, "sinfo did not answer in 20 s", "is slurmctld running? (bash .ci/slurm.sh start)")
    if done.returncode != 0:
        return Check("slurm cluster", FAIL, (done.stderr.strip().splitlines() or ["sinfo failed"])[-1],
                     "start the controller (bash .ci/slurm.sh start for the local test cluster) or set SLURM_CONF")
    partitions = [line.split()[0] for line in done.stdout.strip().splitlines() if line.strip()]
    return Check("slurm cluster", OK, f"partitions: {', '.join(partitions) or 'none'}")


def setup_checks() -> list[Check]:
    """What `.ci/setup` installed and the tests and the main job depend on."""
    return [python_check(), torch_check(require_cpu_wheel=True), mujoco_check(), mesa_check(), sapien_check(),
            slurm_tools_check(),
            tool_check("ffmpeg (videos)", ("ffmpeg",), "apt-get install ffmpeg", required=False),
            tool_check("chromium (HTML report test)", ("chromium",), "apt-get install chromium", required=False)]


def asset_checks() -> list[Check]:
    """Every asset pack found, with its identity and stand-ins."""
    from lamp_bench.harness.provenance import hash_tree_listing

    packs = (("LIBERO assets", config.LIBERO_ASSETS_ENV, "STAND_INS.txt", "scenes"),
             ("ManiSkill assets", config.MANISKILL_ASSETS_ENV, None, "data"),
             ("LIBERO-Plus tasks", config.LIBERO_PLUS_ASSETS_ENV, None, "task_classification.json"))
    checks = []
    for name, env_var, stand_ins_file, expected in packs:
        value = os.environ.get(env_var)
        if not value:
            checks.append(Check(name, WARN, f"{env_var} is not set (the library's own default folder is used)",
                                f"export {env_var}=DIR"))
            continue
        path = Path(value)
        if not path.is_dir():
            checks.append(Check(name, FAIL, f"{path} does not exist", f"point {env_var} at the asset folder"))
            continue
        if not (path / expected).exists():
            checks.append(Check(name, FAIL, f"{path} has no {expected!r}: not this pack's folder",
                                f"point {env_var} at the asset folder"))
            continue
        identity = hash_tree_listing(str(path.resolve()))
        stand_ins = _stand_ins(path, stand_ins_file)
        if stand_ins:
            checks.append(Check(name, WARN, f"{path} ({identity}); stand-ins: {stand_ins}: numbers are not comparable "
                                "with published ones", "use the original asset release for publishable numbers"))
        else:
            checks.append(Check(name, OK, f"{path} ({identity})"))
    return checks


def _stand_ins(path: Path, listing: str | None) -> str:
    if listing and (path / listing).is_file():
        count = sum(1 for line in (path / listing).read_text().splitlines() if line.strip() and not line.startswith("#"))
        return f"{count} files listed in {listing}"
    placeholders = sorted(path.rglob("PLACEHOLDER.txt"))
    return f"{len(placeholders)} marked by PLACEHOLDER.txt" if placeholders else ""


def version_checks() -> list[Check]:
    from lamp_bench.harness.provenance import mujoco_warning, package_versions

    versions = package_versions()
    checks = []
    mujoco = versions.get("mujoco")
    warning = mujoco_warning(mujoco)
    if mujoco is None:
        checks.append(Check("mujoco version", WARN, "mujoco is not installed (LIBERO suites unavailable)",
                            "pip install -e '.[libero]' (bash .ci/setup does)"))
    elif warning:
        checks.append(Check("mujoco version", WARN, warning, "pin the MuJoCo version of the numbers you compare with"))
    else:
        checks.append(Check("mujoco version", OK, mujoco))
    robosuite = versions.get("robosuite")
    if robosuite is not None and robosuite != "1.4.0":
        checks.append(Check("robosuite version", WARN, f"{robosuite}: LIBERO 0.1.1 was built on robosuite 1.4.0",
                            "pip install robosuite==1.4.0"))
    elif robosuite is not None:
        checks.append(Check("robosuite version", OK, robosuite))
    return checks
