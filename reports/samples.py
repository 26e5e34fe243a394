"""The generation task's samples, side by side per prompt: what the continuations read like.

Read from each run's `SAMPLES_FILE` (text, not result rows), for the lowest seed of each arm;
the renderers escape every cell, so a sample is shown as the text it is, never as markup.
"""

from __future__ import annotations

import json

import pandas as pd

from objbench.reports.load import StudyData
from objbench.tasks.base import SAMPLES_FILE

SHOWN = 5  # prompts shown: enough to read the style, few enough to keep the report short


def samples_table(data: StudyData, arms: list[str], shown: int = SHOWN) -> pd.DataFrame | None:
    """Prompt, true continuation and each arm's continuation for the first ``shown`` prompts
    every arm continued; None when no run wrote samples."""
    done = data.runs[data.runs["state"] == "done"].sort_values("seed")
    by_arm = {}
    for arm in arms:
        for seed in done.loc[done["arm"] == arm, "seed"]:
            path = data.root / "runs" / arm / f"seed{seed}" / SAMPLES_FILE
            if path.exists():
                by_arm[arm] = {r["item"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
                break
    if not by_arm:
        return None
    items = [i for i in next(iter(by_arm.values())) if all(i in rows for rows in by_arm.values())][:shown]
    first = next(iter(by_arm.values()))
    return pd.DataFrame({"prompt": [first[i]["prompt"] for i in items],
                         "true continuation": [first[i]["truth"] for i in items],
                         **{arm: [rows[i]["sample"] for i in items] for arm, rows in by_arm.items()}})
