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

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field

from objbench.objectives import draws
from objbench.harness.model import Encoder
from objbench.objectives.base import IGNORE, Objective, ObjectiveBatch, Options
from objbench.objectives.masking import later_in_word, select_units, unit_ids
from objbench.objectives.sampling import Sampling, draw


class MaskedAROptions(Options):
    r: float = Field(0.15, gt=0.0, le=1.0, description="fraction of tokens masked and predicted")
    unit: Literal["token", "span"] = Field("span", description="mask single tokens or spans")
    mean_span: float = Field(3.0, ge=1.0, description="mean span length (geometric) when unit=span")
    order: Literal["random", "left-to-right"] = Field("random", description="order of spans in part B")
    suffix: bool = Field(False, description="mask one final span of fraction r (prefix LM)")
    score: Literal["auto", "joint", "infill-each", "pll-word-l2r"] = Field(
        "auto", description="sentence score: joint = whole sentence as one span (exact "
        "log-likelihood); infill-each = each token infilled alone; pll-word-l2r = each token infilled "
        "first in a span running to its word's end (Kauf & Ivanova 2023); auto = joint when suffix or r >= 0.5, "
        "else infill-each")


class MaskedAutoregression(Objective):
    description = "masking as autoregression: mask a fraction r, predict the spans autoregressively"
    Options = MaskedAROptions
    special_tokens = ("[S]", "[E]")
    sampler = "suffix infilling: the continuation is one masked span, infilled left to right"

    @property
    def reading_attention(self) -> str:  # type: ignore[override]
        # part A, which holds the text, is bidirectional; at r = 1 it holds none (causal LM)
        return "causal" if self.options.r == 1.0 else "bidirectional"

    @property
    def pooling(self) -> str:  # type: ignore[override]
        return "last" if self.options.r == 1.0 else "cls"

    @property
    def score_kind(self) -> str:  # type: ignore[override]
        return "exact" if self._joint_scoring else "pseudo"

    @property
    def score_method(self) -> str:  # type: ignore[override]
        if self._joint_scoring:
            return "exact log-likelihood of the whole sentence infilled as one span, left to right"
        if self.options.score == "pll-word-l2r":
            return ("infilling log-likelihood, word left to right: each token infilled first in a span "
                    "running to its word's end, batched")
        return "infilling log-likelihood: each token infilled alone as a one-token span, batched"

    @property
    def score_variants(self) -> tuple[str, ...]:  # type: ignore[override]
        # the word variant of the pseudo-log-likelihood; an exact score has none
        if self._joint_scoring:
            return ()
        return ("infill-each",) if self.options.score == "pll-word-l2r" else ("pll-word-l2r",)

    @property
    def _joint_scoring(self) -> bool:
        o = self.options
        return o.score == "joint" or (o.score == "auto" and (o.suffix or o.r >= 0.5))

    def positions_needed(self, n_tokens: int) -> int:
        # part B puts a span's last token at the position after its own: up to n + 1
        return n_tokens + 2

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
        batch = self._infill(blocks, selected, gen, predict_end=True)
        starts = selected & ~F.pad(selected, (1, 0))[:, :-1]
        batch.stats = {"r_applied": float(selected.float().mean()),
                       "spans_per_row": float(starts.sum() / B)}
        return batch

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        n = tokens.shape[0]
        if self._joint_scoring:
            return self._infill(tokens.expand(1, n), torch.ones(1, n, dtype=torch.bool), None, predict_end=False)
        masks = torch.eye(n, dtype=torch.bool)
        if self.options.score == "pll-word-l2r":  # row i infills i to its word's end; only i is scored
            masks |= later_in_word(tokens, self.vocab.word_start)
        rows = self._infill(tokens.expand(n, n), masks, None, predict_end=False)
        own = rows.target_source == torch.arange(n)[:, None]
        rows.targets = torch.where(own, rows.targets, IGNORE)
        rows.target_source = torch.where(own, rows.target_source, -1)
        return rows

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        B, N = prompts.shape
        seq = torch.cat([prompts, torch.full((B, length), self.vocab["[PAD]"])], 1)  # the span, filled as drawn
        span = (torch.arange(N + length) >= N).expand(B, -1)
        for j in range(length):  # part B is causal: the placeholders after token j never reach it
            rows = self._infill(seq, span, None, predict_end=False)
            hidden = encoder(rows.input_ids, rows.attn, rows.position_ids, rows.segment_ids)
            at = rows.target_source == N + j  # the part-B position that predicts token j: one per row
            seq[:, N + j], _ = draw(encoder.logits(hidden[at]), how, gen, self.vocab)
        return seq[:, N:]

    def _infill(self, tok: torch.Tensor, m: torch.Tensor, gen: torch.Generator | None,
                predict_end: bool) -> ObjectiveBatch:
        """Parts A and B for rows of clean tokens ``tok (R, T)`` with masked positions ``m``.

        Row r is ``[part A | part B | padding]``; padded positions attend only to themselves.
        Batched over rows: the only per-row work is drawing each row's span order, from the
        row's own generator when it has one (`draws.row`).
        """
        start = m & ~F.pad(m, (1, 0))[:, :-1]  # first position of each span
        part_a = self._part_a(tok, m, start)
        span_rank = self._span_ranks(start, gen)
        return _lay_out(part_a, self._part_b(tok, m, start, span_rank, predict_end), self.vocab["[PAD]"])

    def _span_ranks(self, start: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """``(R, T)``: at each masked position, the place of its span in part B."""
        R, T = start.shape
        span_of = (start.long().cumsum(1) - 1).clamp(min=0)  # span id, valid where masked
        random_order = self.options.order == "random" and gen is not None
        rank = torch.zeros(R, T, dtype=torch.long)  # rank[r, s]: place of span s in part B
        for r, n in enumerate(start.sum(1).tolist()):
            rank[r, :n] = torch.randperm(n, generator=draws.row(gen, r)) if random_order else torch.arange(n)
        return rank.gather(1, span_of)

    def _part_a(self, tok: torch.Tensor, m: torch.Tensor, start: torch.Tensor) -> _Part:
        """[CLS], then the unmasked tokens and one [MASK] per span, in text order."""
        v = self.vocab
        R, T = tok.shape
        idx = torch.arange(T).expand(R, T)
        keep = F.pad(~m | start, (1, 0), value=True)
        ids = torch.cat([torch.full((R, 1), v["[CLS]"]), torch.where(start, v["[MASK]"], tok)], 1)
        pos = torch.cat([torch.zeros(R, 1, dtype=torch.long), idx + 1], 1)  # [CLS] sits at 0
        src = torch.cat([torch.full((R, 1), -1), torch.where(m, -1, idx)], 1)
        length = keep.sum(1)
        order = (~keep).long().argsort(dim=1, stable=True)[:, : int(length.max())]  # kept first, in order
        ids, pos, src = (t.gather(1, order) for t in (ids, pos, src))
        no_targets = torch.full_like(ids, IGNORE)
        return _Part(ids, pos, src, no_targets, torch.full_like(ids, -1), length)

    def _part_b(self, tok: torch.Tensor, m: torch.Tensor, start: torch.Tensor, span_rank: torch.Tensor,
                predict_end: bool) -> _Part:
        """Spans in rank order, each an [S] then its tokens left to right, predicting the next
        token of the span (and [E] after its last one when ``predict_end``)."""
        v = self.vocab
        R, T = tok.shape
        idx = torch.arange(T).expand(R, T)
        span_start = torch.where(start, idx, -1).cummax(1).values  # first position of p's span
        # candidates are an [S] at every span start and every masked token
        key = torch.cat([span_rank * (T + 1), span_rank * (T + 1) + idx - span_start + 1], 1)
        key = key.masked_fill(~torch.cat([start, m], 1), (T + 1) ** 2)  # not a candidate: last
        length = start.sum(1) + m.sum(1)
        order = key.argsort(dim=1, stable=True)[:, : int(length.max())]
        ids = torch.cat([torch.full((R, T), v["[S]"]), tok], 1).gather(1, order)
        src = torch.cat([torch.full((R, T), -1), idx], 1).gather(1, order)
        # [S] sits at its span's first token; a span token at the position after its own
        pos = torch.cat([idx + 1, idx + 2], 1).gather(1, order)
        width = order.shape[1]
        next_is_token = F.pad(src[:, 1:] >= 0, (0, 1), value=False) & (torch.arange(width) + 1 < length[:, None])
        targets = torch.where(next_is_token, ids.roll(-1, 1), v["[E]"] if predict_end else IGNORE)
        target_src = torch.where(next_is_token, src.roll(-1, 1), -1)
        return _Part(ids, pos, src, targets, target_src, length)


class _Part(NamedTuple):
    """One part of an infilling row, left-aligned: per column its token, position, clean
    source index, target and the target's clean source; ``length`` per row."""

    ids: torch.Tensor
    pos: torch.Tensor
    src: torch.Tensor
    targets: torch.Tensor
    target_src: torch.Tensor
    length: torch.Tensor


def _lay_out(a: _Part, b: _Part, pad_id: int) -> ObjectiveBatch:
    """Rows ``[A | B | padding]``: A is bidirectional, B sees all of A and causally itself;
    padding attends only to itself."""
    R = a.ids.shape[0]
    n_row = a.length + b.length
    L = int(n_row.max())
    col = torch.arange(L).expand(R, L)
    in_a, in_b = col < a.length[:, None], (col >= a.length[:, None]) & (col < n_row[:, None])
    a_col = col.clamp(max=a.ids.shape[1] - 1)
    b_col = (col - a.length[:, None]).clamp(0, b.ids.shape[1] - 1)

    def place(a_vals: torch.Tensor, b_vals: torch.Tensor, pad: int) -> torch.Tensor:
        return torch.where(in_a, a_vals.gather(1, a_col), torch.where(in_b, b_vals.gather(1, b_col), pad))

    q, k = col[:, :, None], col[:, None, :]
    la, n = a.length[:, None, None], n_row[:, None, None]
    attn = (q < n) & (k < n) & ((k < la) | ((q >= la) & (k >= la) & (k <= q)))
    return ObjectiveBatch(
        input_ids=place(a.ids, b.ids, pad_id),
        targets=place(a.targets, b.targets, IGNORE),
        attn=attn | ((q >= n) & (q == k)),
        source_index=place(a.src, b.src, -1),
        target_source=place(a.target_src, b.target_src, -1),
        position_ids=place(a.pos, b.pos, 0),
        segment_ids=torch.zeros(R, L, dtype=torch.long),
    )
