"""The repetition table of a data_caps sweep: each capped arm against its own whole-split runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from objbench.reports.load import NO_LAYER, StudyData
from objbench.reports.repetition import repetition_table

BUDGET = 100.0
PROBE = {"task": "pos", "metric": "probe_acc_ambiguous", "split": "test", "layer": NO_LAYER,
         "pooling": "first-subtoken", "group": ""}
LOSS = {"task": "val_loss", "metric": "loss", "split": "validation", "layer": NO_LAYER, "pooling": "",
        "group": ""}
# per arm: (loss at 1/4, 1/2, end of the budget), probe accuracy at the end, epochs at the end,
# and how much each seed moves both
PLANTED = {"clm-all": ((6.0, 5.5, 5.0), 0.80, 0.5, 0.01), "clm-10k": ((5.8, 5.2, 5.3), 0.70, 16.0, 0.02)}


def _rows(arm: str, seed: int) -> list[dict]:
    losses, probe, epochs, per_seed = PLANTED[arm]
    noise = per_seed * seed  # points before the end overshoot their fraction a little, as on a FLOPs budget
    rows = [{**LOSS, "budget_value": BUDGET * (f + 0.003 * (f < 1)), "epoch": epochs * f, "value": loss + noise,
             "higher_is_better": False} for f, loss in zip((0.25, 0.5, 1.0), losses)]
    rows.append({**PROBE, "budget_value": BUDGET, "epoch": epochs, "value": probe - noise,
                 "higher_is_better": True})
    return [{**row, "arm": arm, "seed": seed, "final": row["budget_value"] == BUDGET,
             "run_state": "done"} for row in rows]


def _study(caps: list) -> StudyData:
    results = pd.DataFrame([row for arm in PLANTED for seed in (0, 1, 2) for row in _rows(arm, seed)])
    config = {"arms": [{"name": "clm", "objective": "clm"}], "data_caps": caps}
    empty = pd.DataFrame()
    return StudyData(root=Path("."), config=config, name="caps", reference="clm-all", budget_axis="flops",
                     budget_value=BUDGET, provenance={}, runs=empty, results=results, items=empty,
                     metrics=empty, problems=[])


def test_a_capped_arm_is_compared_with_its_own_whole_split_runs():
    table = repetition_table(_study([None, 10_000]), pd.DataFrame([PROBE]))
    loss = table[table["task"] == "val_loss"].iloc[0]
    probe = table[table["task"] == "pos"].iloc[0]
    assert (loss["capped_arm"], loss["versus"], loss["cap"]) == ("clm-10k", "clm-all", 10_000)
    assert loss["epochs"] == 16.0 and loss["value"] == pytest.approx(5.32)
    # seeds end 0.30, 0.31, 0.32 nats worse: mean 0.31, t interval 0.31 +- 4.303 * 0.01 / sqrt(3)
    assert loss["cost"] == pytest.approx(0.31)
    assert (loss["cost_low"], loss["cost_high"]) == pytest.approx((0.31 - 0.02484, 0.31 + 0.02484), abs=1e-4)
    assert loss["late_gain"] == pytest.approx(-0.1)  # the loss rose in the second half
    assert loss["best_epoch"] == pytest.approx(8.0)  # lowest at half the budget
    assert probe["cost"] == pytest.approx(0.11)  # lower accuracy: positive is worse either way
    assert np.isnan(probe["late_gain"])  # probed only at the end: no second half to measure
    assert list(table["p_holm"].isna()) == list(table["p"].isna())


def test_no_sweep_no_table():
    assert repetition_table(_study([]), pd.DataFrame([PROBE])).empty
