"""`import lamp_bench`: the entry points a user's own code calls, without knowing the package layout.

    import lamp_bench
    result = lamp_bench.evaluate("ckpt/lamp-tiny", suite="libero_spatial", tasks=[0, 1], episodes_per_task=5)

pyproject.toml installs this folder as the `lamp_bench` package itself. Its names load on first use
(module `__getattr__`), so importing `lamp_bench.results` or `lamp_bench.reports` never pulls in the
harness, its simulators or torch: the layering holds at import time too.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

# public name -> the module that defines it
_ENTRY_POINTS = {"evaluate": "lamp_bench.harness.evaluate", "Evaluation": "lamp_bench.harness.evaluate"}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'lamp_bench' has no attribute {name!r}")
    return getattr(import_module(_ENTRY_POINTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
