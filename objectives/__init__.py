"""Objectives, and the public API for writing one (``from objbench.objectives import ...``).

An objective subclasses `Objective`, declares its `Options`, builds an `ObjectiveBatch` from
clean blocks in `Objective.make_batch`, scores sentences in `Objective.score_rows` (or
declares ``score_kind = "none"``), and registers under the entry-point group
``objbench.objectives``. The defaults cover the rest; an objective that needs more overrides
`Objective.loss` (returning a `Loss`), `Objective.build_modules`, `Objective.predictions`,
`Objective.flops` and `Objective.count_targets`. Helpers the built-ins are made of:

* `with_cls` (every input starts with ``[CLS]``, so clean index k sits at position k + 1),
  `Vocab.random_tokens` (random non-special tokens), `Vocab.is_special`;
* `unit_ids` and `select_units` (tokens, whole words or spans, chosen up to a quota);
* `rand`, `randint`, `row` and `strata` draw row by row under the trainer's `RowGenerator`, so
  masks never depend on how the global batch is split over processes and micro-batches
  (`shared`: one draw per step; `subset`: some rows' generators, for a component);
* `Part` (a loss part: weight and normaliser) and `Objective.at` (the objective in force at a
  budget fraction) are what `mixture` and `schedule` (`objbench.objectives.composite`) use;
* `token_loss` and `token_loss_flops` (the default loss and its cost), `attention_matrix`;
* `check_objective` runs the contract (``objbench check-objective NAME``).
"""

from objbench.harness.lazy import lazy_exports

# name -> module, imported on first use (the registry imports objectives by module path)
_PUBLIC = {
    "objbench.objectives.base": ("Objective", "ObjectiveBatch", "Options", "Vocab", "Loss", "Part", "Predictions",
                                 "IGNORE", "ScoreKind", "Pooling", "with_cls", "collate", "attention_matrix",
                                 "special_tokens", "token_loss", "token_loss_flops"),
    "objbench.objectives.masking": ("unit_ids", "select_units"),
    "objbench.objectives.draws": ("RowGenerator", "rand", "randint", "row", "strata", "shared", "subset"),
    "objbench.objectives.contract": ("check_objective", "Check"),
}
__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
