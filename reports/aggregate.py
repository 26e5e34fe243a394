"""Aggregate result rows across seeds: per-arm summaries, the noise floor, the budget used."""

from __future__ import annotations

import numpy as np
import pandas as pd

from objbench.reports.load import AXIS_COLUMN, KEY, StudyData
from objbench.reports.stats import N_BOOT, bootstrap_interval, pooled_sd, t_interval

SUMMARY_COLUMNS = [
    "arm", *KEY, "higher_is_better", "budget_value", "n_seeds", "mean", "std",
    "ci_low", "ci_high", "boot_low", "boot_high", "n",
]
NOISE_COLUMNS = [*KEY, "noise_sd", "dof", "n_arms"]
BUDGET_COLUMNS = ["arm", "runs", "steps", "tokens", "targets", "flops", "epoch", "unique_tokens",
                  "final_budget", "of_budget"]


def final_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation point of each run: rows flagged final at the run's largest budget."""
    final = results[results["final"]]
    last = final.groupby(["arm", "seed"])["budget_value"].transform("max")
    return final[final["budget_value"] == last]


def summarize(rows: pd.DataFrame, rng: np.random.Generator, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Mean, std and 95% intervals over seeds per arm and result key.

    `ci_*` is the Student-t interval, `boot_*` the percentile bootstrap (too narrow below ~10
    seeds, see `stats.bootstrap_interval`); both are NaN for a single seed.
    """
    records = []
    for keys, group in rows.groupby(["arm", *KEY], sort=True):
        values = group["value"].to_numpy()
        records.append({
            **dict(zip(["arm", *KEY], keys)),
            "higher_is_better": bool(group["higher_is_better"].iloc[0]),
            "budget_value": group["budget_value"].mean(),
            "n_seeds": group["seed"].nunique(),
            "mean": values.mean(),
            "std": values.std(ddof=1) if values.size > 1 else np.nan,
            **dict(zip(["ci_low", "ci_high"], t_interval(values))),
            **dict(zip(["boot_low", "boot_high"], bootstrap_interval(values, rng, n_boot))),
            "n": group["n"].mean(),
        })
    return pd.DataFrame(records, columns=SUMMARY_COLUMNS)


def noise_floor(summary: pd.DataFrame) -> pd.DataFrame:
    """Seed-to-seed standard deviation of each result, pooled over arms.

    A difference between arms smaller than this is within what reseeding alone produces.
    """
    records = []
    for keys, group in summary.groupby(KEY, sort=True):
        sd, dof = pooled_sd(group["std"].to_numpy(), group["n_seeds"].to_numpy())
        records.append({**dict(zip(KEY, keys)), "noise_sd": sd, "dof": dof, "n_arms": len(group)})
    return pd.DataFrame(records, columns=NOISE_COLUMNS)


def budget_used(data: StudyData) -> pd.DataFrame:
    """What each arm actually trained for (last logged step, mean over its finished runs)."""
    done = data.runs.loc[data.runs["state"] == "done", ["arm", "seed"]]
    final = final_rows(data.done_results).groupby(["arm", "seed"])["budget_value"].first()
    metrics = data.metrics
    if not metrics.empty:
        metrics = metrics.merge(done, on=["arm", "seed"])
    records = []
    for arm, runs in done.groupby("arm"):
        last = (metrics[metrics["arm"] == arm].groupby("seed").tail(1)
                if not metrics.empty else pd.DataFrame())
        reached = final.loc[arm].mean() if arm in final.index.get_level_values(0) else np.nan
        records.append({
            "arm": arm,
            "runs": len(runs),
            **{axis: _mean_of(last, column) for axis, column in AXIS_COLUMN.items()},
            **{column: _mean_of(last, column) for column in ("epoch", "unique_tokens")},
            "final_budget": reached,
            "of_budget": reached / data.budget_value,
        })
    return pd.DataFrame(records, columns=BUDGET_COLUMNS)


def _mean_of(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].mean()) if column in frame else np.nan
