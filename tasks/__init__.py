"""Probe tasks, and the public API for writing one (``from objbench.tasks import ...``).

A task subclasses `Task`, declares its `Options` (deriving `ReadingOptions`, or `SplitCaps`
for split data, so users can choose what happens to long and empty sentences), reads the model
only through `TrainedModel`, and returns a `TaskResult`. The pieces the built-in tasks are made
of are here for third-party tasks too:

* data: `subsets` cuts each of `SPLITS` to the caps in `SplitCaps` and names every item;
  `Admission` applies the reading options to the inputs and reports what it cut, skipped or
  dropped (`DIAGNOSTICS` rows);
* reading: `TrainedModel.word_features` returns `WordFeatures` (align labels by
  ``word_index``), `pooled_features` sentence features per pooling, `TrainedModel.score`
  sentence scores;
* probing: `ProbeSplit`, `probe_layers` (a probe and its control task per layer),
  `add_probe_rows`, `majority_acc`; `classify` runs the whole sentence-classification recipe
  (baseline, probes, fine-tuning) on texts and labels.

Register the task class under the entry-point group ``objbench.tasks``;
``examples/objbench-proper-nouns`` is a complete one.
"""

from objbench.harness.reading import Text, TrainedModel, WordFeatures
from objbench.tasks.admission import DIAGNOSTICS, Admission
from objbench.tasks.base import ITEM_KEYS, ROW_KEYS, Options, ReadingOptions, Task, TaskResult
from objbench.tasks.builtin import (SPLITS, FinetuneOptions, PoolingOptions, ProbeOptions, SplitCaps, classify,
                                    subsets)
from objbench.tasks.probing import (MEAN, TOKEN_POOLING, LayerProbe, ProbeSplit, add_probe_rows, majority_acc,
                                    pooled_features, probe_layers)

__all__ = [
    "Task", "TaskResult", "Options", "ReadingOptions", "ROW_KEYS", "ITEM_KEYS",
    "TrainedModel", "Text", "WordFeatures", "Admission", "DIAGNOSTICS",
    "SPLITS", "SplitCaps", "subsets", "ProbeOptions", "PoolingOptions", "FinetuneOptions", "classify",
    "ProbeSplit", "LayerProbe", "probe_layers", "add_probe_rows", "majority_acc", "pooled_features",
    "TOKEN_POOLING", "MEAN",
]
