"""Paired comparisons of every arm against the study's reference arm, Holm-corrected together.

Pairs are formed by seed (same seed number in both arms) and, where per-item scores exist, also
by item. `diff` is always arm minus reference in the metric's own units; `winner` names the
better arm once `higher_is_better` is taken into account, and only when the difference is
significant after Holm's correction over every comparison in the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from objbench.reports.load import KEY
from objbench.reports.stats import PairedTest, crossed_paired_test, holm, paired_t_test

ALPHA = 0.05
OWN_LOSSES = {"val_loss"}  # compared only between arms of the same objective
ITEM_KEY = ["task", "metric", "layer"]
COMPARISON_COLUMNS = [
    "arm", "reference", *KEY, "higher_is_better", "n_seeds", "n_items", "reference_mean",
    "arm_mean", "diff", "ci_low", "ci_high", "dof", "p", "p_holm", "significant", "winner",
    "paired_over",
]


def compare_to_reference(
    final: pd.DataFrame, items: pd.DataFrame, reference: str, alpha: float = ALPHA
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (arm != reference, result key) present in both; plus notes on what was skipped.

    `final` holds the last-evaluation rows of finished runs, `items` the per-item scores.
    """
    notes: list[str] = []
    if reference not in set(final["arm"]):
        return pd.DataFrame(columns=COMPARISON_COLUMNS), [
            f"reference arm {reference!r} has no finished results: no comparisons"
        ]
    item_sets = _item_sets(final, items, notes)
    by_key = {keys: group.set_index("seed")["value"]
              for keys, group in final[final["arm"] == reference].groupby(KEY)}
    objective_of = (final.groupby("arm")["objective"].first() if "objective" in final
                    else pd.Series(dtype=object))
    records = []
    for (arm, *keys), group in final[final["arm"] != reference].groupby(["arm", *KEY]):
        ref_values = by_key.get(tuple(keys))
        if ref_values is None:
            continue
        if dict(zip(KEY, keys))["task"] in OWN_LOSSES and \
                objective_of.get(arm) != objective_of.get(reference):
            continue  # each objective's loss has its own targets: no common scale to compare on
        arm_values = group.set_index("seed")["value"]
        seeds = sorted(set(arm_values.index) & set(ref_values.index))
        if not seeds:
            notes.append(f"{arm} vs {reference}, {'/'.join(map(str, keys))}: no common seeds")
            continue
        key = dict(zip(KEY, keys))
        matrix = _item_matrix(item_sets, key, arm, reference, seeds, notes)
        if matrix is None:
            test = paired_t_test(arm_values[seeds].to_numpy() - ref_values[seeds].to_numpy())
            n_items, paired_over = 0, "seeds"
        else:
            arm_items, ref_items = matrix
            test = crossed_paired_test(arm_items - ref_items)
            n_items = arm_items.shape[1]
            paired_over = "seeds x items" if len(seeds) > 1 else "items, 1 seed"
        records.append(_record(arm, reference, key, group, arm_values[seeds], ref_values[seeds],
                               test, n_items, paired_over))
    table = pd.DataFrame(records, columns=COMPARISON_COLUMNS)
    return _correct(table, alpha), notes


def _record(arm: str, reference: str, key: dict, group: pd.DataFrame, arm_values: pd.Series,
            ref_values: pd.Series, test: PairedTest, n_items: int, paired_over: str) -> dict:
    return {
        "arm": arm, "reference": reference, **key,
        "higher_is_better": bool(group["higher_is_better"].iloc[0]),
        "n_seeds": len(arm_values), "n_items": n_items,
        "reference_mean": ref_values.mean(), "arm_mean": arm_values.mean(),
        "diff": test.diff, "ci_low": test.low, "ci_high": test.high, "dof": test.dof,
        "p": test.p, "paired_over": paired_over,
    }


def _correct(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < alpha
    arm_better = (table["diff"] > 0) == table["higher_is_better"]
    table["winner"] = np.where(
        table["significant"], np.where(arm_better, table["arm"], table["reference"]), ""
    )
    return table


def _item_sets(final: pd.DataFrame, items: pd.DataFrame, notes: list[str]) -> dict:
    """Per (task, metric, layer): the items of each run's last evaluation, as a run x item table.

    Item rows carry no split/pooling/group, so they are used only where exactly one ungrouped
    result key matches them; otherwise the comparison falls back to seeds alone.
    """
    if items.empty:
        return {}
    ungrouped = final.loc[final["group"] == "", KEY].drop_duplicates()
    keys_per_item_key = ungrouped.groupby(ITEM_KEY).size()
    last = items.groupby(["arm", "seed", *ITEM_KEY])["budget_value"].transform("max")
    items = items[items["budget_value"] == last]
    tables = {}
    for item_key, group in items.groupby(ITEM_KEY):
        if keys_per_item_key.get(item_key, 0) != 1:
            notes.append(f"items for {'/'.join(map(str, item_key))} match"
                         f" {keys_per_item_key.get(item_key, 0)} result keys: not used")
            continue
        table = group.pivot_table(index=["arm", "seed"], columns="item", values="value",
                                  aggfunc="mean")
        _check_against_results(table, final, item_key, notes)
        tables[item_key] = table
    return tables


def _check_against_results(table: pd.DataFrame, final: pd.DataFrame, item_key: tuple,
                           notes: list[str]) -> None:
    """Items must average to the reported value, or they measure something else."""
    rows = final[(final["group"] == "")
                 & (final[ITEM_KEY] == pd.Series(item_key, index=ITEM_KEY)).all(axis=1)]
    reported = rows.set_index(["arm", "seed"])["value"]
    item_means = table.mean(axis=1)
    common = item_means.index.intersection(reported.index)
    off = np.abs(item_means[common] - reported[common]) > 1e-6
    if off.any():
        notes.append(f"items for {'/'.join(map(str, item_key))} do not average to the reported"
                     f" value in {int(off.sum())} runs")


def _item_matrix(item_sets: dict, key: dict, arm: str, reference: str, seeds: list[int],
                 notes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed x item arrays of both arms over the items every run scored, or None."""
    table = item_sets.get(tuple(key[k] for k in ITEM_KEY)) if key["group"] == "" else None
    if table is None:
        return None
    wanted = pd.MultiIndex.from_product([[arm, reference], seeds])
    if not wanted.isin(table.index).all():
        return None
    block = table.loc[wanted].dropna(axis=1)
    if block.shape[1] < table.loc[wanted].shape[1]:
        notes.append(f"{arm} vs {reference}, {'/'.join(str(key[k]) for k in ITEM_KEY)}:"
                     f" {block.shape[1]} of {table.shape[1]} items scored in every run are used")
    if block.shape[1] < 2:
        return None
    values = block.to_numpy()
    return values[: len(seeds)], values[len(seeds):]
