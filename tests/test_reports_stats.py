"""Numbers the report relies on: interval coverage, paired tests, Holm, the noise floor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.special import expit

from objbench.reports.aggregate import noise_floor, summarize
from objbench.reports.compare import compare_to_reference
from objbench.reports.load import NO_LAYER
from objbench.reports.stats import (
    bootstrap_interval, crossed_paired_test, holm, paired_t_test, pooled_sd, t_interval,
)


def _coverage(interval, n_seeds: int, experiments: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(experiments):
        low, high = interval(rng.normal(1.0, 2.0, n_seeds), rng)
        hits += low <= 1.0 <= high
    return hits / experiments


def test_t_interval_covers_at_the_nominal_rate_with_few_seeds():
    # 1000 experiments: binomial standard error 0.007, the band is about +-3 of them
    for n_seeds in (3, 5):
        coverage = _coverage(lambda x, rng: t_interval(x), n_seeds, 1000, seed=n_seeds)
        assert 0.93 <= coverage <= 0.97, (n_seeds, coverage)


def test_percentile_bootstrap_undercovers_with_five_seeds_as_documented():
    # Theory: about P(|t_4| < 1.96 * sqrt(4/5)) = 0.85, minus bootstrap discreteness; with 20
    # seeds it approaches 95%. 300 experiments: standard error 0.02, bands are about +-3 of them.
    small = _coverage(lambda x, rng: bootstrap_interval(x, rng, 4000), 5, 300, seed=1)
    large = _coverage(lambda x, rng: bootstrap_interval(x, rng, 4000), 20, 300, seed=2)
    assert 0.76 <= small <= 0.90, small
    assert 0.88 <= large <= 0.98, large


def test_one_seed_has_no_interval():
    rng = np.random.default_rng(0)
    assert np.isnan(t_interval(np.array([0.5]))).all()
    assert np.isnan(bootstrap_interval(np.array([0.5]), rng)).all()
    test = paired_t_test(np.array([0.1]))
    assert test.diff == 0.1 and np.isnan([test.low, test.high, test.p]).all()


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_paired_t_test_matches_scipy_and_refuses_ties():
    arm, ref = np.array([0.71, 0.74, 0.73, 0.75]), np.array([0.70, 0.71, 0.72, 0.70])
    test = paired_t_test(arm - ref)
    assert test.p == pytest.approx(sps.ttest_rel(arm, ref).pvalue)
    assert test.low < test.diff < test.high and test.dof == 3
    # accuracies over the same items tie exactly; a rounding-level spread must not look like proof
    tied = paired_t_test(np.array([0.7066666666666667, 0.71]) - np.array([0.7, 0.7033333333333334]))
    assert np.isnan(tied.p)
    assert paired_t_test(np.zeros(3)).p == 1.0


def test_crossed_test_with_one_seed_is_a_paired_t_test_over_items():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.1, 1.0, size=(1, 200))
    assert crossed_paired_test(diffs).p == pytest.approx(sps.ttest_1samp(diffs[0], 0).pvalue)


def _runs(rng: np.random.Generator, shift: float, seed_sd: float, easiness: np.ndarray,
          seeds: int = 3) -> np.ndarray:
    """Binary correctness, seeds x items: item easiness shared, a random offset per run."""
    logits = easiness[None, :] + shift + rng.normal(0, seed_sd, size=(seeds, 1))
    return (rng.random((seeds, easiness.size)) < expit(logits)).astype(float)


def test_crossed_test_keeps_false_positives_near_alpha_despite_seed_noise():
    # Pooling seeds x items as independent pairs (McNemar) rejects ~35% of these null
    # comparisons at alpha 0.05; a test that ignores run-to-run variation fails here.
    rng = np.random.default_rng(11)
    rejections = 0
    for _ in range(400):
        easiness = rng.normal(0, 1.5, 500)
        arm, ref = _runs(rng, 0, 0.2, easiness), _runs(rng, 0, 0.2, easiness)
        rejections += crossed_paired_test(arm - ref).p < 0.05
    assert rejections / 400 <= 0.09


def _study_rows(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference, an arm 5 points better, and an arm from the reference's own generator."""
    # evenly spread difficulties, so exactly 5% of the items lie in the planted gain
    n_items, difficulty = 500, rng.permutation(np.linspace(0, 1, 500))
    results, items = [], []
    for arm, gain in (("ref", 0.0), ("better", 0.05), ("same", 0.0)):
        for seed in range(3):
            accuracy = 0.7 + gain + rng.normal(0, 0.005)
            correct = (difficulty + rng.normal(0, 0.03, n_items) < accuracy).astype(float)
            results.append({"arm": arm, "seed": seed, "task": "agreement", "metric": "acc",
                            "split": "test", "layer": NO_LAYER, "pooling": "", "group": "",
                            "value": correct.mean(), "higher_is_better": True,
                            "budget_value": 100.0, "n": n_items})
            items += [{"arm": arm, "seed": seed, "budget_value": 100.0, "task": "agreement",
                       "metric": "acc", "layer": NO_LAYER, "pooling": "", "item": f"i{i}", "value": v}
                      for i, v in enumerate(correct)]
    return pd.DataFrame(results), pd.DataFrame(items)


PRIMARY = pd.DataFrame([{"task": "agreement", "metric": "acc", "split": "test", "layer": NO_LAYER,
                         "pooling": "", "group": ""}])


def test_planted_difference_is_significant_and_identical_arms_are_not():
    results, items = _study_rows(np.random.default_rng(5))
    table, notes = compare_to_reference(results, items, "ref", PRIMARY)
    assert notes == []
    table = table.set_index("arm")
    assert (table["paired_over"] == "seeds x items").all()
    assert (table["n_items"] == 500).all() and (table["n_seeds"] == 3).all()
    assert table.loc["better", "diff"] == pytest.approx(0.05, abs=0.01)
    assert table.loc["better", "ci_low"] > 0.02
    assert table.loc["better", "significant"] and table.loc["better", "winner"] == "better"
    assert abs(table.loc["same", "diff"]) < 0.01 and table.loc["same", "ci_low"] < 0
    assert not table.loc["same", "significant"] and table.loc["same", "winner"] == ""
    np.testing.assert_allclose(table["p_holm"], holm(table["p"].to_numpy()))


def test_items_not_scored_by_every_run_are_left_out_and_summed_up_in_one_note_per_arm_and_task():
    results, items = _study_rows(np.random.default_rng(5))
    second = results.assign(metric="acc2")  # another result of the same task and items
    items = pd.concat([items, items.assign(metric="acc2")])
    # one run of "better" scored another item in place of i0 (as a sentence cut to another length)
    moved = (items["arm"] == "better") & (items["seed"] == 1) & (items["item"] == "i0")
    items.loc[moved, "item"] = "i0-other"
    table, notes = compare_to_reference(pd.concat([results, second]), items, "ref", PRIMARY)
    assert notes == ["better vs ref, agreement: 2 results compared on the 499 of 501 items that every"
                     " run of both arms scored"]
    assert list(table.set_index(["arm", "metric"]).loc["better", "n_items"]) == [499, 499]
    assert (table.set_index("arm").loc["same", "n_items"] == 500).all()


def test_lower_is_better_names_the_arm_with_the_smaller_value():
    rows = pd.DataFrame({
        "arm": ["ref"] * 4 + ["new"] * 4, "seed": list(range(4)) * 2, "task": "cloze",
        "metric": "rank", "split": "test", "layer": NO_LAYER, "pooling": "", "group": "",
        "value": [3.0, 3.1, 3.05, 2.95, 2.5, 2.62, 2.54, 2.44], "higher_is_better": False,
        "budget_value": 1.0, "n": 1,
    })
    table, _ = compare_to_reference(rows, pd.DataFrame(), "ref", PRIMARY.assign(task="cloze", metric="rank"))
    row = table.iloc[0]
    assert row["paired_over"] == "seeds" and row["diff"] == pytest.approx(-0.5)
    assert row["significant"] and row["winner"] == "new"


def test_validation_losses_baselines_and_diagnostics_are_never_compared():
    """Each arm's loss has its own targets (even two mlm arms: their masking differs), and a
    baseline or a diagnostic is the same reading of the same data in every arm."""
    base = {"seed": list(range(3)) * 2, "arm": ["ref"] * 3 + ["other"] * 3, "split": "test",
            "layer": NO_LAYER, "pooling": "", "group": "", "higher_is_better": True, "budget_value": 1.0,
            "n": 1, "value": [3.0, 3.1, 3.0, 1.0, 1.1, 1.2]}
    rows = pd.concat([pd.DataFrame({**base, "task": task, "metric": metric})
                      for task, metric in (("val_loss", "loss"), ("agreement", "acc@trigram"),
                                           ("pos", "best_layer"), ("agreement", "acc"))])
    table, _ = compare_to_reference(rows, pd.DataFrame(), "ref", PRIMARY)
    assert list(table["metric"]) == ["acc"]


def test_holm_runs_over_the_primary_results_only():
    rng = np.random.default_rng(0)
    rows = pd.concat([pd.DataFrame({
        "arm": ["ref"] * 4 + ["new"] * 4, "seed": list(range(4)) * 2, "task": "agreement",
        "metric": metric, "split": "test", "layer": NO_LAYER, "pooling": "", "group": "",
        "value": np.r_[np.zeros(4), 0.02 + rng.normal(0, 0.004, 4)], "higher_is_better": True,
        "budget_value": 1.0, "n": 1}) for metric in ("acc", *(f"x{i}" for i in range(30)))])
    table = compare_to_reference(rows, pd.DataFrame(), "ref", PRIMARY)[0].set_index("metric")
    assert table.loc["acc", "primary"] and table.loc["acc", "p_holm"] == table.loc["acc", "p"]
    assert table.loc["acc", "winner"] == "new"  # one primary test: no correction for the 30 others
    exploratory = table.drop(index="acc")
    assert not exploratory["primary"].any() and exploratory["p_holm"].isna().all()
    assert (exploratory["p"] < 0.05).all() and not exploratory["significant"].any()
    assert (exploratory["winner"] == "").all()


def test_summary_and_noise_floor_numbers():
    rows = pd.DataFrame({
        "arm": ["a"] * 3 + ["b"] * 3 + ["c"], "seed": [0, 1, 2, 0, 1, 2, 0], "task": "t",
        "metric": "m", "split": "", "layer": NO_LAYER, "pooling": "", "group": "",
        "value": [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 9.0], "higher_is_better": True,
        "budget_value": 10.0, "n": 100,
    })
    summary = summarize(rows, np.random.default_rng(0), n_boot=1000).set_index("arm")
    assert summary.loc["a", "mean"] == 2.0 and summary.loc["a", "std"] == 1.0
    assert summary.loc["a", "ci_high"] - 2.0 == pytest.approx(sps.t.ppf(0.975, 2) / np.sqrt(3))
    assert summary.loc["c", "n_seeds"] == 1 and np.isnan(summary.loc["c", ["std", "ci_low"]]).all()
    noise = noise_floor(summary.reset_index()).iloc[0]
    # pooled over a (var 1, df 2) and b (var 4, df 2); c has no spread to contribute
    assert noise["noise_sd"] == pytest.approx(np.sqrt(2.5)) and noise["dof"] == 4
    assert pooled_sd(np.array([np.nan]), np.array([1])) == (pytest.approx(np.nan, nan_ok=True), 0)


def test_crossed_test_with_two_seeds_keeps_a_finite_interval():
    """Items that share nothing across seeds make Satterthwaite's degrees of freedom collapse
    (an interval of +-1e149 before the floor); the seeds' own S - 1 bounds them from below."""
    rng = np.random.default_rng(3)
    diffs = np.sign(rng.normal(size=(2, 300))) * (rng.uniform(size=(2, 300)) < 0.05)
    test = crossed_paired_test(diffs)
    assert test.dof >= 1
    assert test.high - test.low < 1.0


def test_crossed_test_without_measured_spread_gives_no_p_instead_of_zero():
    """Equal seed means and items that vary less than the residual leave a variance estimate of
    zero: a p of 0 from it would declare any difference won."""
    diffs = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    test = crossed_paired_test(diffs)
    assert test.diff == 0.5
    assert np.isnan(test.p) and np.isnan(test.low) and np.isnan(test.high)
