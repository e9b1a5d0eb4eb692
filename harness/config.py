"""Where lamp-bench finds assets and keeps its own files: options first, then environment variables,
then each library's own default."""
from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (declared in pyproject for < 3.11)
    import tomli as tomllib

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


def parse_ids(text: str | None, what: str = "--tasks") -> list[int] | None:
    """The one parser of id lists: "0,3", "0-4", "0-4,7", "all" or empty (None: all). A reversed range
    ("5-3") or a non-number is an error naming the option."""
    if text is None or text.strip() in ("", "all"):
        return None
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
            else:
                lo = hi = int(part)
        except ValueError:
            raise ConfigError(f"{what} expects ids like 0,3 or 0-4; got {text!r}") from None
        if lo < 0 or hi < lo:
            raise ConfigError(f"{what}: range {part!r} is empty or negative; write it low-high, like 0-4")
        ids += range(lo, hi + 1)
    return ids
