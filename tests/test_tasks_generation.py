"""Generation: the token draw, every declared sampler against what its model predicts, the text
metrics with numbers, and the task's rows (a judge run's perplexity, no sampler: not applicable)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from objbench.harness.reading import TrainedModel
from objbench.objectives.sampling import Sampling, draw
from objbench.tasks.base import SAMPLING_NOT_APPLICABLE
from objbench.tasks.generation import (SAMPLES_FILE, Generation, GenerationOptions, distinct, jackknife,
                                       js_divergence, repetition)
from tests.helpers import tiny_vocab

GREEDY = Sampling(temperature=1.0, top_p=1e-6, steps=4)  # the nucleus holds the likeliest token only
SMALL = {"corpus": "ptb", "n_prompts": 6, "prompt_tokens": 5, "length": 8, "steps": 4}


def test_text_metrics_by_hand():
    assert repetition([1, 2, 1, 2, 1], 2) == 0.5  # (1,2) (2,1) (1,2) (2,1): two of four repeat
    assert repetition([1, 2, 3, 4], 3) == 0.0
    assert distinct(np.array([[1, 2, 1], [1, 3, 1]]), 1) == pytest.approx(3 / 6)
    same = np.array([[1, 2, 3], [3, 2, 1]])
    assert js_divergence(same, same[::-1], 1) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(np.array([[1, 1]]), np.array([[2, 2]]), 1) == pytest.approx(math.log(2))


def test_jackknife_pseudo_values():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    np.testing.assert_allclose(jackknife(lambda k: x[k].mean(), 5), x)  # a mean: the values themselves
    # the plug-in variance (divide by n) is biased; the jackknife's estimate is the unbiased one
    assert jackknife(lambda k: x[k].var(), 5).mean() == pytest.approx(x.var(ddof=1))
    texts = np.array([[1, 2, 3], [1, 2, 4], [5, 6, 7]])
    pseudo = jackknife(lambda k: distinct(texts[k], 1), 3)
    assert pseudo[2] > pseudo[0]  # the prompt sharing no token with the others adds the most diversity


def test_draw_never_picks_a_special_token_and_top_p_keeps_the_nucleus():
    vocab = tiny_vocab()
    logits = torch.zeros(400, vocab.size)
    logits[:, 0] = 50.0  # [PAD] would win if specials were allowed
    logits[:, 20], logits[:, 21] = 5.0, 4.0
    gen = torch.Generator().manual_seed(0)
    tokens, probs = draw(logits, Sampling(top_p=0.5), gen, vocab)
    assert set(tokens.tolist()) == {20} and torch.allclose(probs, torch.ones(400))
    tokens, _ = draw(logits, Sampling(top_p=1.0), gen, vocab)
    assert not vocab.is_special(tokens).any() and {20, 21} <= set(tokens.tolist())


def _prompts(model: TrainedModel) -> torch.Tensor:
    return torch.tensor([model.ids("the company said it expects")[:5], model.ids("shares of the bank fell")[:5]])


def test_greedy_clm_sampling_follows_the_argmax(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    prompts = _prompts(model)
    with torch.no_grad():
        out = model.objective.sample(model.model, prompts, 6, GREEDY, torch.Generator().manual_seed(0))
        for row, cont in zip(prompts, out):
            seq = torch.cat([row, cont])
            x = torch.tensor([[model.vocab["[CLS]"], *seq.tolist()]])
            logits = model.model.logits(model.model(x, "causal"))[0]  # position i predicts token i
            logits[:, model.vocab.special_ids] = -math.inf
            assert logits.argmax(-1)[len(row):len(seq)].tolist() == cont.tolist()


def test_suffix_infilling_samples_what_the_infilling_rows_predict(tiny_run):
    """Greedy: each sampled token is the argmax at its part-B position when the whole continuation
    is in place, so the placeholders a step sees after its token never reach it."""
    model = TrainedModel(tiny_run("masked-ar"))
    prompts, objective = _prompts(model), model.objective
    with torch.no_grad():
        out = objective.sample(model.model, prompts, 6, GREEDY, torch.Generator().manual_seed(0))
        seq = torch.cat([prompts, out], 1)
        span = (torch.arange(seq.shape[1]) >= prompts.shape[1]).expand(len(seq), -1)
        rows = objective._infill(seq, span, None, predict_end=False)
        logits = model.model.logits(model.model(rows.input_ids, rows.attn, rows.position_ids, rows.segment_ids))
        logits[..., model.vocab.special_ids] = -math.inf
        at = rows.target_source >= prompts.shape[1]
        assert logits[at].argmax(-1).view(len(seq), -1).tolist() == out.tolist()


def test_mntp_predicts_each_masked_token_at_the_position_before_it(tiny_run):
    """Greedy, one step: every continuation token is the argmax one position to the left of its [MASK]."""
    model = TrainedModel(tiny_run("mntp"))
    prompts, n = _prompts(model), 6
    with torch.no_grad():
        out = model.objective.sample(model.model, prompts, n, Sampling(top_p=1e-6, steps=1),
                                     torch.Generator().manual_seed(0))
        masks = torch.full((len(prompts), n), model.vocab["[MASK]"])
        x = torch.cat([torch.full((len(prompts), 1), model.vocab["[CLS]"]), prompts, masks], 1)
        logits = model.model.logits(model.model(x, "bidirectional"))
        logits[..., model.vocab.special_ids] = -math.inf
    start = prompts.shape[1]  # the position before the first [MASK] (at start + 1)
    assert logits[:, start:start + n].argmax(-1).tolist() == out.tolist()


@pytest.mark.parametrize("objective", ["clm", "masked-ar", "mlm", "mntp", "mdlm"])
def test_every_sampler_fills_the_continuation_from_its_seed(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    assert model.objective.sampler
    prompts = _prompts(model)
    how = Sampling(temperature=1.0, top_p=0.9, steps=3)
    with torch.no_grad():
        first, again, other = (model.objective.sample(model.model, prompts, 7, how, torch.Generator().manual_seed(s))
                               for s in (0, 0, 1))
    assert first.shape == (2, 7) and not model.vocab.is_special(first).any()  # no [MASK] left behind
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_task_rows_samples_and_judge(tiny_run):
    judge = tiny_run("clm")
    model = TrainedModel(tiny_run("mlm"))
    result = Generation(GenerationOptions(**SMALL, judge=str(judge))).run(model, seed=0)
    rows = {(r["metric"], r["pooling"]): r for r in result.rows}
    reading = f"judge clm {judge}"
    assert {"repetition_2", "repetition_3", "distinct_1", "distinct_2", "js_unigram", "js_bigram",
            "repetition_2@true-continuation", "judge_perplexity@true-continuation"} <= {m for m, _ in rows}
    assert rows["judge_perplexity", reading]["value"] > 1 and rows["judge_perplexity", reading]["n"] == 6
    for metric in ("distinct_2", "js_unigram", "js_bigram"):  # pooled metrics pair by prompt too
        values = [i["value"] for i in result.items if i["metric"] == metric]
        assert len(values) == 6 and np.mean(values) == pytest.approx(rows[metric, None]["value"])
    samples = [json.loads(line) for line in (model.run_dir / SAMPLES_FILE).read_text().splitlines()]
    assert len(samples) == 6 and all(s["prompt"] and s["sample"] and s["truth"] for s in samples)
    # one item's perplexity by hand: the judge's next-token log-probabilities of the continuation
    j = TrainedModel(judge)
    head, tail = j.tokens(samples[0]["prompt"]), j.tokens(samples[0]["sample"])
    ids = head + tail
    x = torch.tensor([[j.vocab["[CLS]"], *ids]])
    with torch.no_grad():
        logp = torch.log_softmax(j.model.logits(j.model(x, "causal"))[0].double(), -1)
    expected = math.exp(-np.mean([float(logp[i, ids[i]]) for i in range(len(head), len(ids))]))
    item = next(i for i in result.items if i["metric"] == "judge_perplexity" and i["item"] == samples[0]["item"])
    assert item["value"] == pytest.approx(expected, rel=1e-4)
    again = Generation(GenerationOptions(**SMALL)).run(model, seed=0)
    assert [r["value"] for r in again.rows if r["metric"] == "repetition_2"] == \
        [rows["repetition_2", None]["value"]]  # the same seed, the same samples


def test_an_objective_without_a_sampler_is_not_applicable(tiny_run):
    result = Generation(GenerationOptions(**SMALL)).run(TrainedModel(tiny_run("electra")), seed=0)
    assert [(r["metric"], r["value"]) for r in result.rows] == [(SAMPLING_NOT_APPLICABLE, 1.0)]
