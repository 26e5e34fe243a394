"""Masked diffusion language modelling (MDLM, Sahoo et al. 2024; as in MD4 and LLaDA).

Training: each row draws a masking rate t in (eps, 1]; every non-special token is masked
with probability t and predicted from everything left unmasked (bidirectional attention);
a masked token's cross-entropy weighs 1/t, and the batch's summed loss is divided by its
number of text positions. With the linear schedule (a token is still clean at time t with
probability 1 - t) this is the continuous-time negative ELBO per token, each masked
prediction already carrying the "copy the unmasked tokens" part of MDLM's SUBS
parameterisation: unmasked positions have no loss. ``low_discrepancy`` draws the rows' t in
stratified strata, one per row (MDLM's antithetic sampling), for less variance per step.

Scoring: log p(x) >= ELBO(x) = E_t E_{M ~ Bernoulli(t)^n} [(1/t) sum_{i in M} log p(x_i | x
with M masked)] = sum_{M non-empty} (m - 1)! (n - m)! / n! sum_{i in M} log p(x_i | x without
M) for a sentence of n tokens (the tests enumerate this sum). It is estimated with K rows: row
k draws t in the k-th of K equal strata of (0, 1] and a mask M drawn as Bernoulli(t) per token
but never empty (the first masked token from its truncated geometric law, the later ones
Bernoulli(t)), and weighs its m masked tokens' log-probabilities by (n + 1)(1 - (1 - t)^n) /
(K m). Averaged over t that weight times the mask's probability is exactly the sum's weight
above, so the estimate is unbiased, with no eps cut-off, finite variance (the training weight
1/t has infinite variance near t = 0) and no row wasted on an empty mask. The draws come
from ``score_seed``, so a sentence always gets the same estimate and sentences of equal length
the same masks (the two sentences of a minimal pair share their noise). The softmax runs over
the whole vocabulary; mass the model puts on special tokens only loosens the bound.

``score: pll`` (also a score variant of the default) scores instead by a pseudo-log-likelihood:
each token masked alone and predicted from all the others, the denoiser's conditional at a
single mask. Unlike the bound's terms, each token's term is its loss given the rest of the
sentence, which is what a per-token analysis (the ``context`` task) reads.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from objbench.objectives import draws
from objbench.harness.model import Encoder
from objbench.objectives.base import IGNORE, Objective, ObjectiveBatch, Options, with_cls
from objbench.objectives.mlm import pll_rows
from objbench.objectives.sampling import Sampling, iterative_fill


class MDLMOptions(Options):
    eps: float = Field(1e-3, gt=0.0, lt=1.0, description="smallest masking rate drawn in training "
                       "(MDLM's sampling_eps): the loss weight 1/t stays below 1/eps")
    low_discrepancy: bool = Field(True, description="draw the rows' masking rates in stratified strata "
                                  "of (eps, 1], one per row, instead of independently")
    score_samples: int = Field(16, ge=1, description="K: stratified masking rates (rows) per sentence "
                               "in the ELBO estimate")
    score_seed: int = Field(0, description="seed of the ELBO estimate's draws")
    score: Literal["elbo", "pll"] = Field("elbo", description="sentence score: elbo = the ELBO estimate "
                                          "(a bound); pll = each token masked alone (a pseudo-log-likelihood)")


class MaskedDiffusionLM(Objective):
    description = "masked diffusion LM (MDLM): mask each token with probability t ~ U(eps, 1], weigh 1/t; scored by an ELBO estimate"
    Options = MDLMOptions
    reading_attention = "bidirectional"
    pooling = "cls"
    sampler = ("iterative unmasking: all continuation tokens masked, an equal share revealed at random "
               "per step")

    @property
    def score_kind(self) -> str:  # type: ignore[override]
        return "bound" if self.options.score == "elbo" else "pseudo"

    @property
    def score_method(self) -> str:  # type: ignore[override]
        if self.options.score == "pll":
            return "pseudo-log-likelihood: each token masked alone, all copies batched"
        return (f"ELBO estimate: {self.options.score_samples} stratified masking rates t, each with a "
                f"non-empty Bernoulli(t) mask whose m tokens weigh (n + 1)(1 - (1 - t)^n) / (K m)")

    @property
    def score_variants(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(v for v in ("elbo", "pll") if v != self.options.score)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        o = self.options
        B, T = blocks.shape
        u = draws.rand(gen, B, 1)[:, 0]
        if o.low_discrepancy:  # one stratum of (0, 1] per row of the global batch
            stratum, strata = draws.strata(gen, B)
            u = (stratum + u) / strata
        t = 1 - (1 - o.eps) * u  # in (eps, 1]
        eligible = ~self.vocab.is_special(blocks)
        masked = eligible & (draws.rand(gen, B, T) < t[:, None])
        batch = self._rows(blocks, masked, weight=1 / t)
        batch.normaliser = float(eligible.sum().clamp(min=1))
        batch.stats = {"t_mean": float(t.mean()),
                       "mask_rate_applied": float(masked.sum() / eligible.sum().clamp(min=1))}
        return batch

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        if self.options.score == "pll":
            return pll_rows(tokens, self.vocab)
        n, K = tokens.shape[0], self.options.score_samples
        gen = torch.Generator().manual_seed(self.options.score_seed)
        t = ((torch.arange(K) + torch.rand(K, generator=gen, dtype=torch.float64)) / K).clamp(1e-12, 1 - 1e-12)
        not_empty = 1 - (1 - t) ** n  # probability that a Bernoulli(t) mask is not empty
        # the first masked position, from P(first = i | not empty) = t (1 - t)^i / not_empty
        u = torch.rand(K, generator=gen, dtype=torch.float64)
        first = (torch.log1p(-u * not_empty) / torch.log1p(-t)).floor().long().clamp(0, n - 1)
        later = torch.rand(K, n, generator=gen, dtype=torch.float64) < t[:, None]
        idx = torch.arange(n)
        masked = (idx == first[:, None]) | ((idx > first[:, None]) & later)
        m = masked.sum(1)
        return self._rows(tokens.expand(K, n), masked, weight=(n + 1) * not_empty / (K * m))

    def _rows(self, tokens: torch.Tensor, masked: torch.Tensor, weight: torch.Tensor) -> ObjectiveBatch:
        """``[CLS]`` then ``tokens`` (R, T) with ``masked`` replaced by ``[MASK]``; a target at each
        masked token, weighted by its row's ``weight`` (R,)."""
        R, T = tokens.shape
        idx = torch.arange(T).expand(R, T)
        none = torch.full((R, 1), -1)
        return ObjectiveBatch(
            input_ids=with_cls(torch.where(masked, self.vocab["[MASK]"], tokens), self.vocab["[CLS]"]),
            targets=torch.cat([torch.full((R, 1), IGNORE), torch.where(masked, tokens, IGNORE)], 1),
            attn="bidirectional",
            source_index=torch.cat([none, torch.where(masked, -1, idx)], 1),
            target_source=torch.cat([none, torch.where(masked, idx, -1)], 1),
            weights=torch.cat([torch.zeros(R, 1), torch.where(masked, weight[:, None].float(), 0.0)], 1),
        )

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        return iterative_fill(encoder, prompts, length, how, gen, self.vocab, remask=False)
