"""Zero-shot readings by sentence score: minimal pairs and cloze ranking.

Scores come from `TrainedModel.score` (fp32, by the objective's own rule: exact or pseudo
log-likelihood, or an estimated bound). An objective without a sentence score (``score_kind``
``"none"``, e.g. ELECTRA) gets no score rows and one diagnostic row, ``scoring_not_applicable``
(value 1), instead of an error; the n-gram baselines are scored all the same. A pair is right only if the good sentence scores strictly higher: a tie is an
error, so a model that cannot tell the two apart scores 0, not 50%. Both the summed score
(``acc_sum``) and the score per token (``acc_mean``) are kept, since the two sentences of a
pair may tokenize to different lengths. A cloze item is right only if the original sentence
scores strictly above every other candidate filling of its slot (``acc``); ``mrr`` is the
reciprocal of its rank, a tie ranking it below the candidates it ties with. An objective that
offers other sentence scores (``score_variants``, e.g. ``pll-word-l2r`` beside a plain
pseudo-log-likelihood) is also scored by each when the task's ``score_variants`` option is on:
those rows and items carry the variant's name in ``pooling``, the reading column.

Every score is also taken from the n-gram baselines of the run's own pre-training tokens
(`objbench.tasks.ngram`), read through the same tokenizer and ruled the same way, so a
report can tell a model that uses context from one that only knows word frequency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from objbench.harness.data import prepare_data
from objbench.harness.errors import DataError
from objbench.harness.integrity import file_digest
from objbench.harness.reading import TrainedModel
from objbench.tasks.base import NOT_APPLICABLE, TaskResult
from objbench.tasks.ngram import KneserNey, baseline_models


def pair_correct(good: tuple[np.ndarray, np.ndarray], bad: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-pair correctness from (log-prob sums, token counts) of the good and bad sentences."""
    (g_sum, g_n), (b_sum, b_n) = good, bad
    return {"acc_sum": g_sum > b_sum, "acc_mean": g_sum / g_n > b_sum / b_n}


def rank_correct(scores: np.ndarray, answers: np.ndarray) -> dict[str, np.ndarray]:
    """Per item, from (items, candidates) scores and each item's answer column: top-1
    correctness and reciprocal rank, ties counted against the answer."""
    right = scores[np.arange(len(answers)), answers]
    rivals = (scores >= right[:, None]).sum(1) - 1  # other candidates scoring at least as well
    return {"acc": rivals == 0, "mrr": 1.0 / (1 + rivals)}


def ngram_baselines(model: TrainedModel) -> dict[str, KneserNey]:
    """The unigram and trigram models of the training split the run was trained on, in the
    run's own tokenization (a rebuilt tokenizer would count other tokens: refused)."""
    data = prepare_data(model.cfg.data)
    if data.tokenizer_hash != file_digest(model.run_dir / "tokenizer.json")[:16]:
        raise DataError(f"{model.run_dir}: the cached tokenizer of data {model.cfg.data.corpus!r} is not the "
                        f"one this run trained with, so n-gram baselines would count other tokens; "
                        f"retrain the run (its tokenizer.json is kept) or restore the cache")
    return baseline_models(np.asarray(data.train).ravel(), model.vocab.size)


ScorerKey = tuple[str | None, str | None]  # (baseline, score variant): (None, None) is the model's own score


def scorers(model: TrainedModel, desc: str, variants: bool = False,
            ) -> dict[ScorerKey, Callable[[list[str]], tuple[np.ndarray, np.ndarray]]]:
    """The model's own sentence score (absent when the objective has none), with ``variants``
    also each score variant its objective offers (`Objective.score_variants`), and each n-gram
    baseline's, on the same tokens."""
    def ngram(lm: KneserNey) -> Callable:
        return lambda sentences: lm.score([model.ids(s) for s in sentences])

    def own(variant: str | None) -> Callable:
        return lambda sentences: model.score(sentences, desc=desc, variant=variant)
    readings = [None, *(model.objective.score_variants if variants else ())]
    models = {} if model.objective.score_kind == "none" else {(None, v): own(v) for v in readings}
    return {**models, **{(name, None): ngram(lm) for name, lm in ngram_baselines(model).items()}}


def _mark_not_applicable(result: TaskResult, model: TrainedModel, n_items: int) -> None:
    if model.objective.score_kind == "none":
        result.add(NOT_APPLICABLE, 1, n_items, higher_is_better=False)


def minimal_pairs(result: TaskResult, model: TrainedModel, good: Sequence[str], bad: Sequence[str],
                  groups: Sequence[str], item_ids: Sequence[str], variants: bool = False) -> None:
    """Score every pair once per scorer (`scorers`); add accuracy rows overall and per group,
    and each pair's correctness."""
    n = len(good)
    _mark_not_applicable(result, model, n)
    for key, score in scorers(model, f"{result.task} pairs", variants).items():
        sums, counts = score([*good, *bad])
        per_pair = pair_correct((sums[:n], counts[:n]), (sums[n:], counts[n:]))
        _add(result, per_pair, groups, item_ids, key)


def rank_candidates(result: TaskResult, model: TrainedModel, candidates: Sequence[Sequence[str]],
                    answers: Sequence[int], groups: Sequence[str], item_ids: Sequence[str],
                    variants: bool = False) -> None:
    """Score every item's candidate sentences once per scorer (summed score: the candidates are
    single words); add accuracy and mean reciprocal rank overall and per group, and each item's."""
    flat = [s for item in candidates for s in item]
    _mark_not_applicable(result, model, len(candidates))
    for key, score in scorers(model, f"{result.task} candidates", variants).items():
        sums, _ = score(flat)
        per_item = rank_correct(sums.reshape(len(candidates), -1), np.asarray(answers))
        _add(result, per_item, groups, item_ids, key)


def _add(result: TaskResult, per_item: dict[str, np.ndarray], groups: Sequence[str],
         item_ids: Sequence[str], key: ScorerKey) -> None:
    """Rows and items of one scorer; a score variant's carry its name as their reading (``pooling``)."""
    baseline, variant = key
    groups = np.asarray(groups)
    for metric, values in per_item.items():
        result.add(metric, values.mean(), len(values), pooling=variant, baseline=baseline)
        for g in sorted(set(groups.tolist())):
            sel = groups == g
            result.add(metric, values[sel].mean(), int(sel.sum()), pooling=variant, group=g, baseline=baseline)
        result.add_items(metric, None, item_ids, values, pooling=variant, baseline=baseline)
