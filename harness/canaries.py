"""Canaries: a short deterministic probe per simulator stack that catches drift before a long sweep does.

A canary builds one suite environment through the ordinary suite interface, resets episode (task 0,
init state 0, seed 0) with the protocol's settle steps, and measures:
- the settled objects' positions (privileged state), compared with reference values kept in the repo
  (`canary_reference.json`) for the pinned stack, to POSE_TOLERANCE_M;
- a tolerant fingerprint of the first rendered frame: the mean of every 16 x 16 pixel block per
  channel (a 16 x 16 x 3 grid for a 256-pixel render), compared to FINGERPRINT_TOLERANCE grey levels.

Why these tolerances. The same MuJoCo/SAPIEN build on the same pack reproduces poses and pixels exactly,
so any tolerance only has to absorb benign differences between machines: floating-point differences of a
few ulps over the settle steps (far below a micrometre), and anti-aliasing differences at edges (MSAA
off changes pixels by ~1.2 grey levels on average, see ../shared/STACK.md), which block means dilute
further. A drifted stack moves much more: a different asset pack or collision mesh settles objects
millimetres to centimetres away, a renderer change such as MuJoCo 3.3.3's darker floor or a missing
texture shifts whole blocks by tens of grey levels. So 1 mm and a mean block difference of 3 grey
levels (any block at most 24) separate the two with a wide margin either way.

Results are cached per stack fingerprint (package versions, Mesa, render backend, asset identity) in
$LAMP_BENCH_HOME/canaries, so `run` pays for a canary once per stack, and every episode's provenance
carries the result (`stack_provenance`).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamp_bench.harness import config

POSE_TOLERANCE_M = 1e-3
FINGERPRINT_TOLERANCE = 3.0  # mean absolute block difference, grey levels
FINGERPRINT_BLOCK_MAX = 24.0  # largest single block difference, grey levels
FINGERPRINT_GRID = 16
REFERENCE_FILE = Path(__file__).with_name("canary_reference.json")
CANARY_TIMEOUT_S = 300

# One canary per simulator stack: the suites of a family share it (all five LIBERO suites run the same
# MuJoCo scene code; LIBERO-Plus adds its perturbation code on top).
FAMILY_OF_SUITE = {
    **{s: "libero" for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")},
    "libero_plus": "libero_plus",
    "simpler_widowx": "simpler_widowx",
}
PROBE_SUITE = {"libero": "libero_spatial", "libero_plus": "libero_plus", "simpler_widowx": "simpler_widowx"}


@dataclass(frozen=True)
class CanaryMeasurement:
    """What one probe saw: settled object positions (metres) and the frame's block-mean fingerprint."""

    suite: str
    positions: dict[str, list[float]]
    fingerprint: list  # (GRID, GRID, 3) nested lists, grey levels
    task: str = ""


@dataclass(frozen=True)
class CanaryResult:
    family: str
    status: str  # ok | fail | no-reference
    detail: str
    pose_error_m: float | None = None
    fingerprint_mean: float | None = None
    fingerprint_max: float | None = None
    stack: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(image: np.ndarray, grid: int = FINGERPRINT_GRID) -> np.ndarray:
    """(grid, grid, C) block means of an (S, S, C) uint8 image; S must be a multiple of grid."""
    size = image.shape[0]
    if image.shape[1] != size or size % grid:
        raise ValueError(f"fingerprint needs a square image with a side divisible by {grid}; got {image.shape}")
    block = size // grid
    return image.astype(np.float64).reshape(grid, block, grid, block, -1).mean(axis=(1, 3))


def measure(suite_name: str, suite_kwargs: dict[str, Any] | None = None) -> CanaryMeasurement:
    """Reset episode (0, 0, 0) of the suite and observe it (runs the simulator: seconds)."""
    from lamp_bench.harness.policy import PolicyNeeds
    from lamp_bench.harness.registry import SUITES, load_builtin_entries
    from lamp_bench.harness.suite import Episode

    load_builtin_entries()
    suite = SUITES.build(suite_name, **(suite_kwargs or {}))
    task = suite.task(0)
    env = suite.make_env(PolicyNeeds(cameras=("third_person",), image_size=256, privileged=True))
    try:
        observation = env.reset(Episode(suite.name, task.task_id, 0, 0))
    finally:
        env.close()
    objects = observation.privileged.get("objects", {})
    positions = {name: [float(v) for v in np.asarray(obj["pos"])] for name, obj in sorted(objects.items())}
    return CanaryMeasurement(suite.name, positions, fingerprint(observation.images["third_person"]).round(3).tolist(),
                             task.name)


def compare(family: str, got: CanaryMeasurement, reference: dict[str, Any] | None, stack: dict[str, Any]) -> CanaryResult:
    if reference is None:
        return CanaryResult(family, "no-reference", "no reference values for this suite in "
                            f"{REFERENCE_FILE.name}; record them with `lamp-bench doctor --write-canary-reference`",
                            stack=stack)
    missing = sorted(set(reference["positions"]) ^ set(got.positions))
    if missing:
        return CanaryResult(family, "fail", f"the scene's objects differ from the reference: {', '.join(missing)}",
                            stack=stack)
    pose_error = max((float(np.linalg.norm(np.subtract(got.positions[k], v))) for k, v in reference["positions"].items()),
                     default=0.0)
    diff = np.abs(np.asarray(got.fingerprint) - np.asarray(reference["fingerprint"]))
    mean, worst = float(diff.mean()), float(diff.max())
    problems = []
    if pose_error > POSE_TOLERANCE_M:
        problems.append(f"settled objects moved {pose_error * 1000:.2f} mm (tolerance {POSE_TOLERANCE_M * 1000:.0f} mm)")
    if mean > FINGERPRINT_TOLERANCE or worst > FINGERPRINT_BLOCK_MAX:
        problems.append(f"first frame differs by {mean:.2f} grey levels on average, {worst:.1f} at most "
                        f"(tolerance {FINGERPRINT_TOLERANCE}, {FINGERPRINT_BLOCK_MAX})")
    reference_stack = reference.get("stack", {})
    if problems:
        detail = "; ".join(problems) + f" vs the reference recorded on {_describe(reference_stack)}"
        return CanaryResult(family, "fail", detail, pose_error, mean, worst, stack)
    detail = (f"poses within {pose_error * 1000:.3f} mm, frame within {mean:.2f} grey levels of the reference "
              f"({_describe(reference_stack)})")
    return CanaryResult(family, "ok", detail, pose_error, mean, worst, stack)


def _describe(stack: dict[str, Any]) -> str:
    versions = stack.get("versions", {})
    parts = [f"{k} {v}" for k, v in versions.items() if v]
    if stack.get("mesa"):
        parts.append(f"Mesa {stack['mesa']}")
    return ", ".join(parts) or "an unrecorded stack"


def load_reference() -> dict[str, Any]:
    return json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.is_file() else {}


def stack_identity(family: str, suite_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a canary's verdict depends on: the simulator packages, the renderer and the asset pack."""
    from lamp_bench.harness.provenance import hash_tree_listing, package_versions
    from lamp_bench.harness.system_checks import lavapipe_mesa_version

    packages = {"libero": ("mujoco", "robosuite", "libero", "bddl", "numpy"),
                "libero_plus": ("mujoco", "robosuite", "libero", "bddl", "numpy"),
                "simpler_widowx": ("mani-skill", "sapien", "torch", "numpy")}[family]
    versions = package_versions()
    stack: dict[str, Any] = {"versions": {k: versions.get(k) for k in packages}}
    if family == "simpler_widowx":
        stack["mesa"] = lavapipe_mesa_version()
    else:
        stack["mujoco_gl"] = os.environ.get("MUJOCO_GL", "egl")
    assets_env = {"libero": config.LIBERO_ASSETS_ENV, "libero_plus": config.LIBERO_ASSETS_ENV,
                  "simpler_widowx": config.MANISKILL_ASSETS_ENV}[family]
    assets = (suite_kwargs or {}).get("assets") or os.environ.get(assets_env)
    if assets and Path(assets).is_dir():
        stack["assets_identity"] = hash_tree_listing(str(Path(assets).resolve()))
    if family == "libero_plus":
        plus = os.environ.get(config.LIBERO_PLUS_ASSETS_ENV)
        if plus and Path(plus).is_dir():
            stack["libero_plus_identity"] = hash_tree_listing(str(Path(plus).resolve()))
    return stack


def stack_fingerprint(stack: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(stack, sort_keys=True).encode()).hexdigest()[:16]


def _cache_path(family: str, stack: dict[str, Any]) -> Path:
    return config.home() / "canaries" / f"{family}-{stack_fingerprint(stack)}.json"


def cached(family: str, stack: dict[str, Any]) -> CanaryResult | None:
    """The verdict measured earlier for this exact stack, if any."""
    path = _cache_path(family, stack)
    if not path.is_file():
        return None
    try:
        return CanaryResult(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None  # a torn or older cache file: measure again


def run_canary(family: str, suite_kwargs: dict[str, Any] | None = None, use_cache: bool = True) -> CanaryResult:
    """The family's canary verdict, measured in a child process (a renderer crash cannot take the caller
    down) unless this stack's verdict is cached."""
    stack = stack_identity(family, suite_kwargs)
    if use_cache and (hit := cached(family, stack)) is not None:
        return hit
    try:
        got = measure_in_subprocess(PROBE_SUITE[family], suite_kwargs)
    except CanaryProbeError as error:
        result = CanaryResult(family, "fail", str(error), stack=stack)
    else:
        result = compare(family, got, load_reference().get(family), stack)
    if result.status != "fail":  # a failure may be transient (a busy machine timing out): measure it again
        path = _cache_path(family, stack)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=1))
    return result


def stack_provenance(suite_name: str, suite_kwargs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What an episode record carries about its simulator stack: the stack's fingerprint and the canary
    verdict measured for it (`run`/`sweep` measure it first; "not measured" where nothing did)."""
    family = FAMILY_OF_SUITE.get(suite_name)
    if family is None:
        return None
    stack = stack_identity(family, suite_kwargs)
    verdict = cached(family, stack)
    return {"family": family, "fingerprint": stack_fingerprint(stack),
            "canary": verdict.status if verdict else "not measured",
            "canary_detail": verdict.detail if verdict else "run `lamp-bench doctor` on this machine"}


class CanaryProbeError(RuntimeError):
    """The probe process failed (simulator missing, renderer crash, assets missing)."""


def measure_in_subprocess(suite_name: str, suite_kwargs: dict[str, Any] | None = None) -> CanaryMeasurement:
    command = [sys.executable, "-m", "lamp_bench.harness.canaries", suite_name, json.dumps(suite_kwargs or {})]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CANARY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CanaryProbeError(f"the {suite_name} probe did not finish in {CANARY_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise CanaryProbeError(f"the {suite_name} probe failed: {last}")
    return CanaryMeasurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def write_reference(families: list[str]) -> Path:
    """Measure each family now and store the values as the reference for this (pinned) stack."""
    reference = load_reference()
    for family in families:
        got = measure_in_subprocess(PROBE_SUITE[family])
        reference[family] = {**asdict(got), "stack": stack_identity(family)}
    REFERENCE_FILE.write_text(json.dumps(reference, indent=1) + "\n")
    return REFERENCE_FILE


if __name__ == "__main__":  # the probe process: prints one JSON line
    measurement = measure(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(json.dumps(asdict(measurement)))
