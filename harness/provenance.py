"""What every episode record carries so a number can be traced to code, weights and simulator."""
from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

STACK_PACKAGES = (
    "lamp-bench", "numpy", "torch", "transformers", "peft", "mujoco", "robosuite", "libero", "bddl",
    "mani-skill", "sapien", "gymnasium",
)

# MuJoCo releases reported to change LIBERO's rendering or physics relative to the versions the
# published numbers were measured on (floors rendered darker from 3.3.3; contact changes from 3.4).
MUJOCO_LIBERO_CHANGES = ((3, 3, 3), "renders floors darker"), ((3, 4, 0), "changes contact physics on some tasks")


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if commit:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            ).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in STACK_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def mujoco_warning(version: str | None) -> str | None:
    if not version:
        return None
    try:
        parsed = tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return None
    notes = [note for since, note in MUJOCO_LIBERO_CHANGES if parsed >= since]
    if not notes:
        return None
    return (
        f"MuJoCo {version} {' and '.join(notes)} relative to the versions published LIBERO numbers "
        "used; compare only with results from the same MuJoCo version"
    )


@functools.lru_cache(maxsize=1)
def base_provenance() -> dict[str, Any]:
    versions = package_versions()
    prov: dict[str, Any] = {
        "code_commit": code_commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "versions": versions,
    }
    warning = mujoco_warning(versions.get("mujoco"))
    if warning:
        prov["mujoco_warning"] = warning
        warnings.warn(warning, stacklevel=2)
    return prov


def hash_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """sha256 over file contents in the given order (checkpoint identity)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def hash_tree_listing(root: str) -> str:
    """Cheap identity of an asset folder: sha256 of every file's relative path and size."""
    digest = hashlib.sha256()
    base = Path(root)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(base)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
