"""The n-gram baselines: proper distributions, the textbook unigram, and context that helps."""

from __future__ import annotations

import numpy as np
import pytest

from objbench.tasks.ngram import KneserNey, baseline_models

V = 30


def _stream(seed: int = 0, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, V, n)
    stream[1::5] = 7  # a frequent token
    stream[2::5] = (stream[::5] + 1) % V  # the token two after a frequent one follows the first
    return stream


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("context", [[], [7], [7, 3], [29, 28], [0, 7, 1]])
def test_every_context_gets_a_distribution_that_sums_to_one(order, context):
    model = KneserNey(_stream(), order, V)
    probs = np.exp([model.log_probs([*context, w])[-1] for w in range(V)])
    assert probs.min() > 0
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_unigram_is_absolute_discounting_to_uniform():
    stream = np.array([1, 1, 1, 2, 2, 3])  # counts 3, 2, 1: n1 = 1, n2 = 1, D = 1 / 3
    model = KneserNey(stream, 1, 5)
    d, types, n = 1 / 3, 3, 6
    expected = [(max(c - d, 0) + d * types / 5) / n for c in (0, 3, 2, 1, 0)]
    assert np.exp(model.log_probs([0, 1, 2, 3, 4])) == pytest.approx(expected, rel=1e-12)


def test_trigram_predicts_the_structure_the_unigram_cannot():
    train, held_out = _stream(0), _stream(1, 1000)
    unigram, trigram = KneserNey(train, 1, V), KneserNey(train, 3, V)
    determined = np.arange(len(held_out)) % 5 == 2  # fixed by the token two before
    assert np.exp(trigram.log_probs(held_out)[determined]).mean() > 0.8
    assert np.exp(unigram.log_probs(held_out)[determined]).mean() < 0.05
    assert trigram.log_probs(held_out).mean() > unigram.log_probs(held_out).mean()
    sums, counts = trigram.score([held_out[:10], held_out[10:13]])
    assert counts.tolist() == [10, 3]
    assert sums[1] == pytest.approx(trigram.log_probs(held_out[10:13]).sum())


def test_baselines_are_counted_once_per_stream():
    stream = _stream().astype(np.uint16)
    first, again = baseline_models(stream, V), baseline_models(stream.copy(), V)
    assert set(first) == {"unigram", "trigram"}
    assert first["trigram"] is again["trigram"]
    assert baseline_models(stream[:-5], V)["trigram"] is not first["trigram"]
