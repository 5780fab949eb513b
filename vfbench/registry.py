"""One ``Registry`` type for generators, datasets, metrics and feature extractors.

Built-in entries are declared lazily (``module:attr`` plus the metadata ``vfbench ls`` shows) so
that listing never imports torch-heavy modules; the module's ``@REGISTRY.register`` decorator
replaces the placeholder when it is imported. Third-party packages add entries through the
entry-point group ``vfbench.plugins``: each entry point is a module or a callable, loaded once,
that registers its objects with these registries.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, Optional, TypeVar

from vfbench.errors import UnknownNameError, UsageError

T = TypeVar("T")
PLUGIN_GROUP = "vfbench.plugins"


@dataclass
class Entry:
    name: str
    obj: Any = None
    target: Optional[str] = None  # "package.module:attr" for lazy entries
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.obj is not None


class Registry(Generic[T]):
    """A name -> object table with did-you-mean lookups and lazy imports."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------
    def register(self, name: Optional[str] = None, **meta) -> Callable[[T], T]:
        """Decorator: ``@GENERATORS.register("videofusion", description=...)``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            self.add(key, obj, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, **meta) -> None:
        with self._lock:
            old = self._entries.get(name)
            if old is not None:
                expected = old.target.split(":")[0] if old.target else None
                same_module = expected is not None and getattr(obj, "__module__", None) == expected
                if old.loaded or not same_module:
                    raise UsageError(
                        f"{self.kind} {name!r} is already registered"
                        f" (by {old.target or getattr(old.obj, '__module__', '?')}); pick another name"
                    )
                meta = {**old.meta, **meta}
            self._entries[name] = Entry(name, obj=obj, target=old.target if old else None, meta=meta)

    def add_lazy(self, name: str, target: str, **meta) -> None:
        """Declare ``name`` without importing ``target`` ("module:attr") until first use."""
        with self._lock:
            if name in self._entries:
                raise UsageError(f"{self.kind} {name!r} is already registered; pick another name")
            self._entries[name] = Entry(name, target=target, meta=meta)

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name: str) -> T:
        load_plugins()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise UnknownNameError(self.kind, name, self._entries)
            if not entry.loaded:
                module, _, attr = entry.target.partition(":")
                mod = importlib.import_module(module)
                entry = self._entries[name]
                if not entry.loaded:  # module did not self-register: take the attribute
                    entry.obj = getattr(mod, attr)
            return entry.obj

    def meta(self, name: str) -> Dict[str, Any]:
        load_plugins()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self._entries)
        return dict(self._entries[name].meta)

    def names(self) -> list:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def check(self, name: str) -> str:
        """Validate a name without importing it (for early CLI errors)."""
        if name not in self:
            raise UnknownNameError(self.kind, name, self._entries)
        return name


GENERATORS: Registry = Registry("generator")
DATASETS: Registry = Registry("dataset")
METRICS: Registry = Registry("metric")
EXTRACTORS: Registry = Registry("extractor")

REGISTRIES = {"generators": GENERATORS, "datasets": DATASETS, "metrics": METRICS, "extractors": EXTRACTORS}

_plugins_loaded = False
_plugins_lock = threading.Lock()


def load_plugins() -> None:
    """Load every ``vfbench.plugins`` entry point once (third-party registrations)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _plugins_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plugin must not break vfbench itself
                import warnings

                warnings.warn(f"vfbench plugin {ep.name!r} failed to load: {exc}")
                continue
            if callable(loaded) and not isinstance(loaded, type):
                loaded()


# Built-in entries. Importing vfbench.builtins declares them (lazily).
import vfbench.builtins  # noqa: E402,F401
