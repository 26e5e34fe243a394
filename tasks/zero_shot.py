"""Zero-shot minimal pairs: the acceptable sentence must score higher than its twin.

Scores come from `TrainedModel.score` (fp32, by the objective's own rule: exact or pseudo
log-likelihood). A pair is right only if the good sentence scores strictly higher: a tie is an
error, so a model that cannot tell the two apart scores 0, not 50%. Both the summed score
(``acc_sum``) and the score per token (``acc_mean``) are kept, since the two sentences of a
pair may tokenize to different lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from objbench.harness.reading import TrainedModel
from objbench.tasks.base import TaskResult


def pair_correct(good: tuple[np.ndarray, np.ndarray], bad: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-pair correctness from (log-prob sums, token counts) of the good and bad sentences."""
    (g_sum, g_n), (b_sum, b_n) = good, bad
    return {"acc_sum": g_sum > b_sum, "acc_mean": g_sum / g_n > b_sum / b_n}


def minimal_pairs(result: TaskResult, model: TrainedModel, good: Sequence[str], bad: Sequence[str],
                  groups: Sequence[str], item_ids: Sequence[str]) -> None:
    """Score every pair once; add accuracy rows overall and per group, and each pair's correctness."""
    sums, counts = model.score([*good, *bad], desc=f"{result.task} pairs")
    n = len(good)
    correct = pair_correct((sums[:n], counts[:n]), (sums[n:], counts[n:]))
    groups = np.asarray(groups)
    for metric, ok in correct.items():
        result.add(metric, ok.mean(), n)
        for g in sorted(set(groups.tolist())):
            sel = groups == g
            result.add(metric, ok[sel].mean(), int(sel.sum()), group=g)
        result.add_items(metric, None, item_ids, ok)
