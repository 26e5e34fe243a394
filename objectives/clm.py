"""Causal (left-to-right) language modelling."""

from __future__ import annotations

import torch

from objbench.harness.model import Encoder
from objbench.objectives.base import Objective, ObjectiveBatch, with_cls
from objbench.objectives.sampling import Sampling, draw


class CausalLM(Objective):
    description = "causal LM: position i predicts token i+1 under causal attention"
    reading_attention = "causal"
    pooling = "last"  # under causal attention only the last position has seen the sentence
    score_kind = "exact"
    score_method = "exact log-likelihood: sum of next-token log-probabilities"
    sampler = "left to right, one token per step"

    def _rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        B, T = tokens.shape
        idx = torch.arange(T).expand(B, T)
        return ObjectiveBatch(
            input_ids=with_cls(tokens[:, :-1], self.vocab["[CLS]"]),  # [CLS] predicts t1
            targets=tokens,
            attn="causal",
            source_index=torch.cat([torch.full((B, 1), -1), idx[:, :-1]], 1),
            target_source=idx,
        )

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        return self._rows(blocks)

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        return self._rows(tokens[None])

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        seq = prompts
        for _ in range(length):
            hidden = encoder(with_cls(seq, self.vocab["[CLS]"]), "causal")[:, -1]
            token, _ = draw(encoder.logits(hidden), how, gen, self.vocab)
            seq = torch.cat([seq, token[:, None]], 1)
        return seq[:, prompts.shape[1]:]
