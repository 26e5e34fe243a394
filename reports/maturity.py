"""Can the comparison speak about the objectives? Checks that each arm learned more than the
shallow answer, with confidence intervals, and the verdict a report opens with.

Young encoders are ranked by how fast their objective trains the embeddings, not by what it
teaches: a probe that is best at the embedding layer, or a zero-shot score a unigram model
matches, says nothing about context. Each check pairs a model's per-item scores with what it
must beat (zero, or a baseline's scores on the same items) and tests the difference with seeds
and items both random (`stats.crossed_paired_test`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from objbench.reports.compare import item_tables
from objbench.reports.keys import base_metric, baseline_name
from objbench.reports.load import NO_LAYER
from objbench.reports.stats import crossed_paired_test, paired_t_test

# baselines a model must beat for its arm to count as mature, and those shown as stronger bars
REQUIRED_BASELINES = ("unigram",)
INFORMATIVE_BASELINES = ("lexical", "trigram", "bag-of-words")
CONTEXT_METRICS = ("contextual_gain_ambiguous", "contextual_gain")  # the first one present is used
CHECK_COLUMNS = ["arm", "check", "required", "status", "diff", "ci_low", "ci_high", "n_items"]


@dataclass(frozen=True)
class Verdict:
    mature: bool | None  # None: no required check could be measured
    checks: pd.DataFrame  # CHECK_COLUMNS
    rising: pd.DataFrame  # arm, result, diff, ci_low, ci_high: primary results still improving
    summary: str  # the verdict in plain words


def _status(low: float, high: float) -> str:
    if np.isnan(low):
        return "unclear"
    return "pass" if low > 0 else "fail" if high < 0 else "unclear"


def _test(diffs: pd.DataFrame) -> tuple[float, float, float]:
    """Mean and 95% interval of a (seed x item) table of differences."""
    test = crossed_paired_test(diffs.to_numpy(dtype=float))
    return test.diff, test.low, test.high


def _check(arm: str, label: str, required: bool, diffs: pd.DataFrame) -> dict:
    diff, low, high = _test(diffs)
    return {"arm": arm, "check": label, "required": required, "status": _status(low, high),
            "diff": diff, "ci_low": low, "ci_high": high, "n_items": diffs.shape[1]}


def _context_checks(tables: dict, arms: list[str]) -> list[dict]:
    for metric in CONTEXT_METRICS:
        keys = [k for k in tables if k[1] == metric]
        records = []
        for key in keys:
            label = f"{key[0]}: contextual layers above embeddings" + (
                " (ambiguous words)" if metric.endswith("ambiguous") else "")
            table = tables[key]
            records += [_check(arm, label, True, table.loc[arm].dropna(axis=1))
                        for arm in arms if arm in table.index]
        if records:
            return records
    return []


def _baseline_checks(tables: dict, arms: list[str], primary: pd.DataFrame) -> list[dict]:
    """Each primary result with items against each of its baselines that has items too."""
    records = []
    for key in primary.itertuples(index=False):
        model = tables.get((key.task, key.metric, key.layer, key.pooling))
        if model is None:
            continue
        for (task, metric, _, _), base in tables.items():
            name = baseline_name(metric)
            if task != key.task or base_metric(metric) != key.metric or \
                    name not in (*REQUIRED_BASELINES, *INFORMATIVE_BASELINES):
                continue
            reference = base.mean(axis=0)  # the same in every run: one corpus, one tokenizer
            for arm in (a for a in arms if a in model.index):
                scored = model.loc[arm].dropna(axis=1)
                common = scored.columns.intersection(reference.index)
                diffs = scored[common] - reference[common].to_numpy()[None, :]
                records.append(_check(arm, f"{task} {key.metric} above {name}",
                                      name in REQUIRED_BASELINES, diffs))
    return records


def suggested_budget(results: pd.DataFrame, axis: str, budget: float, arms: list[str]) -> str:
    """What the contextual gain's growth over the probe points suggests, in words: the budget at
    which a log-linear fit of each arm's mean gain crosses zero."""
    rows = results[results["metric"].isin(CONTEXT_METRICS) & (results["layer"] == NO_LAYER)]
    rows = rows[rows["metric"] == next((m for m in CONTEXT_METRICS if m in set(rows["metric"])), "")]
    curves = rows[rows["arm"].isin(arms)].groupby(["arm", "budget_value"])["value"].mean()
    if curves.empty or curves.groupby(level="arm").size().min() < 2:
        return ("Probe at several budget points (probe_at) to let the report extrapolate, or "
                "start from README's CPU study where context matters.")
    needed = []
    for arm, curve in curves.groupby(level="arm"):
        x, y = np.log(curve.index.get_level_values("budget_value")), curve.to_numpy()
        slope, intercept = np.polyfit(x, y, 1)
        if y[-1] > 0:
            continue
        if slope <= 0:
            return f"{arm}'s contextual gain does not grow over the budgets probed: more budget alone may not help."
        needed.append(float(np.exp(-intercept / slope)))
    if not needed:
        return ""
    most = max(needed)
    return (f"A log-linear fit of the contextual gain reaches zero at about {most:.3g} {axis} "
            f"({most / budget:.1f}x this budget).")


def probe_points(results: pd.DataFrame, primary: pd.DataFrame) -> int:
    """How many budget points every run probed its primary results at (0 without any): with
    fewer than two, whether they still rise cannot be told."""
    keyed = results.merge(primary, on=list(primary.columns))
    if keyed.empty:
        return 0
    return int(keyed.groupby(["arm", "seed"])["budget_value"].nunique().min())


def still_rising(results: pd.DataFrame, primary: pd.DataFrame) -> pd.DataFrame:
    """Primary results that rose from the second-to-last to the last probe point (paired over
    seeds, 95% interval above zero): more budget might still change the ranking."""
    records = []
    keyed = results.merge(primary, on=list(primary.columns))
    # the k-th probe point of every seed (on the flops axis seeds reach it at slightly different values)
    keyed = keyed.assign(point=keyed.groupby(["arm", "seed", "task", "metric"])["budget_value"].rank("dense"))
    for (arm, task, metric), rows in keyed.groupby(["arm", "task", "metric"]):
        by_seed = rows.pivot_table(index="seed", columns="point", values="value")
        if by_seed.shape[1] < 2:
            continue
        test = paired_t_test((by_seed.iloc[:, -1] - by_seed.iloc[:, -2]).dropna().to_numpy())
        if not np.isnan(test.low) and test.low > 0:
            records.append({"arm": arm, "result": f"{task} {metric}", "diff": test.diff,
                            "ci_low": test.low, "ci_high": test.high})
    return pd.DataFrame(records, columns=["arm", "result", "diff", "ci_low", "ci_high"])


def assess(items: pd.DataFrame, results: pd.DataFrame, primary: pd.DataFrame, arms: list[str],
           axis: str, budget: float) -> Verdict:
    """Every check for every arm, and the verdict: mature only if every required check passes.

    ``items`` and ``results`` are those of finished runs, at every probe point."""
    tables = item_tables(items)
    checks = pd.DataFrame(_context_checks(tables, arms) + _baseline_checks(tables, arms, primary),
                          columns=CHECK_COLUMNS)
    checks = checks.sort_values("required", ascending=False, kind="stable", ignore_index=True)
    required = checks[checks["required"]]
    mature = None if required.empty else bool((required["status"] == "pass").all())
    rising = still_rising(results, primary)
    summary = _summary(mature, required, rising)
    if mature and probe_points(results, primary) < 2:
        summary += (" Whether the primary results still rise with more budget is not known: "
                    "they were probed at one budget point (add points to probe_at).")
    if mature is False:
        summary += " " + suggested_budget(results, axis, budget, arms)
    return Verdict(mature, checks, rising, summary.strip())


def _summary(mature: bool | None, required: pd.DataFrame, rising: pd.DataFrame) -> str:
    if mature is None:
        return ("Not assessed: no task measured context. Add `pos` (ambiguous words) and a "
                "zero-shot task (`agreement` or `cloze`) to the study to learn whether its "
                "encoders are old enough for the comparison to speak about the objectives.")
    if mature:
        text = ("The comparison can speak about the objectives: every arm passes every required "
                "check (95% intervals, seeds and items both random).")
    else:
        failed = required[required["status"] != "pass"]
        arms_per_check = failed.groupby("check", sort=False)["arm"].apply(lambda a: ", ".join(a))
        per_check = "; ".join(f"{check} ({arms})" for check, arms in arms_per_check.items())
        text = ("The encoders are too young for this comparison to speak about the "
                f"objectives. Not shown beyond doubt: {per_check}. Differences between arms here "
                "measure how fast each objective trains its embeddings and word statistics, "
                "not what it teaches an encoder; give every arm more budget (the same number of "
                "targets is the fairest start) until these checks pass.")
    if not rising.empty:
        text += (" Still rising at the last probe point: "
                 + "; ".join(f"{r.arm} {r.result}" for r in rising.itertuples())
                 + ": more budget may change the ranking.")
    return text
