"""`lamp-bench doctor`: can this machine produce trustworthy numbers, and what to do where it cannot.

Sections: environment (Python, torch, each simulator stack importable and rendering), assets and
versions, Slurm (when asked), canaries (a deterministic probe per simulator stack, see canaries.py).
`run` and `sweep` call `preflight` first: the cheap checks of the stacks they need, and refuse with the
doctor's message when one fails.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from lamp_bench.harness import canaries
from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.system_checks import (FAIL, OK, WARN, Check, asset_checks, mesa_check, mujoco_check,
                                              python_check, sapien_check, setup_checks, sinfo_check, torch_check,
                                              version_checks)


@dataclass(frozen=True)
class Report:
    sections: dict[str, list[Check]]

    @property
    def checks(self) -> list[Check]:
        return [c for checks in self.sections.values() for c in checks]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed, "sections": {k: [c.to_dict() for c in v] for k, v in self.sections.items()}}


def canary_check(family: str, use_cache: bool = True) -> Check:
    result = canaries.run_canary(family, use_cache=use_cache)
    status = {"ok": OK, "fail": FAIL, "no-reference": WARN}[result.status]
    fix = "" if status == OK else (
        "the simulator stack differs from the pinned one (see `lamp-bench doctor` versions); results are not "
        "comparable with the repo's. Reinstall with bash .ci/setup, or if the change is intended, record new "
        "references with `lamp-bench doctor --write-canary-reference`" if status == FAIL else
        "lamp-bench doctor --write-canary-reference")
    return Check(f"canary {family}", status, result.detail, fix)


def diagnose(slurm: bool = False, run_canaries: bool = True, setup_only: bool = False,
             use_cache: bool = False) -> Report:
    if setup_only:
        return Report({"setup": setup_checks()})
    mujoco, sapien = mujoco_check(), sapien_check()
    environment = [python_check(), torch_check(), mujoco, mesa_check(), sapien]
    sections = {"environment": environment, "assets and versions": asset_checks() + version_checks()}
    if slurm:
        sections["slurm"] = [sinfo_check()]
    if run_canaries:
        renderer = {"libero": mujoco, "libero_plus": mujoco, "simpler_widowx": sapien}
        sections["canaries"] = [
            canary_check(family, use_cache) if renderer[family].status != FAIL else
            Check(f"canary {family}", FAIL, "skipped: its renderer check failed", "fix the environment checks first")
            for family in canaries.PROBE_SUITE]
    return Report(sections)


def suite_stack_checks(suites: Iterable[str]) -> list[Check]:
    """The cheap checks (seconds, no simulator episode) of the stacks these suites run on."""
    families = {canaries.FAMILY_OF_SUITE.get(s) for s in suites}
    checks = [torch_check()]
    if families & {"libero", "libero_plus"}:
        checks.append(mujoco_check())
    if "simpler_widowx" in families:
        checks += [mesa_check(), sapien_check()]
    return checks


def preflight(suites: Sequence[str], suite_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Before `run` or `sweep` starts or submits anything: refuse with the doctor's message when a part a
    suite needs is missing; then each suite's canary (cached per stack). Returns the canary verdicts,
    which go into every episode's provenance."""
    failed = [c for c in suite_stack_checks(suites) if c.status == FAIL]
    if failed:
        first = failed[0]
        raise ConfigError(f"this machine cannot run {', '.join(sorted(set(suites)))}: {first.name}: {first.detail}. "
                          f"Fix: {first.fix} (see `lamp-bench doctor`)")
    verdicts = {}
    for family in sorted({canaries.FAMILY_OF_SUITE[s] for s in suites if s in canaries.FAMILY_OF_SUITE}):
        verdicts[family] = canaries.run_canary(family, suite_kwargs).to_dict()
    return verdicts
