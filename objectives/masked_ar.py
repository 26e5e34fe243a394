"""Masking as autoregression: blank infilling in one shared encoder (GLM-style).

A fraction ``r`` of the tokens is masked (single tokens or spans) and predicted
autoregressively. The input is two parts:

    part A: [CLS] and the text with each masked span replaced by one [MASK]   (bidirectional)
    part B: each span in a sampled order as [S] t1 .. tk, predicting t1 .. tk [E]

Part B attends to all of part A and causally to earlier part-B tokens. Each part-B token
sits at the position of the token it predicts ([S] at the span's first token), so the model
knows where it is filling. Limits: ``r = 1`` with left-to-right order is ordinary causal LM
(part A is just [CLS] [MASK]); ``suffix`` masks one final span, which is prefix LM; small
``r`` approaches MLM with autoregressive infilling. Document separators count as text here,
as they do for ``clm``, so that ``r = 1`` predicts exactly what ``clm`` predicts.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objbench.objectives.base import IGNORE, Objective, ObjectiveBatch, Options, collate
from objbench.objectives.masking import select_units, unit_ids


class MaskedAROptions(Options):
    r: float = Field(0.15, gt=0.0, le=1.0, description="fraction of tokens masked and predicted")
    unit: Literal["token", "span"] = Field("span", description="mask single tokens or spans")
    mean_span: float = Field(3.0, ge=1.0, description="mean span length (geometric) when unit=span")
    order: Literal["random", "left-to-right"] = Field("random", description="order of spans in part B")
    suffix: bool = Field(False, description="mask one final span of fraction r (prefix LM)")
    score: Literal["auto", "joint", "infill-each"] = Field(
        "auto", description="sentence score: joint = whole sentence as one span (exact "
        "log-likelihood); infill-each = each token infilled alone; auto = joint when suffix or r >= 0.5")


class MaskedAutoregression(Objective):
    description = "masking as autoregression: mask a fraction r, predict the spans autoregressively"
    Options = MaskedAROptions
    special_tokens = ("[S]", "[E]")
    reading_attention = "bidirectional"  # part A, which holds the text, is bidirectional
    pooling = "cls"

    @property
    def score_method(self) -> str:  # type: ignore[override]
        if self._joint_scoring:
            return "exact log-likelihood of the whole sentence infilled as one span, left to right"
        return "infilling log-likelihood: each token infilled alone as a one-token span, batched"

    @property
    def _joint_scoring(self) -> bool:
        o = self.options
        return o.score == "joint" or (o.score == "auto" and (o.suffix or o.r >= 0.5))

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        o = self.options
        B, T = blocks.shape
        quota = max(1, round(o.r * T))
        if o.suffix:
            selected = (torch.arange(T) >= T - quota).expand(B, T)
        else:
            units = unit_ids(blocks, o.unit, self.vocab.word_start, o.mean_span, gen)
            selected = select_units(units, torch.ones_like(blocks, dtype=torch.bool),
                                    torch.full((B,), float(quota)), gen)
        rows = [self._infill_row(blocks[b], selected[b], gen, predict_end=True) for b in range(B)]
        batch = collate(rows, self.vocab["[PAD]"])
        starts = selected & ~torch.nn.functional.pad(selected, (1, 0))[:, :-1]
        batch.stats = {"r_applied": float(selected.float().mean()),
                       "spans_per_row": float(starts.sum() / B)}
        return batch

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        n = tokens.shape[0]
        masks = torch.ones(1, n, dtype=torch.bool) if self._joint_scoring else torch.eye(n, dtype=torch.bool)
        return collate([self._infill_row(tokens, m, None, predict_end=False) for m in masks],
                       self.vocab["[PAD]"])

    def _infill_row(self, tok: torch.Tensor, m: torch.Tensor, gen: torch.Generator | None,
                    predict_end: bool) -> ObjectiveBatch:
        """Parts A and B for one row of clean tokens ``tok`` with masked positions ``m``."""
        v = self.vocab
        T = tok.shape[0]
        idx = torch.arange(T)
        start = m & ~torch.cat([torch.zeros(1, dtype=torch.bool), m[:-1]])
        span_of = start.long().cumsum(0) - 1  # span id, valid where m
        k = int(start.sum())
        span_start = idx[start]

        keep_a = ~m | start  # unmasked tokens, and one [MASK] per span
        a_ids = torch.cat([torch.tensor([v["[CLS]"]]), torch.where(start, v["[MASK]"], tok)[keep_a]])
        a_pos = torch.cat([torch.tensor([0]), (idx + 1)[keep_a]])  # [CLS] sits at 0
        a_src = torch.cat([torch.tensor([-1]), torch.where(m, -1, idx)[keep_a]])

        random_order = self.options.order == "random" and gen is not None
        rank = torch.randperm(k, generator=gen) if random_order else torch.arange(k)
        pos_m = idx[m]
        offset = pos_m - span_start[span_of[pos_m]] + 1  # 1-based place inside its span
        keys = torch.cat([rank * (T + 1), rank[span_of[pos_m]] * (T + 1) + offset])
        order = keys.argsort()
        b_ids = torch.cat([torch.full((k,), v["[S]"]), tok[pos_m]])[order]
        b_src = torch.cat([torch.full((k,), -1), pos_m])[order]
        # [S] sits at its span's first token; a span token at the position after its own
        b_pos = torch.cat([span_start + 1, pos_m + 2])[order]
        next_is_token = torch.cat([b_src[1:] >= 0, torch.tensor([False])])
        end = v["[E]"] if predict_end else IGNORE
        b_tg = torch.where(next_is_token, b_ids.roll(-1), end)
        b_tsrc = torch.where(next_is_token, b_src.roll(-1), -1)

        la, lb = a_ids.shape[0], b_ids.shape[0]
        attn = torch.zeros(la + lb, la + lb, dtype=torch.bool)
        attn[:, :la] = True
        attn[:la, la:] = False
        attn[la:, la:] = torch.tril(torch.ones(lb, lb, dtype=torch.bool))
        return ObjectiveBatch(
            input_ids=torch.cat([a_ids, b_ids])[None],
            targets=torch.cat([torch.full((la,), IGNORE), b_tg])[None],
            attn=attn[None],
            source_index=torch.cat([a_src, b_src])[None],
            target_source=torch.cat([torch.full((la,), -1), b_tsrc])[None],
            position_ids=torch.cat([a_pos, b_pos])[None],
        )
