"""Context usage: cropping and shuffling, per-token scores that add up to the sentence score,
and the sanity the task must show: a causal model ignores the right side, a bidirectional one does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from objbench.harness.reading import TrainedModel
from objbench.tasks.base import NOT_APPLICABLE
from objbench.tasks.admission import Admission
from objbench.tasks.context import (ContextOptions, Context, crop, effective_context, per_token_score,
                                    sample_targets, shuffle_far)

SENTENCES = ["the company said it expects higher sales", "shares fell", "a new york bank reported"]
SMALL = {"corpus": "ptb", "n_targets": 24, "k": [0, 1, 4, "all"], "shuffle_beyond": [2]}


def test_crop_keeps_k_tokens_on_each_side_and_finds_the_target():
    ids = list(range(10, 20))
    assert crop(ids, 4, 2, 1) == ([12, 13, 14, 15], 2)
    assert crop(ids, 4, 0, 0) == ([14], 0)
    assert crop(ids, 1, 8, "all") == (ids, 1)
    assert crop(ids, 8, "all", 5) == (ids, 8)


def test_shuffle_far_moves_only_the_tokens_beyond_d_and_keeps_each_side():
    ids = list(range(20))
    out = shuffle_far(ids, 10, 3, np.random.default_rng(0))
    assert out[7:14] == ids[7:14]
    assert sorted(out[:7]) == ids[:7] and sorted(out[14:]) == ids[14:]
    assert out != ids


def test_effective_context_is_the_smallest_k_reaching_the_share_of_the_gain():
    k = [0, 1, 2, 4, "all"]
    curve = np.array([5.0, 4.0, 3.1, 3.05, 3.0])  # gain 2: 90% (1.8) reached at 3.1
    assert effective_context(curve, k, 0.9, 159) == 2
    assert effective_context(curve, k, 1.0, 159) == 159  # only the whole sentence: the length limit
    assert effective_context(np.full(5, 5.0), k, 0.9, 159) == 0  # the side gives nothing


def test_k_must_run_from_none_to_all():
    with pytest.raises(ValidationError, match="must hold 0 and 'all'"):
        ContextOptions(k=[1, 2, "all"])
    assert ContextOptions(k=["all", 4, 0]).k == [0, 4, "all"]


@pytest.mark.parametrize("objective", ["mlm", "clm", "masked-ar", "mdlm"])
def test_token_scores_add_up_to_the_sentence_score(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    totals, _ = model.score(SENTENCES)
    for s, total in zip(SENTENCES, totals):
        ids = model.ids(s)
        per_token = model.target_scores([ids] * len(ids), range(len(ids)), max_rows=5)
        np.testing.assert_allclose(per_token.sum(), total, rtol=1e-5, atol=1e-4)


def _items(result, metric: str) -> np.ndarray:
    return np.array([i["value"] for i in result.items if i["metric"] == metric])


def test_a_causal_models_loss_ignores_the_right_context(tiny_run):
    result = Context(ContextOptions(**SMALL)).run(TrainedModel(tiny_run("clm")), seed=0)
    for left in SMALL["k"]:
        base = _items(result, f"loss_l{left}_r0")
        for right in SMALL["k"][1:]:
            np.testing.assert_allclose(_items(result, f"loss_l{left}_r{right}"), base, atol=1e-5)
    np.testing.assert_allclose(_items(result, "context_gain_right"), 0, atol=1e-5)
    rows = {r["metric"]: r for r in result.rows}
    assert rows["effective_context_right"]["value"] == 0
    assert rows["loss_l0_r0"]["n"] == SMALL["n_targets"]
    assert abs(rows["usable_information"]["value"]) > 1e-4  # the left side does matter
    np.testing.assert_allclose(_items(result, "usable_information"),
                               _items(result, "loss_l0_r0") - _items(result, "loss_lall_rall"))


def test_a_bidirectional_models_loss_depends_on_the_right_context(tiny_run):
    result = Context(ContextOptions(**SMALL)).run(TrainedModel(tiny_run("mlm")), seed=0)
    right_gain = _items(result, "context_gain_right")
    assert np.abs(right_gain).max() > 1e-3
    np.testing.assert_allclose(right_gain, _items(result, "loss_lall_r0") - _items(result, "loss_lall_rall"))
    np.testing.assert_allclose(_items(result, "right_minus_left_gain"),
                               right_gain - _items(result, "context_gain_left"))
    items = [i["item"] for i in result.items if i["metric"] == "loss_l0_r0"]
    assert len(set(items)) == SMALL["n_targets"]  # one target per sentence


def test_an_objective_without_a_score_is_not_applicable(tiny_run):
    result = Context(ContextOptions(**SMALL)).run(TrainedModel(tiny_run("electra")), seed=0)
    assert [r["value"] for r in result.rows if r["metric"] == NOT_APPLICABLE] == [1.0]
    assert not result.items


def test_a_bound_is_read_by_its_per_token_variant(tiny_run):
    """mdlm's bound gives a token a share of an estimate, not a loss: its pll variant is read."""
    model = TrainedModel(tiny_run("mdlm"))
    assert model.objective.score_kind == "bound" and per_token_score(model.objective) == "pll"
    result = Context(ContextOptions(**SMALL)).run(model, seed=0)
    assert not [r for r in result.rows if r["metric"] == NOT_APPLICABLE]
    targets = sample_targets(model, Admission(model, "context", ContextOptions(**SMALL)), ContextOptions(**SMALL))
    expected = -model.target_scores(targets.ids, targets.position, variant="pll")
    np.testing.assert_allclose(_items(result, "loss_lall_rall"), expected, rtol=1e-5)
    assert _items(result, "usable_information").mean() != 0.0


def test_the_report_draws_each_arms_grid_in_k_order():
    from objbench.reports.figures import _context

    k = ["0", "2", "16", "all"]
    rows = [{"arm": arm, "task": "context", "metric": f"loss_l{left}_r{right}", "split": "test", "group": "",
             "mean": 10 * a + i + j / 10, "ci_low": 0.0, "ci_high": 1.0}
            for a, arm in enumerate(["mlm", "clm"]) for i, left in enumerate(k) for j, right in enumerate(k)]
    rows.append({**rows[0], "metric": "usable_information"})
    drawn = _context(pd.DataFrame(rows), {"mlm": "C0", "clm": "C1", "absent": "C2"})
    heatmaps = [ax for ax in drawn.figure.axes if ax.collections and ax.get_xlabel().startswith("tokens kept right")]
    assert len(heatmaps) == 2
    for a, ax in enumerate(heatmaps):  # rows: tokens kept left, in numeric order, 'all' last
        assert [t.get_text() for t in ax.get_yticklabels()] == k
        expected = 10 * a + np.arange(4)[:, None] + np.arange(4)[None, :] / 10
        np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(4, 4), expected)
    assert {s["arm"] for s in drawn.series} == {"mlm", "clm"}
    assert _context(pd.DataFrame(rows[-1:]), {"mlm": "C0"}) == "no context task results"
