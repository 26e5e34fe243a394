"""Score variants: `pll-word-l2r` (Kauf & Ivanova 2023) against a naive loop, where it must differ
from the plain pseudo-log-likelihood and where it must not, and zero-shot rows for both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objbench.harness.errors import ScoringNotApplicable
from objbench.harness.reading import TrainedModel
from objbench.tasks.base import TaskResult
from objbench.tasks.zero_shot import minimal_pairs

LONG_WORD = "unbelievably"  # several sub-tokens in any small vocabulary


def naive_pll(model: TrainedModel, ids: list[int], word_l2r: bool = False) -> float:
    """Each token masked (with ``word_l2r``, together with the later sub-tokens of its word),
    one row at a time."""
    starts = model.vocab.word_start[torch.tensor(ids)].tolist()
    word = np.cumsum(starts)
    cls, mask = model.vocab["[CLS]"], model.vocab["[MASK]"]
    total = 0.0
    for i, token in enumerate(ids):
        row = [mask if j == i or (word_l2r and j > i and word[j] == word[i]) else t for j, t in enumerate(ids)]
        x = torch.tensor([[cls, *row]])
        with torch.no_grad():
            hidden = model.model(x, "bidirectional", None, torch.zeros_like(x))
            total += float(torch.log_softmax(model.model.logits(hidden).double(), -1)[0, i + 1, token])
    return total


def test_word_l2r_masks_the_rest_of_the_word_and_differs_only_on_multi_token_words(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    assert model.objective.score_variants == ("pll-word-l2r",)
    split = f"the {LONG_WORD} bank said"
    assert len(model.tokens(LONG_WORD)) >= 3  # the sentence holds a multi-token word
    single = [w for w in "the company said it expects higher sales".split() if len(model.tokens(w)) == 1]
    plain = " ".join(single)
    assert len(single) >= 4
    pll, _ = model.score([split, plain])
    l2r, _ = model.score([split, plain], variant="pll-word-l2r")
    np.testing.assert_allclose(l2r[0], naive_pll(model, model.ids(split), word_l2r=True), rtol=1e-5, atol=1e-4)
    assert abs(l2r[0] - pll[0]) > 1e-3  # the multi-token word is scored otherwise
    np.testing.assert_allclose(l2r[1], pll[1], rtol=1e-6)  # one token per word: the same score


@pytest.mark.parametrize("objective", ["mntp", "masked-ar"])
def test_every_pseudo_log_likelihood_has_the_word_variant(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    assert model.objective.score_kind == "pseudo" and "pll-word-l2r" in model.objective.score_variants
    single = " ".join(w for w in "the company said it expects higher sales".split() if len(model.tokens(w)) == 1)
    sentences = [f"the {LONG_WORD} bank said", single]
    pll, _ = model.score(sentences)
    l2r, _ = model.score(sentences, variant="pll-word-l2r")
    assert abs(l2r[0] - pll[0]) > 1e-3
    np.testing.assert_allclose(l2r[1], pll[1], rtol=1e-6)
    word = model.objective.scoring("pll-word-l2r")
    assert "word" in word.score_method and "word" not in model.objective.score_method  # stated
    assert len(word.score_variants) == 1  # and the way back to the plain score


def test_masked_diffusion_also_scores_by_pseudo_log_likelihood(tiny_run):
    """mdlm's denoiser with a single [MASK] is a masked LM's conditional: the same rows as mlm's PLL."""
    model = TrainedModel(tiny_run("mdlm"))
    assert (model.objective.score_kind, model.objective.score_variants) == ("bound", ("pll",))
    pll = model.objective.scoring("pll")
    assert pll.score_kind == "pseudo" and "pseudo-log-likelihood" in pll.score_method
    assert pll.score_variants == ("elbo",)
    sentence = f"the {LONG_WORD} company said it expects higher sales"
    score, _ = model.score([sentence], variant="pll")
    np.testing.assert_allclose(score[0], naive_pll(model, model.ids(sentence)), rtol=1e-5, atol=1e-4)
    assert abs(model.score([sentence])[0][0] - score[0]) > 1e-3  # the bound is another number


def test_an_objective_without_the_variant_refuses_it(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    assert model.objective.score_variants == ()
    with pytest.raises(ScoringNotApplicable, match="no score variant 'pll-word-l2r'"):
        model.score(["the market fell"], variant="pll-word-l2r")


def test_zero_shot_rows_report_both_scores_with_the_variant_as_the_reading(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    good = ["the market fell", f"the {LONG_WORD} shares rose", "the bank said"]
    bad = ["fell market the", f"rose shares {LONG_WORD} the", "said bank the"]
    result = TaskResult("pairs")
    minimal_pairs(result, model, good, bad, ["a", "b", "a"], ["p1", "p2", "p3"], variants=True)
    readings = {(r["metric"], r["pooling"]) for r in result.rows if r["group"] is None and "@" not in r["metric"]}
    assert readings == {(m, p) for m in ("acc_sum", "acc_mean") for p in (None, "pll-word-l2r")}
    l2r, _ = model.score([*good, *bad], variant="pll-word-l2r")
    expected = (l2r[:3] > l2r[3:]).astype(float)
    got = [i["value"] for i in result.items if i["metric"] == "acc_sum" and i["pooling"] == "pll-word-l2r"]
    assert got == expected.tolist()


def test_the_phenomena_figure_keeps_a_variant_apart_from_the_arms_own_score():
    import pandas as pd

    from objbench.reports.figures import _phenomena

    rows = [{"arm": "mlm", "task": "agreement", "metric": "acc_sum", "split": "test", "group": g,
             "pooling": pooling, "mean": value}
            for g in ("have", "do") for pooling, value in (("", 0.25), ("pll-word-l2r", 0.75))]
    drawn = _phenomena(pd.DataFrame(rows))
    ax = drawn.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mlm", "mlm (pll-word-l2r)"]
    assert np.asarray(ax.collections[0].get_array()).ravel().tolist() == [0.25, 0.25, 0.75, 0.75]  # never averaged
