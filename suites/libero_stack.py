"""The installed LIBERO stack: where the `libero` package and its asset folder are, importing `libero`
without its stdin prompt (and robosuite without its macros warning), and reading LIBERO's init-state files.

Asset folder: the suite's `assets=` argument, else $LAMP_BENCH_LIBERO_ASSETS, else the `assets` folder
inside the installed `libero` package. lamp-bench writes LIBERO's config.yaml into its own folder and
points LIBERO_CONFIG_PATH there before importing `libero` (which otherwise prompts on stdin); BDDL and
init-state files come from the installed package. Init states are LIBERO's `*.pruned_init` pickles,
loaded with `torch.load(weights_only=True)` and a four-entry allow-list, never with libero's own loader.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import sys
from pathlib import Path

import numpy as np

from lamp_bench.harness import config


def libero_package_dir() -> Path:
    """The installed `libero/libero` folder (BDDL files, init states, the package's default assets)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise config.ConfigError(
            "the `libero` package is not installed: pip install --no-deps libero==0.1.1 "
            "plus the `libero` extra of lamp-bench (see README)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "libero"


def resolve_assets(assets: str | os.PathLike | None) -> Path:
    """The LIBERO asset folder: option, then $LAMP_BENCH_LIBERO_ASSETS, then the package's own folder."""
    path = config.asset_dir(assets, config.LIBERO_ASSETS_ENV, "LIBERO", must_contain="scenes")
    if path is not None:
        return path
    default = libero_package_dir() / "assets"
    if not (default / "scenes").is_dir():
        raise config.ConfigError(
            f"no LIBERO asset folder: the libero package has none at {default}; pass --assets DIR or set "
            f"{config.LIBERO_ASSETS_ENV} to LIBERO's `assets` folder"
        )
    return default


def import_libero(assets: Path | None = None):
    """The `libero.libero` module and LIBERO's ControlEnv class; with `assets`, scene and object files
    resolve from that folder from now on (LIBERO reads a module global, never downloads when it is set)."""
    libero, control_env = _import_libero()
    if assets is not None:
        libero._assets_path_cache = str(assets)
    return libero, control_env


@functools.lru_cache(maxsize=1)
def _import_libero():
    """Import `libero` without its stdin prompt, rendering on the CPU unless the user chose otherwise."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # submitit's CPU-only jobs: robosuite's EGL would parse it
        os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", "0")  # as a device list and fail (int(''))
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    package = libero_package_dir()
    folder = config.home() / "libero"
    folder.mkdir(parents=True, exist_ok=True)
    import yaml

    paths = {
        "benchmark_root": str(package),
        "bddl_files": str(package / "bddl_files"),
        "init_states": str(package / "init_files"),
        "datasets": str(folder / "datasets"),
        "assets": str(package / "assets"),  # unused for scenes: they go through _assets_path_cache
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(paths))
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    _load_robosuite_macros(folder)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        import libero.libero
        from libero.libero.envs.env_wrapper import ControlEnv
    # robosuite prints this when the legacy `gym` package is absent; lamp-bench uses gymnasium and never
    # robosuite's GymWrapper. Anything else printed during the import is passed on.
    passed = [line for line in printed.getvalue().splitlines() if line != GYM_WRAPPER_NOTICE]
    if passed:
        print("\n".join(passed))
    return libero.libero, ControlEnv


GYM_WRAPPER_NOTICE = "Warning: make sure gym is installed if you want to use the GymWrapper."


def _load_robosuite_macros(folder: Path) -> None:
    """robosuite warns three lines at import unless `robosuite.macros_private` exists. lamp-bench keeps that
    file beside LIBERO's config (robosuite's defaults, as its setup_macros.py writes them; edit it to
    override) and registers it under robosuite's name, so the installed package is never changed."""
    name = "robosuite.macros_private"
    if name in sys.modules:
        return
    path = folder / "robosuite_macros_private.py"
    if not path.is_file():
        package = importlib.util.find_spec("robosuite")
        if package is None or package.origin is None:
            return  # robosuite is missing: the import below says so
        path.write_text(Path(package.origin).with_name("macros.py").read_text())
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module


def load_init_states(path: Path) -> np.ndarray:
    """A LIBERO `*.pruned_init` file (a pickled float64 array) through torch's weights-only unpickler."""
    import pickle

    import torch

    from numpy._core.multiarray import _reconstruct

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, np.dtypes.Float64DType]
    if not path.is_file():
        raise config.ConfigError(f"LIBERO init-state file {path} does not exist")
    try:
        with torch.serialization.safe_globals(allowed):
            states = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False; only its reason line is worth passing on
        reason = next((line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                      "not a pickled array")
        raise config.ConfigError(
            f"refusing to load LIBERO init-state file {path}: a plain float64 array was expected, and the "
            f"weights-only unpickler rejected it ({reason.strip()}); replace the file with LIBERO's original"
        ) from None
    states = np.asarray(states)
    if states.ndim == 1:  # LIBERO-Plus stores one init state per file as a flat array
        states = states[None, :]
    if states.dtype != np.float64 or states.ndim != 2:
        raise config.ConfigError(
            f"LIBERO init-state file {path} holds {states.dtype} {states.shape}, expected (N, state) float64")
    return states
