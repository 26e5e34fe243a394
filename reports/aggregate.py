"""Aggregate result rows across seeds: per-arm summaries, the noise floor, the budget used."""

from __future__ import annotations

import json

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
PHASE_COLUMNS = ["arm", "phase", "runs", *AXIS_COLUMN, "of_flops"]


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


def phase_use(metrics: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """What each phase of one schedule run used on every budget axis, one row per phase in
    order: each step's line holds its phase and the counters after the step, so a phase's use
    is the sum of its steps' increments."""
    counters = list(AXIS_COLUMN.values())
    rows = metrics.sort_values("step", kind="stable")
    steps = rows[counters].diff().fillna(rows[counters])[rows["phase"].notna()]
    used = steps.groupby(rows["phase"].dropna().astype(int)).sum().reindex(range(len(names)), fill_value=0)
    return used.rename(columns={c: a for a, c in AXIS_COLUMN.items()}).reset_index(drop=True).assign(phase=names)


def phase_budget(data: StudyData) -> pd.DataFrame:
    """Per schedule arm and phase, the budget used on every axis (mean over its finished runs)
    and the phase's share of the run's FLOPs: phases switch at budget fractions on one axis,
    so their use on the others is what a reader needs to compare them honestly."""
    done = data.runs[(data.runs["state"] == "done") & (data.runs["objective"] == "schedule")]
    if done.empty or "phase" not in data.metrics:
        return pd.DataFrame(columns=PHASE_COLUMNS)
    parts = []
    for run in done.itertuples():
        phases = json.loads(run.options)["phases"]
        curve = data.metrics[(data.metrics["arm"] == run.arm) & (data.metrics["seed"] == run.seed)]
        parts.append(phase_use(curve, [p["name"] or p["objective"] for p in phases]).assign(arm=run.arm))
    use = pd.concat(parts).groupby(["arm", "phase"], sort=False)
    table = use[list(AXIS_COLUMN)].mean().assign(runs=use.size()).reset_index()
    table["of_flops"] = table["flops"] / table.groupby("arm")["flops"].transform("sum")
    return table[PHASE_COLUMNS]


def _mean_of(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].mean()) if column in frame else np.nan
