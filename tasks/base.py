"""The task contract: a task reads a trained model and returns tidy result rows.

A task never trains the run's model and never special-cases an objective's name: it reads
features and scores through `TrainedModel`, which applies the objective's declared reading
rules (attention, pooling, scoring). Tasks register through the entry-point group
``objbench.tasks``; built-ins use the same path as third-party packages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from objbench.harness.reading import TrainedModel

ROW_KEYS = ("task", "metric", "value", "n", "layer", "pooling", "split", "group", "higher_is_better")
BASELINE_MARK = "@"  # "acc_sum@trigram": the trigram baseline's value of acc_sum


def baseline_metric(metric: str, baseline: str | None) -> str:
    """The row name of ``baseline``'s value of ``metric`` (``metric`` itself for the model).

    Reports draw baselines as reference lines and check models against them; they never
    compare baselines between arms, since every arm reads the same data through them.
    """
    return metric if baseline is None else f"{metric}{BASELINE_MARK}{baseline}"
ITEM_KEYS = ("task", "metric", "layer", "pooling", "item", "value")
# rows that count what a reading cut, skipped or dropped (`objbench.tasks.admission`)
READING_DIAGNOSTICS = ("sentences_truncated", "tokens_truncated", "sentences_skipped", "sentences_empty",
                       "words_dropped")
# a zero-shot task's row (value 1) for a model whose objective has no sentence score
NOT_APPLICABLE = "scoring_not_applicable"
# a generation task's row (value 1) for a model whose objective declares no sampler
SAMPLING_NOT_APPLICABLE = "sampling_not_applicable"
# the generation task's samples as text, one JSON line per prompt (item, prompt, sample, truth),
# in the run folder: what a report shows side by side
SAMPLES_FILE = "generation_samples.jsonl"
# rows that describe how a task read the data rather than how well a model did: reported,
# never compared between arms
DIAGNOSTIC_METRICS = frozenset({"best_layer", NOT_APPLICABLE, SAMPLING_NOT_APPLICABLE, *READING_DIAGNOSTICS})


class Options(BaseModel):
    """Base for a task's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingOptions(Options):
    """What a task does with sentences the model cannot read whole; `Admission` applies them.

    Every built-in task's options include these; a task of your own gets them by deriving its
    options from this class.
    """

    long_sentences: Literal["truncate", "skip"] = Field(
        "truncate", description="a sentence longer than the model reads (the objective's limit): cut it "
                                "to the limit, or leave it and its item out; counted either way")
    empty_sentences: Literal["error", "skip"] = Field(
        "error", description="a sentence with no tokens after tokenisation: stop with an error naming "
                             "it, or leave it and its item out (counted)")


@dataclass
class TaskResult:
    """What a task returns: one row per value, plus per-item values for paired tests.

    ``rows`` have exactly `ROW_KEYS`: ``layer`` is the layer read (0 = embeddings, None when
    the value is not per layer), ``pooling`` the sentence reading (``cls``, ``last``,
    ``mean``; None when nothing is pooled), ``group`` a subset such as a phenomenon (None =
    all). ``items`` have exactly `ITEM_KEYS`: one value per test item (e.g. 1.0 / 0.0 for
    correct / wrong), with item ids stable across runs so arms can be paired. A value that a
    baseline (not the model) scores is added with ``baseline="name"`` (see `baseline_metric`).
    Counts that describe the reading rather than score the model (`DIAGNOSTIC_METRICS`) are
    rows too, with ``higher_is_better`` False.
    """

    task: str
    rows: list[dict] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)

    def add(self, metric: str, value: float, n: int, *, layer: int | None = None,
            pooling: str | None = None, split: str = "test", group: str | None = None,
            higher_is_better: bool = True, baseline: str | None = None) -> None:
        self.rows.append({"task": self.task, "metric": baseline_metric(metric, baseline),
                          "value": float(value), "n": int(n),
                          "layer": layer, "pooling": pooling, "split": split, "group": group,
                          "higher_is_better": higher_is_better})

    def add_items(self, metric: str, layer: int | None, ids: Iterable[str], values: Iterable[float],
                  *, pooling: str | None = None, baseline: str | None = None) -> None:
        ids, values = list(ids), list(values)
        metric = baseline_metric(metric, baseline)
        if len(ids) != len(values):
            raise ValueError(f"{len(ids)} item ids but {len(values)} values for {self.task}/{metric}")
        self.items.extend({"task": self.task, "metric": metric, "layer": layer, "pooling": pooling,
                           "item": str(i), "value": float(v)} for i, v in zip(ids, values))

    def extend(self, other: "TaskResult") -> None:
        self.rows.extend(other.rows)
        self.items.extend(other.items)


class Task(ABC):
    """A probe task. Subclasses set the class variables and implement `run`."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, shown by `objbench tasks`
    Options: ClassVar[type[Options]] = Options
    #: needs a Hugging Face hub connection (skipped by offline test suites)
    needs_hub: ClassVar[bool] = False

    def __init__(self, options: Options) -> None:
        self.options = options

    def primary(self) -> list[dict[str, Any]]:
        """The results a study compares arms on by default (keys of `Primary` in a study file:
        ``metric`` and, where a task reports several readings, ``pooling``/``group``/``layer``).
        A study's own ``primary`` list replaces these. Default: none."""
        return []

    @abstractmethod
    def run(self, model: "TrainedModel", seed: int) -> TaskResult:
        """Evaluate ``model``; all randomness (probe init, control labels, batch order) from ``seed``."""
