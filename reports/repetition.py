"""Under a ``data_caps`` sweep: what each arm loses when its unique data is capped and repeated.

Each capped arm is compared with the same arm on its largest cap (the whole split when the sweep
has ``null``) at the same budget, so a validation loss is only ever compared with the same
objective's. Fresh data is what repetition is measured against (Muennighoff et al. 2023): a
cost of zero means repeated data was worth as much as new data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from objbench.harness.config import capped_arm
from objbench.reports.keys import key_rows, mark_primary
from objbench.reports.load import KEY, NO_LAYER, StudyData
from objbench.reports.stats import holm, paired_t_test, t_interval

REPETITION_COLUMNS = [
    "arm", "cap", "capped_arm", "versus", *KEY, "higher_is_better", "n_seeds", "epochs", "value",
    "cost", "cost_low", "cost_high", "p", "p_holm", "late_gain", "late_low", "late_high", "best_epoch",
]
HALF_TOLERANCE = 0.02  # of the budget: how far from its middle a point still counts as half-way
VAL_LOSS = {"task": "val_loss", "metric": "loss", "split": "validation", "layer": NO_LAYER, "pooling": "", "group": ""}


def repetition_table(data: StudyData, primary: pd.DataFrame) -> pd.DataFrame:
    """One row per (capped arm, result) for the validation loss and each primary result.

    ``cost`` is capped minus uncapped at the end, paired over seeds and signed so that positive
    is worse (what repetition cost); ``late_gain`` is what the second half of the budget added
    (positive is better: still gaining); ``best_epoch`` the mean epoch of each run's best value.
    Holm's correction runs over the table's costs, the family a data-constrained study asks about.
    """
    caps = data.config.get("data_caps") or []
    if len(caps) < 2:
        return pd.DataFrame(columns=REPETITION_COLUMNS)
    keys = pd.concat([pd.DataFrame([VAL_LOSS]), primary[KEY]], ignore_index=True)
    rows = data.done_results[mark_primary(data.done_results, keys)]
    widest = max(caps, key=lambda cap: np.inf if cap is None else cap)
    results = [(key, key_rows(rows, key)) for key in keys.to_dict("records")]
    records = [
        _record(result, key, capped_arm(str(arm["name"]), cap), capped_arm(str(arm["name"]), widest),
                str(arm["name"]), cap)
        for arm in data.config.get("arms", []) for cap in caps if cap != widest
        for key, result in results if not result.empty
    ]
    table = pd.DataFrame([r for r in records if r is not None], columns=REPETITION_COLUMNS)
    table["p_holm"] = holm(table["p"].to_numpy()) if not table.empty else []
    return table


def _record(result: pd.DataFrame, key: dict, capped: str, whole: str, arm: str,
            cap: int | None) -> dict | None:
    """The comparison of ``capped`` with ``whole`` on the rows of one result key; None if
    either lacks it."""
    higher = bool(result["higher_is_better"].iloc[0])
    mine, theirs = _per_run(result, capped, higher), _per_run(result, whole, higher)
    seeds = sorted(set(mine.index) & set(theirs.index))
    if not seeds:
        return None
    sign = -1.0 if higher else 1.0
    cost = paired_t_test(sign * (mine.loc[seeds, "final"] - theirs.loc[seeds, "final"]).to_numpy())
    late = (-sign * mine["late_gain"]).dropna().to_numpy()
    late_low, late_high = t_interval(late)
    return {
        "arm": arm, "cap": cap, "capped_arm": capped, "versus": whole, **key,
        "higher_is_better": higher, "n_seeds": len(seeds), "epochs": mine["epochs"].mean(),
        "value": mine["final"].mean(), "cost": cost.diff, "cost_low": cost.low, "cost_high": cost.high,
        "p": cost.p, "p_holm": np.nan, "late_gain": late.mean() if late.size else np.nan,
        "late_low": late_low, "late_high": late_high, "best_epoch": mine["best_epoch"].mean(),
    }


def _per_run(result: pd.DataFrame, arm: str, higher: bool) -> pd.DataFrame:
    """Per seed of ``arm``: the final value, its epochs, the change over the second half of the
    budget (final minus halfway; NaN without a halfway point) and the epoch of the best value."""
    part = result[result["arm"] == arm].sort_values("budget_value")
    records = {}
    for seed, run in part.groupby("seed"):
        end = run["budget_value"].max()
        # evaluation points land a part of a step past their fraction of a FLOPs or tokens budget
        half = run.loc[(run["budget_value"] - end / 2).abs() <= HALF_TOLERANCE * end, "value"]
        best = run["value"].idxmax() if higher else run["value"].idxmin()
        records[seed] = {"final": run["value"].iloc[-1], "epochs": run["epoch"].iloc[-1],
                         "late_gain": run["value"].iloc[-1] - half.iloc[0] if len(half) else np.nan,
                         "best_epoch": run.loc[best, "epoch"]}
    return pd.DataFrame.from_dict(records, orient="index",
                                  columns=["final", "epochs", "late_gain", "best_epoch"])
