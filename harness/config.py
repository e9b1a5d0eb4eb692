"""Where lamp-bench finds assets and keeps its own files: options first, then environment variables,
then each library's own default."""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LAMP_BENCH_HOME"
LIBERO_ASSETS_ENV = "LAMP_BENCH_LIBERO_ASSETS"
LIBERO_PLUS_ASSETS_ENV = "LAMP_BENCH_LIBERO_PLUS_ASSETS"
MANISKILL_ASSETS_ENV = "LAMP_BENCH_MANISKILL_ASSETS"


class ConfigError(ValueError):
    """Bad or missing configuration (asset folder, checkpoint path, ...); the message says what to do."""


def home() -> Path:
    """lamp-bench's own folder (generated LIBERO config, caches)."""
    path = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "lamp-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def asset_dir(explicit: str | os.PathLike | None, env_var: str, what: str, must_contain: str | None = None) -> Path | None:
    """The asset folder named by an option or `env_var`; None when neither is set (library default)."""
    value = explicit or os.environ.get(env_var)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{what} asset folder {path} does not exist; pass --assets DIR or set {env_var}")
    if must_contain and not (path / must_contain).exists():
        raise ConfigError(f"{what} asset folder {path} has no {must_contain!r}: is it the right folder?")
    return path
