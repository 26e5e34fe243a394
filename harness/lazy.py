"""Public names of a package imported on first use (PEP 562), so importing the package, or a
light module in it, never pulls in what its heavier modules import (torch, for the reports)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, public: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``, whose ``public`` maps module -> names."""
    module_of = {name: module for module, names in public.items() for name in names}

    def attribute(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module_of[name]), name)

    return attribute, list(module_of)
