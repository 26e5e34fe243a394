"""Plugins found through entry points, loaded lazily, with "did you mean" errors.

Built-in objectives and tasks are registered exactly like third-party ones (in
pyproject.toml), so the plugin path is the only path. A name is imported only when a study
asks for it: one broken plugin never breaks the others.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from objbench.harness.errors import PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._extra: dict[str, type[T]] = {}

    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        """Entry points by name; a name with more than one (different) target is a conflict."""
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=self.group):
            same = found.setdefault(ep.name, [])
            if all(e.value != ep.value for e in same):  # one package seen twice on sys.path is fine
                same.append(ep)
        return found

    def names(self) -> list[str]:
        return sorted({*self._entry_points(), *self._extra})

    def register(self, name: str, obj: type[T]) -> None:
        """Register in-process (tests, notebooks); packages should use entry points."""
        self._extra[name] = obj

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    def get(self, name: str) -> type[T]:
        if name in self._extra:
            return self._extra[name]
        eps = self._entry_points()
        if name not in eps:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PluginError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known)}. "
                f"Third-party {self.kind}s register under the entry-point group {self.group!r}."
            )
        if len(eps[name]) > 1:
            claims = " and ".join(sorted(f"{_package(ep)} ({ep.value})" for ep in eps[name]))
            raise PluginError(f"{self.kind} {name!r} is registered by {claims}; uninstall one of "
                              f"them to use {name!r} (every other {self.kind} still works)")
        ep = eps[name][0]
        try:
            return ep.load()
        except Exception as exc:  # a plugin's import error is reported, not propagated raw
            raise PluginError(
                f"{self.kind} {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) for every registered plugin; broken ones say so."""
        rows = []
        for name in self.names():
            try:
                doc: Any = getattr(self.get(name), "description", "") or ""
            except PluginError as exc:
                doc = f"BROKEN: {exc}"
            rows.append((name, str(doc).strip().splitlines()[0] if doc else ""))
        return rows


def _package(ep: EntryPoint) -> str:
    """The distribution that declares ``ep``, for messages."""
    return f"package {ep.dist.name!r}" if ep.dist is not None else "an unnamed package"


OBJECTIVES: Registry = Registry("objbench.objectives", "objective")
TASKS: Registry = Registry("objbench.tasks", "task")
