"""Small decorator-based name -> factory maps for policies and suites.

Entries can be declared *lazily* (name, module, description) so that `lamp-bench list` and name
validation never import torch or a simulator; the module is imported on first use and is expected
to register the real factory with the decorator.
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass
class Entry(Generic[T]):
    name: str
    description: str
    module: str | None = None  # import path that registers `factory` when imported
    factory: Callable[..., T] | None = None


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str):
        self.kind = kind
        self.plural = plural
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            entry = self._entries.get(name)
            if entry is not None and entry.factory is not None and entry.factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (entry.description if entry else "") or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, doc, entry.module if entry else None, factory)
            return factory

        return decorator

    def register_lazy(self, name: str, module: str, description: str) -> None:
        if name not in self._entries:
            self._entries[name] = Entry(name, description, module)

    def names(self) -> list[str]:
        load_builtin_entries()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._entries[n].description) for n in self.names()]

    def check(self, name: str) -> None:
        load_builtin_entries()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.plural}: {', '.join(self.names())}"
                f" (see `lamp-bench list`)."
            )

    def get(self, name: str) -> Callable[..., T]:
        self.check(name)
        entry = self._entries[name]
        if entry.factory is None:
            importlib.import_module(entry.module)  # registers the factory
            entry = self._entries[name]
            if entry.factory is None:
                raise RuntimeError(f"module {entry.module} did not register {self.kind} {name!r}")
        return entry.factory

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)


POLICIES: Registry[Any] = Registry("policy", "policies")
SUITES: Registry[Any] = Registry("suite", "suites")
register_policy = POLICIES.register
register_suite = SUITES.register


PLUGINS_ENV = "LAMP_BENCH_PLUGINS"


_loaded = False


def load_builtin_entries() -> None:
    """Declare the lazy entries of lamp-bench's own packages (cheap: no heavy imports), then import the
    user's plugin modules named in $LAMP_BENCH_PLUGINS (comma-separated), which register their own
    policies and suites; worker processes inherit the variable, so plugins work with every executor."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from lamp_bench import models, suites  # noqa: F401  (their __init__ declares lazy entries)

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(module)
