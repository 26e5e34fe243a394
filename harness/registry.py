"""Plugins found through entry points, loaded lazily, with "did you mean" errors.

Built-in objectives and tasks are registered exactly like third-party ones (in
pyproject.toml), so the plugin path is the only path. A name is imported only when a study
asks for it: one broken plugin never breaks the others.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import subprocess
import sys
from importlib.metadata import (EntryPoint, PackageNotFoundError, entry_points, packages_distributions,
                                version)
from pathlib import Path
from types import ModuleType
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


def code_identity(cls: type) -> dict[str, str]:
    """What a plugin's results depend on besides its options: the distribution that ships it
    (``package``, ``version``; empty for a class no installed distribution provides) and
    ``source_sha256``, a hash over its source files, so an edited plugin is a new plugin.

    The files are those of the plugin's top-level package (for a one-module plugin, that
    module): an objective's helpers decide its batches as much as its class does, so hashing
    only the class's module would miss an edited helper. objbench's own plugins hash their
    subpackage (``objbench.objectives``, ``objbench.tasks``) instead of all of objbench, so
    that editing the reports does not re-run every study; the harness itself is identified by
    objbench's version and git commit in a study's provenance.
    """
    parts = cls.__module__.split(".")
    root = ".".join(parts[:2]) if parts[0] == "objbench" and len(parts) > 2 else parts[0]
    digest = hashlib.sha256()
    for name, path in _source_files(sys.modules.get(root)):
        digest.update(f"{name}\0{_file_sha256(path)}\n".encode())
    dist = _distributions().get(parts[0], "")
    return {"package": dist, "version": _version(dist), "source_sha256": digest.hexdigest()[:16]}


def _source_files(module: ModuleType | None) -> list[tuple[str, Path]]:
    """(name inside the plugin, path) of each of its files: everything under a package's
    folders (a namespace package's too) but compiled caches; a one-module plugin's file; none
    for a module without one (defined in an interactive session)."""
    folders = [Path(f) for f in dict.fromkeys(getattr(module, "__path__", []))]
    if folders:
        return sorted((p.relative_to(folder).as_posix(), p) for folder in folders for p in folder.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    file = getattr(module, "__file__", None)
    return [(Path(file).name, Path(file))] if file else []


_file_hashes: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a file is read once per version


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        _file_hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _file_hashes[key]


@functools.cache
def _distributions() -> dict[str, str]:
    """Top-level import name -> the distribution that installs it (scanned once per process)."""
    return {name: dists[0] for name, dists in packages_distributions().items()}


def _version(dist: str) -> str:
    try:
        return version(dist) if dist else ""
    except PackageNotFoundError:
        return ""


def source_commit(root: Path | None = None) -> str:
    """The git commit objbench's source (or ``root``) is at, suffixed ``-dirty`` when tracked
    files differ from it, so provenance never names a commit the code did not match; "unknown"
    outside a git checkout."""
    where = str(root or Path(__file__).parents[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return (head + ("-dirty" if changed else "")) if head else "unknown"
