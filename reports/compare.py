"""Paired comparisons of every arm against the study's reference arm.

Pairs are formed by seed (same seed number in both arms) and, where per-item scores exist, also
by item. `diff` is always arm minus reference in the metric's own units. The study's primary
results form the family that Holm's correction runs over; `winner` names the better arm (once
`higher_is_better` is taken into account) only for a primary result significant after it.
Every other comparison is exploratory: its raw p is reported, and nothing is declared won.
Baselines and diagnostics are never compared (every arm reads the same data through them),
nor are validation losses of different objectives (different targets, no common scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from objbench.reports.keys import is_model_result, mark_primary
from objbench.reports.load import KEY
from objbench.reports.stats import PairedTest, crossed_paired_test, holm, paired_t_test

ALPHA = 0.05
ITEM_KEY = ["task", "metric", "layer", "pooling"]
COMPARISON_COLUMNS = [
    "arm", "reference", *KEY, "higher_is_better", "n_seeds", "n_items", "reference_mean",
    "arm_mean", "diff", "ci_low", "ci_high", "dof", "p", "primary", "p_holm", "significant",
    "winner", "paired_over",
]


def compare_to_reference(
    final: pd.DataFrame, items: pd.DataFrame, reference: str, primary: pd.DataFrame,
    alpha: float = ALPHA,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (arm != reference, result key) present in both; plus notes on what was skipped.

    `final` holds the last-evaluation rows of finished runs, `items` the per-item scores,
    `primary` the primary result keys (`keys.primary_keys`).
    """
    notes: list[str] = []
    if reference not in set(final["arm"]):
        return pd.DataFrame(columns=COMPARISON_COLUMNS), [
            f"reference arm {reference!r} has no finished results: no comparisons"
        ]
    final = final[is_model_result(final)]
    item_sets = _item_sets(final, items, notes)
    partial: dict[tuple[str, str], list[tuple[int, int]]] = {}
    by_key = {keys: group.set_index("seed")["value"]
              for keys, group in final[final["arm"] == reference].groupby(KEY)}
    records = []
    for (arm, *keys), group in final[final["arm"] != reference].groupby(["arm", *KEY]):
        ref_values = by_key.get(tuple(keys))
        if ref_values is None:
            continue
        arm_values = group.set_index("seed")["value"]
        seeds = sorted(set(arm_values.index) & set(ref_values.index))
        if not seeds:
            notes.append(f"{arm} vs {reference}, {'/'.join(map(str, keys))}: no common seeds")
            continue
        key = dict(zip(KEY, keys))
        matrix = _item_matrix(item_sets, key, arm, reference, seeds, partial)
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
    table["primary"] = mark_primary(table, primary)
    return _correct(table, alpha), notes + _partial_notes(partial, reference)


def _partial_notes(partial: dict[tuple[str, str], list[tuple[int, int]]], reference: str) -> list[str]:
    """One note per arm and task whose comparisons used only the items every run scored
    (a sentence cut to another length gets another target, so another item id)."""
    notes = []
    for (arm, task), counts in sorted(partial.items()):
        used = sorted({kept for kept, _ in counts})
        span = f"{used[0]}" if len(used) == 1 else f"{used[0]}-{used[-1]}"
        notes.append(f"{arm} vs {reference}, {task}: {len(counts)} results compared on the {span} of"
                     f" {max(total for _, total in counts)} items that every run of both arms scored")
    return notes


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
    """Holm over the primary comparisons; exploratory rows keep their raw p and win nothing."""
    table["p_holm"] = np.nan
    table.loc[table["primary"], "p_holm"] = holm(table.loc[table["primary"], "p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < alpha
    arm_better = (table["diff"] > 0) == table["higher_is_better"]
    table["winner"] = np.where(
        table["significant"], np.where(arm_better, table["arm"], table["reference"]), ""
    )
    return table


def item_tables(items: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Per (task, metric, layer, pooling): the items of each run's last evaluation, as a
    (arm, seed) x item table."""
    if items.empty:
        return {}
    last = items.groupby(["arm", "seed", *ITEM_KEY])["budget_value"].transform("max")
    items = items[items["budget_value"] == last]
    return {key: group.pivot_table(index=["arm", "seed"], columns="item", values="value", aggfunc="mean")
            for key, group in items.groupby(ITEM_KEY)}


def _item_sets(final: pd.DataFrame, items: pd.DataFrame, notes: list[str]) -> dict:
    """The item tables of model results, each checked against the one test result key it
    belongs to (items carry no split or group: they are the test items of the whole set)."""
    ungrouped = final.loc[(final["group"] == "") & (final["split"] == "test"), KEY].drop_duplicates()
    keys_per_item_key = ungrouped.groupby(ITEM_KEY).size()
    tables = {}
    for item_key, table in item_tables(items).items():
        if item_key not in keys_per_item_key.index:
            continue  # a baseline's or diagnostic's items: no comparison between arms
        if keys_per_item_key[item_key] != 1:
            notes.append(f"items for {'/'.join(map(str, item_key))} match"
                         f" {keys_per_item_key[item_key]} result keys: not used")
            continue
        _check_against_results(table, final, item_key, notes)
        tables[item_key] = table
    return tables


def _check_against_results(table: pd.DataFrame, final: pd.DataFrame, item_key: tuple,
                           notes: list[str]) -> None:
    """Items must average to the reported value, or they measure something else."""
    rows = final[(final["group"] == "") & (final["split"] == "test")
                 & (final[ITEM_KEY] == pd.Series(item_key, index=ITEM_KEY)).all(axis=1)]
    reported = rows.set_index(["arm", "seed"])["value"]
    item_means = table.mean(axis=1)
    common = item_means.index.intersection(reported.index)
    off = np.abs(item_means[common] - reported[common]) > 1e-6
    if off.any():
        notes.append(f"items for {'/'.join(map(str, item_key))} do not average to the reported"
                     f" value in {int(off.sum())} runs")


def _item_matrix(item_sets: dict, key: dict, arm: str, reference: str, seeds: list[int],
                 partial: dict[tuple[str, str], list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed x item arrays of both arms over the items every run scored, or None; a result
    whose runs scored different items is counted in ``partial`` under (arm, task)."""
    table = item_sets.get(tuple(key[k] for k in ITEM_KEY)) if key["group"] == "" else None
    if table is None:
        return None
    wanted = pd.MultiIndex.from_product([[arm, reference], seeds])
    if not wanted.isin(table.index).all():
        return None
    scored = table.loc[wanted].dropna(axis=1, how="all")  # items some run of the two arms scored
    block = scored.dropna(axis=1)
    if block.shape[1] < scored.shape[1]:
        partial.setdefault((arm, key["task"]), []).append((block.shape[1], scored.shape[1]))
    if block.shape[1] < 2:
        return None
    values = block.to_numpy()
    return values[: len(seeds)], values[len(seeds):]
