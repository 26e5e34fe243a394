"""What a result key means: the model's value, a baseline's, a diagnostic, or a primary result.

Tasks name a baseline's value ``metric@baseline`` (`objbench.tasks.base.baseline_metric`);
a study file lists its primary results. Everything here works on the loader's frames, where a
missing layer is `NO_LAYER` and a missing pooling or group is "".
"""

from __future__ import annotations

import pandas as pd

from objbench.reports.load import KEY, NO_LAYER, StudyData, arm_names
from objbench.tasks.base import BASELINE_MARK, DIAGNOSTIC_METRICS


def base_metric(metric: str) -> str:
    """``acc_sum@trigram`` -> ``acc_sum``; a model's metric is its own base."""
    return metric.split(BASELINE_MARK, 1)[0]


def baseline_name(metric: str) -> str | None:
    """``acc_sum@trigram`` -> ``trigram``; None for the model's own values."""
    return metric.split(BASELINE_MARK, 1)[1] if BASELINE_MARK in metric else None


def is_model_result(frame: pd.DataFrame) -> pd.Series:
    """Rows of values a model scored: not a baseline's, not a diagnostic, not a validation loss
    (each objective's loss has its own targets)."""
    return (~frame["metric"].str.contains(BASELINE_MARK, regex=False)
            & ~frame["metric"].isin(DIAGNOSTIC_METRICS) & (frame["task"] != "val_loss"))


def baselines_of(frame: pd.DataFrame, task: str, metric: str, group: str = "") -> pd.DataFrame:
    """The baseline rows for ``metric`` of ``task`` (on the same group of items)."""
    rows = frame[(frame["task"] == task) & (frame["group"] == group) & (frame["split"] == "test")]
    rows = rows[rows["metric"].str.startswith(metric + BASELINE_MARK)]
    return rows.assign(baseline=rows["metric"].map(baseline_name))


def primary_keys(config: dict) -> pd.DataFrame:
    """The study's primary results as result keys (split test; a null layer is the layer chosen
    on validation, which tasks report with no layer)."""
    specs = config.get("primary") or []
    records = [{"task": str(p["task"]), "metric": str(p["metric"]), "split": "test",
                "layer": NO_LAYER if p.get("layer") is None else int(p["layer"]),
                "pooling": p.get("pooling") or "", "group": p.get("group") or ""}
               for p in specs if isinstance(p, dict) and "task" in p and "metric" in p]
    return pd.DataFrame(records, columns=KEY).drop_duplicates(ignore_index=True)


def key_rows(frame: pd.DataFrame, key: dict) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal every part of ``key`` (a result key, or part of one)."""
    return frame[(frame[list(key)] == pd.Series(key)).all(axis=1)]


def mark_primary(frame: pd.DataFrame, primary: pd.DataFrame) -> pd.Series:
    """Bool per row of ``frame``: is its key one of the primary results?"""
    wanted = set(primary[KEY].itertuples(index=False, name=None))
    return pd.Series([key in wanted for key in frame[KEY].itertuples(index=False, name=None)],
                     index=frame.index, dtype=bool)


def unmatched_primary(primary: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """A note for each primary result no arm reported, naming the readings that do exist."""
    notes = []
    for key in primary.to_dict("records"):
        if mark_primary(summary, pd.DataFrame([key])).any():
            continue
        near = summary[(summary["task"] == key["task"]) & (summary["metric"] == key["metric"])]
        found = sorted({describe(k) for k in near[KEY].to_dict("records")})
        notes.append(f"primary result {describe(key)} was not reported by any run"
                     + (f"; reported readings: {'; '.join(found)}" if found else ""))
    return notes


def describe(key: pd.Series | dict) -> str:
    """A result key in words: ``pos probe_acc_ambiguous (first-subtoken, layer chosen on validation)``."""
    parts = [p for p in (key["pooling"], key["group"]) if p]
    if key["layer"] != NO_LAYER:
        parts.append(f"layer {key['layer']}")
    elif key["metric"].startswith("probe_"):
        parts.append("layer chosen on validation")
    return f"{key['task']} {key['metric']}" + (f" ({', '.join(parts)})" if parts else "")


def arm_order(data: StudyData, present: set[str]) -> list[str]:
    """The reference, then the other arms in the order the study file lists them."""
    order = [data.reference, *arm_names(data.config), *sorted(present)]
    return [a for a in dict.fromkeys(order) if a in present]
