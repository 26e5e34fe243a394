"""N-gram baselines for zero-shot tasks, counted on the run's own pre-training tokens.

A zero-shot score that an n-gram model of the same corpus and tokenizer matches says nothing
about what an objective taught its encoder: the unigram model knows only word frequency, the
trigram model only the two tokens before each word. Both are interpolated Kneser-Ney models
(Chen & Goodman 1999) with one absolute discount per order, estimated as n1 / (n1 + 2 n2)
from the counts of counts; the lowest order is interpolated with the uniform distribution, so
no token has probability zero. A sentence is scored without context before its first token
(the order used grows with the position), like the encoders' sentence scores, which see
nothing before the sentence either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BASELINE_ORDERS = {"unigram": 1, "trigram": 3}


@dataclass(frozen=True)
class _Order:
    """Counts of one order: n-gram keys with their (continuation) counts, and per context the
    total count and the number of distinct following tokens."""

    keys: np.ndarray
    counts: np.ndarray
    contexts: np.ndarray
    context_totals: np.ndarray
    context_types: np.ndarray
    discount: float


def _gram_keys(stream: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Every k-gram occurrence of ``stream`` as one int64 (base-``vocab_size`` digits)."""
    keys = np.zeros(len(stream) - k + 1, np.int64)
    for i in range(k):
        keys = keys * vocab_size + stream[i:len(stream) - k + 1 + i]
    return keys


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at ``query`` in the sorted ``keys``; 0 where a query is absent."""
    if len(keys) == 0:
        return np.zeros(len(query), values.dtype)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, values[at], 0)


def _discount(counts: np.ndarray) -> float:
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5


def _order(keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> _Order:
    contexts, where = np.unique(keys // vocab_size, return_inverse=True)
    return _Order(keys, counts, contexts, np.bincount(where, weights=counts),
                  np.bincount(where), _discount(counts))


class KneserNey:
    """An interpolated Kneser-Ney n-gram model over token ids.

    The highest order counts n-grams; each lower order counts how many distinct tokens precede
    an n-gram (its continuation count), which is what makes Kneser-Ney better than plain
    back-off at predicting words that occur often but in few contexts.
    """

    def __init__(self, stream: np.ndarray, order: int, vocab_size: int) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        stream = np.asarray(stream, np.int64)
        self.order, self.vocab_size = order, vocab_size
        self.orders: list[_Order] = []
        for k in range(1, order + 1):
            if k == order:
                keys, counts = np.unique(_gram_keys(stream, k, vocab_size), return_counts=True)
            else:  # distinct left extensions of each k-gram: drop the first token of (k+1)-grams
                longer = np.unique(_gram_keys(stream, k + 1, vocab_size))
                keys, counts = np.unique(longer % vocab_size**k, return_counts=True)
            self.orders.append(_order(keys, counts, vocab_size))

    def log_probs(self, tokens: Sequence[int]) -> np.ndarray:
        """Natural-log probability of each token given the ones before it in ``tokens``."""
        tokens = np.asarray(tokens, np.int64)
        p = np.full(len(tokens), 1.0 / self.vocab_size)
        for k, counts in enumerate(self.orders, start=1):
            usable = np.arange(len(tokens)) >= k - 1  # positions with k - 1 tokens before them
            context = np.zeros(len(tokens), np.int64)
            for back in range(k - 1, 0, -1):
                context = context * self.vocab_size + np.roll(tokens, back)
            total = _lookup(counts.contexts, counts.context_totals, context)
            types = _lookup(counts.contexts, counts.context_types, context)
            seen = _lookup(counts.keys, counts.counts, context * self.vocab_size + tokens)
            d = counts.discount
            interpolated = (np.maximum(seen - d, 0) + d * types * p) / np.maximum(total, 1)
            p = np.where(usable & (total > 0), interpolated, p)
        return np.log(p)

    def score(self, sentences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Each sentence's summed log-probability and token count, as ``TrainedModel.score``."""
        sums = np.array([self.log_probs(s).sum() for s in sentences], np.float64)
        return sums, np.array([len(s) for s in sentences], np.int64)


@lru_cache(maxsize=4)
def _cached_model(stream: bytes, order: int, vocab_size: int) -> KneserNey:
    return KneserNey(np.frombuffer(stream, np.uint16), order, vocab_size)


def baseline_models(stream: np.ndarray, vocab_size: int) -> dict[str, KneserNey]:
    """The unigram and trigram baselines of a token stream, counted once per process and stream."""
    data = np.ascontiguousarray(stream, np.uint16).tobytes()
    return {name: _cached_model(data, order, vocab_size) for name, order in BASELINE_ORDERS.items()}
