"""Context usage: how a token's loss falls as context is kept on each side of it.

For sampled target tokens of held-out sentences, the token sequence is *cropped* to the
``k_left`` tokens before the target and the ``k_right`` after it, and the target is scored by
the objective's own scoring rows on the crop (`TrainedModel.target_scores`). Cropping, not
attention masking: information flows across layers, so a masked-out token would still reach
the target through its neighbours. The loss is the target's negative log-probability in nats,
of the objective's own score kind (exact or pseudo), so losses of different objectives are
read against their own ``L(0, 0)``, not against each other's. A bound is not read: a token's
share of its estimate is one term of a random-mask sum whose weights change with the crop's
length, not the token's loss given its context, so it does not fall with context (measured on
``mdlm``: it rose, by the same amount for every seed). An objective scored by a bound is read
by the first of its score variants that is exact or pseudo (``mdlm``: ``pll``, each token
masked alone), and is not applicable without one, as is an objective with no score.

Rows, each with per-target values so arms pair by item:

* ``loss_l{k}_r{k}``: mean loss with ``k_left``/``k_right`` tokens kept (``all``: the whole sentence);
* ``usable_information``: ``L(0, 0) - L(all, all)``, what context is worth to the model;
* ``context_gain_left`` / ``_right``: what one side adds with the other side full,
  ``L(0, all) - L(all, all)`` and ``L(all, 0) - L(all, all)``; ``right_minus_left_gain``;
* ``effective_context_left`` / ``_right`` (no items): the smallest ``k`` whose mean loss
  recovers ``gain_share`` of that side's gain (``all`` reported as the model's length limit);
* ``shuffle_increase_d{d}``: Khandelwal et al. (2018): the loss increase when the tokens
  farther than ``d`` from the target are shuffled (each side within itself), whole sentence kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from objbench.harness.corpora import load_corpus
from objbench.harness.errors import DataError
from objbench.harness.reading import TrainedModel
from objbench.objectives.base import Objective
from objbench.tasks.admission import Admission
from objbench.tasks.base import NOT_APPLICABLE, ReadingOptions, Task, TaskResult

ALL = "all"
PER_TOKEN_KINDS = ("exact", "pseudo")  # scores whose token terms are the token's own loss
FLOAT_ERROR = 1e-6  # nats: a side whose gain is below this gives nothing (a causal model's right side)
Kept = int | Literal["all"]
# a sentence ends at . ! or ? (maybe closing a quote) before a capital or an opening quote: a
# rule for clean news text, not a parser ("Mr. Smith" ends a sentence early; short pieces
# are left out by ``min_tokens``)
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019]))\s+(?=[\"'\u201c\u2018]?[A-Z0-9])|\n+")


class ContextOptions(ReadingOptions):
    corpus: str = Field("news", description="held-out sentences come from this corpus's validation split "
                                            "(any data.corpus source)")
    n_targets: int = Field(1000, ge=2, description="target tokens, one per sentence, the same for every arm "
                                                  "(a fixed random sample)")
    min_tokens: int = Field(8, ge=2, description="shortest sentence sampled (tokens)")
    k: list[Kept] = Field([0, 1, 2, 4, 8, 16, 32, ALL], description="tokens kept on each side of the target; "
                                                                  "must hold 0 and 'all'")
    shuffle_beyond: list[int] = Field([1, 2, 4, 8, 16], description="d: tokens farther than d from the target "
                                                                   "are shuffled (order sensitivity)")
    gain_share: float = Field(0.9, gt=0.0, le=1.0, description="effective context: the share of a side's "
                                                               "gain that counts as reached")
    max_rows: int = Field(512, ge=1, description="scoring rows per forward pass")

    @field_validator("k")
    @classmethod
    def _k_spans_none_to_all(cls, k: list[Kept]) -> list[Kept]:
        if 0 not in k or ALL not in k:
            raise ValueError(f"k must hold 0 and 'all' (got {k}): usable information is L(0, 0) - L(all, all)")
        if any(isinstance(v, int) and v < 0 for v in k) or len(set(k)) != len(k):
            raise ValueError(f"k must be distinct non-negative counts and 'all' (got {k})")
        return sorted(k, key=_rank)


def _rank(k: Kept) -> float:
    return float("inf") if k == ALL else float(k)


def held_out_sentences(corpus: str) -> list[str]:
    """The validation split's documents cut into sentences (`_SENTENCE_END`), in corpus order."""
    texts = load_corpus(corpus)["validation"]["text"]
    return [s.strip() for text in texts for s in _SENTENCE_END.split(text) if s.strip()]


@dataclass
class Targets:
    """The sampled sentences (token ids as read), the target index in each, and item ids."""

    ids: list[list[int]]
    position: np.ndarray
    item: list[str]


def sample_targets(model: TrainedModel, admission: Admission, o: ContextOptions) -> Targets:
    """``n_targets`` sentences of at least ``min_tokens`` tokens in a fixed random order (seed 0,
    never the run's, so every arm reads the same), and one uniformly drawn token of each."""
    sentences = held_out_sentences(o.corpus)
    rng = np.random.default_rng(0)
    chosen = [i for i in rng.permutation(len(sentences)) if len(model.tokens(sentences[i])) >= o.min_tokens]
    chosen = sorted(chosen[: o.n_targets])
    if len(chosen) < 2:
        raise DataError(f"task 'context': corpus {o.corpus!r} has {len(chosen)} validation sentences of at least "
                        f"{o.min_tokens} tokens; lower min_tokens or use a larger corpus")
    keep = admission.sentences([sentences[i] for i in chosen], "test", [str(i) for i in chosen])
    chosen = [i for i, k in zip(chosen, keep) if k]
    ids = [model.ids(sentences[i]) for i in chosen]
    position = np.array([rng.integers(len(s)) for s in ids])
    return Targets(ids, position, [f"{i}:{p}" for i, p in zip(chosen, position)])


def crop(ids: list[int], t: int, left: Kept, right: Kept) -> tuple[list[int], int]:
    """``ids`` cut to ``left`` tokens before index ``t`` and ``right`` after; the target's new index."""
    start = 0 if left == ALL else max(0, t - left)
    end = len(ids) if right == ALL else min(len(ids), t + right + 1)
    return ids[start:end], t - start


def shuffle_far(ids: list[int], t: int, d: int, rng: np.random.Generator) -> list[int]:
    """``ids`` with the tokens farther than ``d`` from index ``t`` shuffled, each side within itself."""
    left, right = max(0, t - d), t + d + 1
    return [*rng.permutation(ids[:left]).tolist(), *ids[left:right], *rng.permutation(ids[right:]).tolist()]


NO_PER_TOKEN_SCORE = "none"


def per_token_score(objective: Objective) -> str | None:
    """The score a token's loss is read by: the objective's own (None) when it is exact or
    pseudo, else its first score variant that is (a bound's), else `NO_PER_TOKEN_SCORE`
    (module docstring)."""
    if objective.score_kind in PER_TOKEN_KINDS:
        return None
    return next((v for v in objective.score_variants if objective.scoring(v).score_kind in PER_TOKEN_KINDS),
                NO_PER_TOKEN_SCORE)


class Scorer:
    """Target losses (nats) of many (sequence, target index) pairs, each distinct pair scored once,
    by the objective's own score or its score ``variant``."""

    def __init__(self, variant: str | None = None) -> None:
        self.variant = variant
        self.index: dict[tuple[tuple[int, ...], int], int] = {}

    def add(self, ids: list[int], target: int) -> int:
        return self.index.setdefault((tuple(ids), target), len(self.index))

    def losses(self, model: TrainedModel, max_rows: int) -> np.ndarray:
        """Every pair's loss, in the order added; scored shortest first, so batches pad little."""
        keys = list(self.index)
        order = np.argsort([len(s) for s, _ in keys], kind="stable")
        losses = np.empty(len(keys))
        losses[order] = -model.target_scores([list(keys[i][0]) for i in order], [keys[i][1] for i in order],
                                             max_rows, desc="context", variant=self.variant)
        return losses


class Context(Task):
    name = "context"
    description = "context usage: a held-out token's loss vs the context kept on each side, and order sensitivity"
    Options = ContextOptions

    def primary(self) -> list[dict[str, Any]]:
        return [{"metric": "usable_information"}]

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        o = self.options
        admission = Admission(model, self.name, o)
        targets = sample_targets(model, admission, o)
        result = TaskResult(self.name)
        variant = per_token_score(model.objective)
        if variant is NO_PER_TOKEN_SCORE:
            result.add(NOT_APPLICABLE, 1, len(targets.ids), higher_is_better=False)
        else:
            grid, shuffled = self._losses(model, targets, variant)
            add_context_rows(result, grid, shuffled, targets.item, o, model.max_tokens)
        admission.add_rows(result)
        return result

    def _losses(self, model: TrainedModel, targets: Targets, variant: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Losses ``(items, k, k)`` over the cropping grid and ``(items, d)`` with far tokens shuffled."""
        o, scorer = self.options, Scorer(variant)
        grid = np.array([[[scorer.add(*crop(ids, t, left, right)) for right in o.k] for left in o.k]
                         for ids, t in zip(targets.ids, targets.position)], dtype=np.int64)
        shuffled = np.array([[scorer.add(shuffle_far(ids, t, d, np.random.default_rng([item, d])), t)
                              for d in o.shuffle_beyond]
                             for item, (ids, t) in enumerate(zip(targets.ids, targets.position))], dtype=np.int64)
        losses = scorer.losses(model, o.max_rows)
        return losses[grid], losses[shuffled].reshape(len(targets.ids), len(o.shuffle_beyond))


def add_context_rows(result: TaskResult, grid: np.ndarray, shuffled: np.ndarray, items: list[str],
                     o: ContextOptions, max_tokens: int) -> None:
    """Every row of the module docstring from the per-item losses."""
    full = grid[:, -1, -1]
    n = len(items)
    for a, left in enumerate(o.k):
        for b, right in enumerate(o.k):
            _add(result, f"loss_l{left}_r{right}", grid[:, a, b], items, higher_is_better=False)
    gains = {"left": grid[:, 0, -1] - full, "right": grid[:, -1, 0] - full}
    _add(result, "usable_information", grid[:, 0, 0] - full, items)
    for side, gain in gains.items():
        _add(result, f"context_gain_{side}", gain, items)
        curve = grid[:, :, -1].mean(0) if side == "left" else grid[:, -1, :].mean(0)
        result.add(f"effective_context_{side}", effective_context(curve, o.k, o.gain_share, max_tokens), n)
    _add(result, "right_minus_left_gain", gains["right"] - gains["left"], items)
    for j, d in enumerate(o.shuffle_beyond):
        _add(result, f"shuffle_increase_d{d}", shuffled[:, j] - full, items, higher_is_better=False)


def _add(result: TaskResult, metric: str, values: np.ndarray, items: list[str], higher_is_better: bool = True) -> None:
    result.add(metric, float(values.mean()), len(values), higher_is_better=higher_is_better)
    result.add_items(metric, None, items, values)


def effective_context(curve: np.ndarray, k: list[Kept], share: float, max_tokens: int) -> float:
    """The smallest ``k`` whose mean loss ``curve[k]`` (from ``k = 0`` to ``all``) has recovered
    ``share`` of the side's gain ``curve[0] - curve[all]``; 0 when the side gives nothing (up to
    `FLOAT_ERROR`), and
    ``all`` as ``max_tokens``, the most a sentence holds as read."""
    gain = curve[0] - curve[-1]
    if gain <= FLOAT_ERROR:
        return 0.0
    reached = np.flatnonzero(curve[0] - curve >= share * gain)[0]
    return float(max_tokens if k[reached] == ALL else k[reached])
