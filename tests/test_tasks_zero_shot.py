"""Zero-shot scoring: `TrainedModel.score` against naive one-at-a-time loops, minimal-pair and cloze rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objbench.harness.errors import ScoringNotApplicable
from objbench.harness.reading import TrainedModel
from objbench.tasks.base import DIAGNOSTIC_METRICS, NOT_APPLICABLE, TaskResult
from objbench.tasks.zero_shot import minimal_pairs, pair_correct, rank_candidates, rank_correct

# different lengths, so the packed batches in `score` carry padding
SENTENCES = ["the company said it expects higher sales", "shares fell", "a new york bank reported"]


def log_probs(model: TrainedModel, ids: list[int], attn: str) -> torch.Tensor:
    """Log-softmax over the vocabulary at every position of one unpadded row (segment 0, as
    `TrainedModel` reads every single sentence)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        hidden = model.model(x, attn, None, torch.zeros_like(x))
        return torch.log_softmax(model.model.logits(hidden).double(), -1)[0]


def test_mlm_pseudo_log_likelihood_is_the_sum_of_one_at_a_time_masked_log_probs(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    cls, mask = model.vocab["[CLS]"], model.vocab["[MASK]"]
    totals, counts = model.score(SENTENCES, max_rows=7)  # small max_rows: sentences split over batches
    for s, total, count in zip(SENTENCES, totals, counts):
        ids = model.ids(s)
        naive = 0.0
        for i, token in enumerate(ids):
            masked = [cls, *ids[:i], mask, *ids[i + 1:]]
            naive += float(log_probs(model, masked, "bidirectional")[i + 1, token])
        assert count == len(ids)
        np.testing.assert_allclose(total, naive, rtol=1e-5, atol=1e-4)


def test_clm_score_is_the_sum_of_next_token_log_probs(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    totals, counts = model.score(SENTENCES)
    for s, total, count in zip(SENTENCES, totals, counts):
        ids = model.ids(s)
        lp = log_probs(model, [model.vocab["[CLS]"], *ids], "causal")
        naive = sum(float(lp[i, token]) for i, token in enumerate(ids))  # position i predicts token i
        assert count == len(ids)
        np.testing.assert_allclose(total, naive, rtol=1e-5, atol=1e-4)


def test_ties_are_errors():
    sums, counts = np.array([-5.0, -4.0, -6.0]), np.array([2, 2, 3])
    ok = pair_correct((sums, counts), (sums.copy(), counts.copy()))
    assert not ok["acc_sum"].any() and not ok["acc_mean"].any()


def test_an_objective_without_a_score_gets_a_diagnostic_row_and_its_baselines(tiny_run):
    model = TrainedModel(tiny_run("electra"))
    with pytest.raises(ScoringNotApplicable, match="electra"):
        model.score(SENTENCES)
    good = ["the market fell", "shares rose today", "the bank said"]
    bad = ["fell market the", "today rose shares", "said bank the"]
    result = TaskResult("pairs")
    minimal_pairs(result, model, good, bad, ["a", "b", "a"], ["p1", "p2", "p3"])
    rank_candidates(result, model, [good, bad], [0, 1], ["a", "b"], ["c1", "c2"])
    not_applicable = [r for r in result.rows if r["metric"] == NOT_APPLICABLE]
    assert [(r["value"], r["n"], r["higher_is_better"]) for r in not_applicable] == [(1.0, 3, False), (1.0, 2, False)]
    assert NOT_APPLICABLE in DIAGNOSTIC_METRICS
    scored = {r["metric"] for r in result.rows} - {NOT_APPLICABLE}
    assert scored and all("@" in m for m in scored)  # the n-gram baselines, scored all the same
    assert all("@" in i["metric"] for i in result.items)


def test_summed_and_length_normalised_scores_can_disagree():
    # good: -6 over 3 tokens (-2 per token); bad: -5 over 2 tokens (-2.5 per token)
    ok = pair_correct((np.array([-6.0]), np.array([3])), (np.array([-5.0]), np.array([2])))
    assert not ok["acc_sum"][0] and ok["acc_mean"][0]


def test_identical_pairs_score_zero_with_rows_per_group_and_items(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    good = ["the market fell", "shares rose today", "the bank said"]
    result = TaskResult("pairs")
    minimal_pairs(result, model, good, list(good), ["a", "b", "a"], ["p1", "p2", "p3"])
    by_key = {(r["metric"], r["group"]): r for r in result.rows}
    metrics = [f"{m}{b}" for m in ("acc_sum", "acc_mean") for b in ("", "@unigram", "@trigram")]
    assert set(by_key) == {(m, g) for m in metrics for g in (None, "a", "b")}
    assert all(r["value"] == 0.0 for r in result.rows)  # a tie is never a win, for baselines too
    assert by_key["acc_sum", None]["n"] == 3 and by_key["acc_sum@trigram", "a"]["n"] == 2
    assert sorted((i["metric"], i["item"]) for i in result.items) == sorted(
        (m, p) for m in metrics for p in ("p1", "p2", "p3"))


def test_cloze_rank_counts_ties_against_the_answer():
    scores = np.array([[-3.0, -1.0, -2.0],   # answer 1 is best: right, rank 1
                       [-1.0, -2.0, -2.0],   # answer 2 is tied with 1 below 0: rank 3
                       [-5.0, -5.0, -9.0]])  # answer 0 tied with 1 for best: wrong, rank 2
    ranked = rank_correct(scores, np.array([1, 2, 0]))
    assert ranked["acc"].tolist() == [True, False, False]
    np.testing.assert_allclose(ranked["mrr"], [1.0, 1 / 3, 1 / 2])


def test_cloze_items_whose_candidates_are_identical_score_zero(tiny_run):
    """The same sentence as every candidate: all tie, so no item is right and each ranks last."""
    model = TrainedModel(tiny_run("clm"))
    candidates = [["the market fell"] * 4, ["shares rose today"] * 4]
    result = TaskResult("cloze")
    rank_candidates(result, model, candidates, [0, 3], ["of", "in"], ["s1", "s2"])
    overall = {r["metric"]: r["value"] for r in result.rows if r["group"] is None}
    assert overall == {f"{m}{b}": v for m, v in (("acc", 0.0), ("mrr", 0.25))
                       for b in ("", "@unigram", "@trigram")}
    assert {(i["metric"], i["item"]) for i in result.items if "@" not in i["metric"]} == {
        (m, s) for m in ("acc", "mrr") for s in ("s1", "s2")}


def test_cloze_ranks_each_item_by_its_own_candidates(tiny_run):
    """Items are scored in one packed batch; each item's rank must come from its own candidates,
    in the order given, as scoring every item alone says."""
    model = TrainedModel(tiny_run("clm"))
    candidates = [["the company said it expects higher sales", "sales higher expects it said company the",
                   "the company said"],
                  ["shares fell", "a new york bank reported", "fell shares"]]
    result = TaskResult("cloze")
    rank_candidates(result, model, candidates, [2, 0], ["x", "y"], ["s1", "s2"])
    for answer, (item, sentences) in zip([2, 0], zip(["s1", "s2"], candidates)):
        alone, _ = model.score(sentences)
        rivals = int((alone >= alone[answer]).sum()) - 1
        got = {i["metric"]: i["value"] for i in result.items if i["item"] == item}
        assert got["acc"] == float(rivals == 0) and got["mrr"] == pytest.approx(1 / (1 + rivals))


def test_ngram_baselines_score_the_tokens_the_model_reads(tiny_run):
    """The baselines are counted on the run's training split and read through its tokenizer:
    the trigram prefers a real word order to its reversal far more often than chance."""
    from objbench.harness.data import prepare_data
    from objbench.tasks.zero_shot import ngram_baselines

    model = TrainedModel(tiny_run("mlm"))
    train = prepare_data(model.cfg.data).train
    models = ngram_baselines(model)
    assert models["unigram"].order == 1 and models["trigram"].order == 3
    counts = np.bincount(np.asarray(train).ravel(), minlength=model.vocab.size)
    frequent = int(counts.argmax())  # the unigram baseline knows frequency and nothing else
    assert models["unigram"].log_probs([frequent])[0] == max(models["unigram"].log_probs([t])[0]
                                                              for t in range(model.vocab.size))
    result = TaskResult("pairs")
    minimal_pairs(result, model, SENTENCES, [" ".join(reversed(s.split())) for s in SENTENCES],
                  ["g"] * len(SENTENCES), [str(i) for i in range(len(SENTENCES))])
    by = {r["metric"]: r["value"] for r in result.rows if r["group"] is None}
    assert by["acc_sum@trigram"] == 1.0


@pytest.mark.parametrize("objective", ["mlm", "clm", "electra"])
def test_reading_adds_nothing_training_did_not_see(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    x = model.inputs(["the market fell"])
    with torch.no_grad():
        as_read = model.model(x.input_ids, x.attn, None, x.segment_ids)
        as_trained = model.model(x.input_ids, x.attn, None, None)
    torch.testing.assert_close(as_read, as_trained)


def infill_log_probs(model: TrainedModel, ids: list[int], span: range) -> list[float]:
    """Log-probabilities of the tokens in ``span`` infilled left to right, built by hand: part
    A is ``[CLS]`` and the text with the span replaced by one ``[MASK]`` (bidirectional), part
    B is ``[S]`` and the span's tokens, each at the position of the token it predicts,
    attending to part A and causally within B."""
    v = model.vocab
    a = [v["[CLS]"], *ids[:span.start], v["[MASK]"], *ids[span.stop:]]
    a_pos = [0, *range(1, span.start + 1), span.start + 1, *range(span.stop + 1, len(ids) + 1)]
    b = [v["[S]"], *ids[span.start:span.stop - 1]]  # the last token is predicted, not shown
    b_pos = list(range(span.start + 1, span.stop + 1))
    n_a, n = len(a), len(a) + len(b)
    attn = torch.zeros(1, n, n, dtype=torch.bool)
    attn[0, :, :n_a] = True  # everyone sees part A ...
    attn[0, :n_a, n_a:] = False  # ... part A sees only itself ...
    attn[0, n_a:, n_a:] = torch.tril(torch.ones(len(b), len(b), dtype=torch.bool))  # ... B is causal
    x = torch.tensor([a + b])
    with torch.no_grad():
        hidden = model.model(x, attn, torch.tensor([a_pos + b_pos]), torch.zeros_like(x))
        lp = torch.log_softmax(model.model.logits(hidden).double(), -1)[0]
    return [float(lp[n_a + k, ids[i]]) for k, i in enumerate(span)]


@pytest.mark.parametrize("options, method", [((), "infill-each"), (("options.r=0.5",), "joint")])
def test_masked_ar_score_is_the_naive_infilling_loop(tiny_run, options, method):
    """`score: auto`: each token infilled alone at r = 0.15; the whole sentence infilled as one
    span, left to right (an exact log-likelihood), at r = 0.5."""
    model = TrainedModel(tiny_run("masked-ar", *options))
    assert model.objective.score_method.startswith("exact" if method == "joint" else "infilling")
    totals, counts = model.score(SENTENCES, max_rows=5)
    for s, total, count in zip(SENTENCES, totals, counts):
        ids = model.ids(s)
        if method == "joint":
            naive = sum(infill_log_probs(model, ids, range(0, len(ids))))
        else:
            naive = sum(infill_log_probs(model, ids, range(i, i + 1))[0] for i in range(len(ids)))
        assert count == len(ids)
        np.testing.assert_allclose(total, naive, rtol=1e-5, atol=1e-4)
