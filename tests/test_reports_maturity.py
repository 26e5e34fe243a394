"""The verdict's pieces on planted numbers: checks against zero and baselines, the budget the
curves suggest, and results still rising."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from objbench.reports.load import NO_LAYER
from objbench.reports.maturity import assess, probe_points, still_rising, suggested_budget

PRIMARY = pd.DataFrame([{"task": "agreement", "metric": "acc", "split": "test", "layer": NO_LAYER,
                         "pooling": "", "group": ""}])


def _rows(arm: str, metric: str, values_by_budget: dict[float, list[float]], task: str = "pos") -> list[dict]:
    return [{"arm": arm, "seed": seed, "task": task, "metric": metric, "split": "test", "layer": NO_LAYER,
             "pooling": "", "group": "", "budget_value": budget, "value": value}
            for budget, values in values_by_budget.items() for seed, value in enumerate(values)]


def _items(arm: str, metric: str, values: np.ndarray, task: str, pooling: str = "") -> list[dict]:
    """Per-item values, one row of ``values`` per seed, at budget 1."""
    return [{"arm": arm, "seed": seed, "budget_value": 1.0, "task": task, "metric": metric,
             "layer": NO_LAYER, "pooling": pooling, "item": f"i{i}", "value": float(v)}
            for seed, row in enumerate(values) for i, v in enumerate(row)]


def _planted(arm: str, rng: np.random.Generator, unigram: np.ndarray, good: bool) -> list[dict]:
    """Per-item agreement (with its unigram baseline) and ambiguous-word gains for 3 seeds: a
    good arm adds right answers and positive gains, a weak one equals the unigram and loses."""
    n = len(unigram)
    acc = np.clip(unigram + (rng.uniform(size=(3, n)) < 0.2), 0, 1) if good else np.tile(unigram, (3, 1))
    gain = (1.0 if good else -1.0) * (rng.uniform(size=(3, n)) < 0.1)
    return (_items(arm, "acc", acc, "agreement") + _items(arm, "acc@unigram", np.tile(unigram, (3, 1)), "agreement")
            + _items(arm, "contextual_gain_ambiguous", gain, "pos", "w"))


def test_the_budget_where_a_log_linear_fit_of_the_gain_reaches_zero():
    results = pd.DataFrame(_rows("a", "contextual_gain_ambiguous", {1e5: [-0.10, -0.10], 1e6: [-0.05, -0.05]}))
    text = suggested_budget(results, "tokens", 1e6, ["a"])
    assert "about 1e+07 tokens (10.0x this budget)" in text
    flat = pd.DataFrame(_rows("a", "contextual_gain_ambiguous", {1e5: [-0.05] * 2, 1e6: [-0.06] * 2}))
    assert "does not grow" in suggested_budget(flat, "tokens", 1e6, ["a"])
    one_point = pd.DataFrame(_rows("a", "contextual_gain_ambiguous", {1e6: [-0.05] * 2}))
    assert "several budget points" in suggested_budget(one_point, "tokens", 1e6, ["a"])


def test_a_result_still_rising_is_named_and_a_flat_one_is_not():
    rng = np.random.default_rng(0)
    rows = (_rows("up", "acc", {1.0: list(0.6 + rng.normal(0, 0.002, 4)),
                                2.0: list(0.7 + rng.normal(0, 0.002, 4))}, task="agreement")
            + _rows("flat", "acc", {1.0: list(0.6 + rng.normal(0, 0.02, 4)),
                                    2.0: list(0.6 + rng.normal(0, 0.02, 4))}, task="agreement"))
    rising = still_rising(pd.DataFrame(rows), PRIMARY)
    assert list(rising["arm"]) == ["up"] and rising.iloc[0]["diff"] == pytest.approx(0.1, abs=0.01)


def test_a_mature_verdict_probed_at_one_point_says_it_cannot_tell_whether_results_still_rise():
    rng = np.random.default_rng(2)
    items = _planted("good", rng, (rng.uniform(size=400) < 0.6).astype(float), good=True)
    one_point = pd.DataFrame(_rows("good", "acc", {1.0: [0.8, 0.81, 0.79]}, task="agreement"))
    two_points = pd.DataFrame(_rows("good", "acc", {0.5: [0.7, 0.8, 0.6], 1.0: [0.8, 0.81, 0.79]},
                                    task="agreement"))
    assert probe_points(one_point, PRIMARY) == 1 and probe_points(two_points, PRIMARY) == 2
    assert probe_points(one_point.assign(metric="other"), PRIMARY) == 0
    told = assess(pd.DataFrame(items), one_point, PRIMARY, ["good"], "tokens", 1e6)
    assert told.mature is True and "probed at one budget point" in told.summary
    assessed = assess(pd.DataFrame(items), two_points, PRIMARY, ["good"], "tokens", 1e6)
    assert assessed.mature is True and "one budget point" not in assessed.summary


def test_checks_pair_items_with_zero_and_with_the_baseline_and_decide_the_verdict():
    rng = np.random.default_rng(1)
    unigram = (rng.uniform(size=400) < 0.6).astype(float)
    items = _planted("good", rng, unigram, good=True) + _planted("weak", rng, unigram, good=False)
    verdict = assess(pd.DataFrame(items), pd.DataFrame(columns=["arm", "seed", "budget_value", "task", "metric",
                                                                  "split", "layer", "pooling", "group", "value"]),
                     PRIMARY, ["good", "weak"], "tokens", 1e6)
    checks = verdict.checks.set_index(["arm", "check"])["status"]
    assert checks["good", "pos: contextual layers above embeddings (ambiguous words)"] == "pass"
    assert checks["weak", "pos: contextual layers above embeddings (ambiguous words)"] == "fail"
    assert checks["good", "agreement acc above unigram"] == "pass"
    assert checks["weak", "agreement acc above unigram"] == "unclear"  # identical: no difference shown
    assert verdict.mature is False and "(weak)" in verdict.summary and "(good" not in verdict.summary


def test_a_check_an_arm_cannot_take_reads_not_applicable():
    from objbench.reports.document import check_grid

    checks = pd.DataFrame([
        {"arm": "mlm", "check": "pos: contextual", "required": True, "status": "pass",
         "diff": 0.05, "ci_low": 0.01, "ci_high": 0.09, "n_items": 10},
        {"arm": "electra", "check": "pos: contextual", "required": True, "status": "fail",
         "diff": -0.05, "ci_low": -0.09, "ci_high": -0.01, "n_items": 10},
        {"arm": "mlm", "check": "agreement acc_sum above unigram", "required": True,
         "status": "unclear", "diff": 0.01, "ci_low": -0.02, "ci_high": 0.04, "n_items": 10}])
    grid = check_grid(checks, ["mlm", "electra"])
    assert list(grid.index) == ["mlm", "electra"]
    assert grid.loc["electra", "agreement acc_sum above unigram"] == "not applicable"
    assert grid.loc["electra", "pos: contextual"] == "NO: -0.05 [-0.09, -0.01]"
    assert grid.loc["mlm", "agreement acc_sum above unigram"].startswith("not shown: ")
