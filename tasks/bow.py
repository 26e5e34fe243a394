"""Bag-of-words baselines for sentence tasks: what the tokens alone, in any order, predict.

Texts are counted with the run's own tokenizer, so the baseline reads exactly the tokens the
encoder reads; a pair's two texts are counted as separate vocabularies. A model whose probe
or fine-tuning does not beat this learned nothing about sentences that a token count misses.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics.pairwise import paired_cosine_distances
from threadpoolctl import threadpool_limits

from objbench.harness.reading import Text, TrainedModel


def _analyzer(model: TrainedModel):
    def tokens(text: Text) -> list[str]:
        if isinstance(text, str):
            return model.tokenizer.encode(text, add_special_tokens=False).tokens
        return [f"{side}:{t}" for side, part in zip("ab", text)
                for t in model.tokenizer.encode(part, add_special_tokens=False).tokens]
    return tokens


def _counts(model: TrainedModel, texts: dict[str, Sequence[Text]]) -> dict[str, csr_matrix]:
    vectorizer = CountVectorizer(analyzer=_analyzer(model)).fit(texts["train"])
    return {split: vectorizer.transform(t) for split, t in texts.items()}


def bag_of_words_correct(model: TrainedModel, texts: dict[str, Sequence[Text]],
                         labels: dict[str, np.ndarray], cs: Sequence[float], max_iter: int,
                         seed: int) -> np.ndarray:
    """Test correctness of logistic regression on token counts, C picked on validation."""
    x = _counts(model, texts)
    best, best_acc = None, -1.0
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x["train"], labels["train"])
        acc = float((clf.predict(x["validation"]) == labels["validation"]).mean())
        if acc > best_acc:
            best, best_acc = clf, acc
    return best.predict(x["test"]) == labels["test"]


def bag_of_words_scores(model: TrainedModel, texts: dict[str, Sequence[Text]],
                        targets: dict[str, np.ndarray], alphas: Sequence[float]) -> np.ndarray:
    """Test predictions of a regression baseline: for pairs, the cosine similarity of the two
    texts' token counts (no training); for single texts, ridge regression on token counts."""
    if not isinstance(texts["test"][0], str):
        vectorizer = CountVectorizer(analyzer=_analyzer(model))
        vectorizer.fit([side for pair in texts["train"] for side in pair])
        first, second = (vectorizer.transform([pair[k] for pair in texts["test"]]) for k in (0, 1))
        return 1.0 - paired_cosine_distances(first, second)
    x = _counts(model, texts)
    fits = [Ridge(alpha=a).fit(x["train"], targets["train"]) for a in alphas]
    errors = [np.mean((f.predict(x["validation"]) - targets["validation"]) ** 2) for f in fits]
    return fits[int(np.argmin(errors))].predict(x["test"])
