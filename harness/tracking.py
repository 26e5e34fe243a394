"""Metric sinks: where a run's metrics go besides ``metrics.jsonl``.

A sink is anything with ``log(row)`` and ``close()``. The trainer hands every metrics row it
writes (rank 0 only) to each sink: the counters of every budget axis (``step``, ``tokens``,
``input_tokens``, ``targets``, ``flops``), ``loss``, ``lr``, ``tokens_per_s``, the objective's
applied rates, and ``val_loss`` at evaluation points. Sinks named in ``train.log_to`` are
registered plugins (entry-point group ``objbench.trackers``), built as ``cls(run_dir, cfg)``;
API callers may also pass sink objects to ``Trainer(sinks=...)``. Logging never changes
results, so a sink must not touch the model or the random streams.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from objbench.harness.config import RunConfig
from objbench.harness.errors import ConfigError, PluginError
from objbench.harness.registry import Registry

TRACKERS: Registry = Registry("objbench.trackers", "tracker")
COUNTERS = ("step", "tokens", "input_tokens", "targets", "flops")  # budget consumed so far


class MetricSink(Protocol):
    """What the trainer calls: ``log`` once per metrics row, ``close`` when training ends
    (finished, failed or interrupted)."""

    def log(self, row: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class Tracker(ABC):
    """Base for a registered sink. ``check()`` runs when a config naming it is validated, before
    any data is prepared: raise ConfigError there when a dependency is missing."""

    description: str = ""

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg

    @classmethod
    def check(cls) -> None:
        """Nothing to check by default."""

    @abstractmethod
    def log(self, row: Mapping[str, float]) -> None:
        """Record one metrics row."""

    def close(self) -> None:
        """Flush and release; nothing by default."""


def check_trackers(names: list[str]) -> None:
    """Every name in ``train.log_to`` is a registered tracker whose dependencies are installed."""
    for name in names:
        try:
            TRACKERS.get(name).check()
        except PluginError as exc:
            raise ConfigError(f"train.log_to: {exc}") from None


def open_trackers(names: list[str], run_dir: Path, cfg: RunConfig) -> list[MetricSink]:
    """The sinks ``train.log_to`` names, built for one run."""
    return [TRACKERS.get(name)(run_dir, cfg) for name in names]


def scalars(row: Mapping[str, float]) -> dict[str, float]:
    """A metrics row as grouped scalar names: ``train/``, ``val/``, ``budget/`` and ``objective/``
    for the objective's own entries (its applied rates)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in COUNTERS:
            out[f"budget/{'steps' if key == 'step' else key}"] = value
        elif key == "val_loss":
            out["val/loss"] = value
        elif key in ("loss", "lr", "tokens_per_s"):
            out[f"train/{key}"] = value
        else:
            out[f"objective/{key}"] = value
    return out


class TensorBoard(Tracker):
    """TensorBoard event files in ``<run>/tensorboard``: under a study folder each (arm, seed)
    is one TensorBoard run, so ``tensorboard --logdir <study>/runs`` overlays them."""

    description = "TensorBoard scalars per step in <run>/tensorboard (extra: objbench[tensorboard])"

    @classmethod
    def check(cls) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("train.log_to: 'tensorboard' needs the tensorboard package; install "
                              "it with pip install 'objbench[tensorboard]' (setup.sh does)")

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        super().__init__(run_dir, cfg)
        self.writer = None  # opened at the first row, which says where a resumed run restarts

    def log(self, row: Mapping[str, float]) -> None:
        step = int(row["step"])
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events a crashed attempt logged from this step on are hidden, as
            # metrics.jsonl drops its lines after the checkpoint a resume starts from
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step)
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
