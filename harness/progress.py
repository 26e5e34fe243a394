"""Progress that reads well wherever it lands.

On a terminal, tqdm's bar redraws in place. Where stderr is a file or a pipe (Slurm, CI,
``> log``), redraws would pile up as carriage-return frames, so a bar prints one plain line
every ``OBJBENCH_PROGRESS_EVERY`` seconds (default 30) instead, and a bar made with
``summary=True`` (training) one more line when it closes. Under ``OBJBENCH_QUIET=1``
(``objbench --quiet``) bars print nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from objbench.harness.errors import ConfigError

EVERY_ENV = "OBJBENCH_PROGRESS_EVERY"
QUIET_ENV = "OBJBENCH_QUIET"
DEFAULT_EVERY = 30.0  # seconds between progress lines in a log


def configure(quiet: bool) -> None:
    """Set this process (and those it starts) up for its output: quiet, or line-by-line
    progress where stderr is not a terminal; ``datasets``' own bars follow (it reads its
    variable when first imported, so this runs before any data is touched)."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def progress_bar(iterable: Iterable | None = None, *, summary: bool = False, disable: bool = False,
        **kwargs: Any) -> "tqdm | LineProgress":
    """A progress bar with tqdm's interface (``update``, ``set_postfix``, ``close``, iteration),
    drawn as the output allows (see the module docstring). ``kwargs`` go to tqdm."""
    if disable or os.environ.get(QUIET_ENV) == "1":
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return LineProgress(iterable, every=_every(), summary=summary, **kwargs)


def _every() -> float:
    raw = os.environ.get(EVERY_ENV, "")
    try:
        every = float(raw) if raw else DEFAULT_EVERY
    except ValueError:
        every = -1.0
    if not every > 0:
        raise ConfigError(f"{EVERY_ENV}={raw!r}: expected seconds between progress lines, a "
                          f"number above 0 (default {DEFAULT_EVERY:g})")
    return every


class LineProgress:
    """tqdm's interface, printing tqdm's own status line (without the bar) at most once every
    ``every`` seconds, and once more on close when ``summary``."""

    def __init__(self, iterable: Iterable | None = None, *, every: float, summary: bool,
                 total: float | None = None, desc: str = "", unit: str = "it",
                 unit_scale: bool = False, initial: float = 0, leave: bool = True,
                 **_drawing: Any) -> None:
        """``leave`` and other drawing options of tqdm (``_drawing``) mean nothing for lines."""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.every, self.summary = iterable, every, summary
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self.initial = initial
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed and self.summary:
            self._print()
        self.closed = True

    def _print(self) -> None:
        self.last = time.monotonic()
        line = tqdm.format_meter(self.n, self.total, self.last - self.start, ncols=0,
                                 prefix=self.desc, unit=self.unit, unit_scale=self.unit_scale,
                                 postfix=self.postfix or None, initial=self.initial)
        print(line, file=sys.stderr, flush=True)
