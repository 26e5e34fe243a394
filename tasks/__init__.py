"""Probe tasks, and the public API for writing one (``from objbench.tasks import ...``).

A task subclasses `Task`, declares its `Options` (deriving `ReadingOptions`, or `SplitCaps`
for split data, so users can choose what happens to long and empty sentences), reads the model
only through `TrainedModel`, and returns a `TaskResult`. The pieces the built-in tasks are made
of are here for third-party tasks too:

* data: `subsets` cuts each of `SPLITS` to the caps in `SplitCaps` and names every item;
  `Admission` applies the reading options to the inputs and reports what it cut, skipped or
  dropped (`READING_DIAGNOSTICS` rows);
* reading: `TrainedModel.word_features` returns `WordFeatures` (align labels by
  ``word_index``), `pooled_features` sentence features per pooling, `TrainedModel.score`
  sentence scores;
* probing: `ProbeSplit`, `probe_layers` (a probe and its control task per layer),
  `probe_streamed` (the same over features read a few layers at a time), `add_probe_rows`,
  `majority_acc`; `classify` runs the whole sentence-classification recipe
  (baseline, probes, fine-tuning) on texts and labels.

Register the task class under the entry-point group ``objbench.tasks``;
``examples/objbench-proper-nouns`` is a complete one.
"""

from objbench.harness.lazy import lazy_exports

# name -> module, imported on first use: `objbench.tasks.base` and the report layer, which
# reads its constants, must not pull in torch through this package
_PUBLIC = {
    "objbench.tasks.base": ("Task", "TaskResult", "Options", "ReadingOptions", "ROW_KEYS", "ITEM_KEYS",
                            "READING_DIAGNOSTICS"),
    "objbench.harness.reading": ("TrainedModel", "Text", "WordFeatures"),
    "objbench.tasks.admission": ("Admission",),
    "objbench.tasks.builtin": ("SPLITS", "SplitCaps", "subsets", "ProbeOptions", "PoolingOptions",
                               "FinetuneOptions", "classify"),
    "objbench.tasks.probing": ("ProbeSplit", "LayerProbe", "probe_layers", "probe_streamed", "add_probe_rows",
                               "majority_acc", "pooled_features", "TOKEN_POOLING", "MEAN"),
}
__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
