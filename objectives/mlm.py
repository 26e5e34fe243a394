"""BERT-style masked language modelling."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from objbench.objectives import draws
from objbench.objectives.base import IGNORE, Objective, ObjectiveBatch, Options, Vocab, with_cls
from objbench.harness.model import Encoder
from objbench.objectives.masking import later_in_word, select_units, unit_ids
from objbench.objectives.sampling import Sampling, iterative_fill


class MLMOptions(Options):
    mask_rate: float = Field(0.15, gt=0.0, le=1.0, description="fraction of non-special tokens selected")
    p_mask: float = Field(0.8, ge=0.0, le=1.0, description="of selected: replaced by [MASK]")
    p_random: float = Field(0.1, ge=0.0, le=1.0, description="of selected: replaced by a random token")
    p_keep: float = Field(0.1, ge=0.0, le=1.0, description="of selected: left unchanged")
    unit: Literal["token", "word", "span"] = Field("token", description="what is masked as a whole")
    mean_span: float = Field(3.0, ge=1.0, description="mean span length when unit=span (geometric)")
    score: Literal["pll", "pll-word-l2r"] = Field(
        "pll", description="sentence score: pll = each token masked alone; pll-word-l2r = each token masked "
        "with the later sub-tokens of its word (Kauf & Ivanova 2023: plain PLL over-rates multi-token words)")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "MLMOptions":
        total = self.p_mask + self.p_random + self.p_keep
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"p_mask + p_random + p_keep must be 1 (got {total:g})")
        return self


def pll_rows(tokens: torch.Tensor, vocab: Vocab, word_l2r: bool = False) -> ObjectiveBatch:
    """Pseudo-log-likelihood rows of one sentence ``(n,)``: row i is the sentence behind ``[CLS]``
    with token i replaced by ``[MASK]`` (and, with ``word_l2r``, the later sub-tokens of its
    word too), token i its one target. Any model that predicts masked tokens from the rest can
    be scored by them."""
    n = tokens.shape[0]
    rows = tokens.expand(n, n).clone()
    diag = torch.eye(n, dtype=torch.bool)
    idx = torch.arange(n).expand(n, n)
    minus = torch.full((n, 1), -1)
    hidden = diag | later_in_word(tokens, vocab.word_start) if word_l2r else diag
    return ObjectiveBatch(
        input_ids=with_cls(torch.where(hidden, vocab["[MASK]"], rows), vocab["[CLS]"]),
        targets=torch.cat([torch.full((n, 1), IGNORE), torch.where(diag, rows, IGNORE)], 1),
        attn="bidirectional",
        source_index=torch.cat([minus, torch.where(hidden, -1, idx)], 1),
        target_source=torch.cat([minus, torch.where(diag, idx, -1)], 1),
    )


class MaskedLM(Objective):
    description = "BERT-style masked LM: predict selected tokens from bidirectional context"
    Options = MLMOptions
    reading_attention = "bidirectional"
    pooling = "cls"
    score_kind = "pseudo"
    sampler = ("mask-predict: all continuation tokens masked and predicted, the least confident masked "
               "again, for `steps` steps")

    @property
    def score_method(self) -> str:  # type: ignore[override]
        if self.options.score == "pll-word-l2r":
            return ("pseudo-log-likelihood, word left to right: each token masked in turn with the later "
                    "sub-tokens of its word, all copies batched")
        return "pseudo-log-likelihood: each token masked in turn, all copies batched"

    @property
    def score_variants(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(v for v in ("pll", "pll-word-l2r") if v != self.options.score)

    @property
    def sees_own_target(self) -> bool:  # type: ignore[override]
        return self.options.p_keep > 0

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        o, v = self.options, self.vocab
        B, T = blocks.shape
        eligible = ~v.is_special(blocks)
        n_eligible = eligible.sum(1)
        quota = torch.round(n_eligible * o.mask_rate).clamp(min=1)
        units = unit_ids(blocks, o.unit, v.word_start, o.mean_span, gen)
        selected = select_units(units, eligible, quota, gen)

        u = draws.rand(gen, B, T)
        to_mask = selected & (u < o.p_mask)
        to_random = selected & (u >= o.p_mask) & (u < o.p_mask + o.p_random)
        kept = selected & ~to_mask & ~to_random
        corrupted = torch.where(to_mask, v["[MASK]"], torch.where(to_random, v.random_tokens((B, T), gen), blocks))

        idx = torch.arange(T).expand(B, T)
        minus = torch.full((B, 1), -1)
        n_sel = max(int(selected.sum()), 1)
        return ObjectiveBatch(
            input_ids=with_cls(corrupted, v["[CLS]"]),
            targets=torch.cat([torch.full((B, 1), IGNORE), torch.where(selected, blocks, IGNORE)], 1),
            attn="bidirectional",
            source_index=torch.cat([minus, torch.where(selected & ~kept, -1, idx)], 1),
            target_source=torch.cat([minus, torch.where(selected, idx, -1)], 1),
            stats={
                "mask_rate_applied": float(selected.sum() / n_eligible.sum().clamp(min=1)),
                "p_mask_applied": float(to_mask.sum()) / n_sel,
                "p_random_applied": float(to_random.sum()) / n_sel,
                "p_keep_applied": float(kept.sum()) / n_sel,
            },
        )

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        return pll_rows(tokens, self.vocab, word_l2r=self.options.score == "pll-word-l2r")

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        return iterative_fill(encoder, prompts, length, how, gen, self.vocab, remask=True)
