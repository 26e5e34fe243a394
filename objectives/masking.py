"""Choosing which tokens to corrupt, shared by the masking objectives.

Tokens are grouped into units (single tokens, whole words, or random spans) and whole units
are drawn in random order until a row's quota is met. Everything is batched tensor work:
no Python loop over tokens. Draws go through `objbench.objectives.draws`, each row taking the
same count of numbers from its stream whatever rows share its batch.
"""

from __future__ import annotations

from typing import Literal

import torch

from objbench.objectives import draws

Unit = Literal["token", "word", "span"]


def unit_ids(
    blocks: torch.Tensor, unit: Unit, word_start: torch.Tensor, mean_span: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Id of the unit each position belongs to, increasing along the row: ``(B, T)``."""
    B, T = blocks.shape
    if unit == "token":
        return torch.arange(T).expand(B, T)
    if unit == "word":
        starts = word_start[blocks]
    else:  # spans with geometric lengths of mean ``mean_span``
        starts = draws.rand(gen, B, T) < 1.0 / mean_span
    starts[:, 0] = True
    return starts.long().cumsum(1) - 1


def select_units(
    units: torch.Tensor, eligible: torch.Tensor, quota: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Bool ``(B, T)``: random whole units of eligible positions, about ``quota`` per row.

    Units are taken in a random order while the running total stays below the quota, so a
    row overshoots by less than one unit. A unit holding an ineligible token is never taken.
    """
    B, T = units.shape
    n_units = int(units.max()) + 1
    size = torch.zeros(B, n_units).scatter_add_(1, units, torch.ones(B, T))
    bad = torch.zeros(B, n_units).scatter_add_(1, units, (~eligible).float()) > 0
    keys = draws.rand(gen, B, T)[:, :n_units]  # a row has at most T units; T draws per row
    keys[bad | (size == 0)] = 2.0  # sorted last, never reached before the quota
    order = keys.argsort(dim=1)
    sorted_size = size.gather(1, order)
    sorted_bad = keys.gather(1, order) > 1.0
    before = sorted_size.cumsum(1) - sorted_size
    take_sorted = (before < quota[:, None]) & ~sorted_bad
    take = torch.zeros(B, n_units, dtype=torch.bool).scatter_(1, order, take_sorted)
    return take.gather(1, units)


def later_in_word(tokens: torch.Tensor, word_start: torch.Tensor) -> torch.Tensor:
    """Bool ``(n, n)`` for one sentence ``(n,)``: row i marks the sub-tokens after token i in
    i's word (a word starts at a token the tokenizer marks word-initial; a leading continuation
    opens one too). What a word-level left-to-right pseudo-log-likelihood hides with token i."""
    word = word_start[tokens].long().cumsum(0)
    idx = torch.arange(len(tokens))
    return (word[:, None] == word[None, :]) & (idx[None, :] > idx[:, None])
