"""What a token probe gets right without context: the lexical baseline and ambiguous words.

A linear probe on the embedding layer reads word identity, and word identity alone tags most
tokens right: the lexical baseline (each word's most frequent training tag) shows how much.
Only on ambiguous words (types seen with more than one tag in training) does a tag depend on
context, so probe accuracy there, and the gain of the contextual layers over the embedding
layer, are what tell whether an encoder learned to use context.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from objbench.tasks.base import TaskResult
from objbench.tasks.probing import LayerProbe, best_layer


def _types(words: Sequence[str]) -> np.ndarray:
    """Word types as the baselines count them: lower-cased, so sentence-initial capitals do
    not split a word in two."""
    return np.char.lower(np.asarray(words, dtype=str))


@dataclass(frozen=True)
class Lexicon:
    """Each training word type's most frequent tag; unseen types get the overall majority tag."""

    tags: dict[str, str]
    majority: str

    @classmethod
    def fit(cls, words: Sequence[str], tags: Sequence[str]) -> "Lexicon":
        counts: dict[str, Counter] = defaultdict(Counter)
        for word, tag in zip(_types(words).tolist(), tags):
            counts[word][tag] += 1
        majority = Counter(tags).most_common(1)[0][0]
        # most_common breaks ties by first occurrence: a fixed order, the same for every run
        return cls({w: c.most_common(1)[0][0] for w, c in counts.items()}, majority)

    def predict(self, words: Sequence[str]) -> np.ndarray:
        return np.array([self.tags.get(w, self.majority) for w in _types(words).tolist()])


def ambiguous_types(words: Sequence[str], tags: Sequence[str], min_count: int) -> set[str]:
    """Word types with at least two tags each seen ``min_count`` times or more in training."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for word, tag in zip(_types(words).tolist(), tags):
        counts[word][tag] += 1
    return {w for w, c in counts.items() if sum(n >= min_count for n in c.values()) >= 2}


def is_ambiguous(words: Sequence[str], types: set[str]) -> np.ndarray:
    return np.isin(_types(words), sorted(types))


def add_baseline_rows(result: TaskResult, metric: str, lexical_correct: np.ndarray,
                      majority_correct: np.ndarray, item_ids: np.ndarray) -> None:
    """``metric``'s majority and lexical baselines on the same test tokens, with per-token items
    for the lexical one (the one a model is checked against)."""
    n = len(lexical_correct)
    result.add(metric, majority_correct.mean(), n, baseline="majority")
    result.add(metric, lexical_correct.mean(), n, baseline="lexical")
    result.add_items(metric, None, item_ids, lexical_correct, baseline="lexical")


def add_subset_rows(result: TaskResult, layers: Sequence[LayerProbe], metric: str, pooling: str,
                    val_items: np.ndarray, test_items: np.ndarray, item_ids: np.ndarray) -> None:
    """Probe accuracy on a subset of tokens (bool masks over validation and test) per layer, and
    at the layer best on the validation subset, with per-token items there."""
    n = int(test_items.sum())
    for p in layers:
        result.add(metric, p.correct[test_items].mean(), n, layer=p.layer, pooling=pooling)
    best = best_layer(layers, val_items)
    result.add(metric, best.correct[test_items].mean(), n, pooling=pooling)
    result.add_items(metric, None, item_ids[test_items], best.correct[test_items], pooling=pooling)


def add_contextual_gain(result: TaskResult, layers: Sequence[LayerProbe], metric: str, pooling: str,
                        val_items: np.ndarray, test_items: np.ndarray, item_ids: np.ndarray) -> None:
    """Test accuracy of the contextual layer best on validation minus the embedding layer's, on
    a subset of tokens, with each token's difference (-1, 0 or 1) as an item."""
    contextual = best_layer(layers, val_items, first=1)
    diff = contextual.correct[test_items].astype(float) - layers[0].correct[test_items]
    result.add(metric, diff.mean(), len(diff), pooling=pooling)
    result.add_items(metric, None, item_ids[test_items], diff, pooling=pooling)
