"""Right-to-left language modelling (the backward half of ELMo), as a third-party objective.

It lives outside objbench and registers through the ``objbench.objectives`` entry point; it
gets objbench's contract and leakage tests for free.
"""

from __future__ import annotations

import torch

from objbench.objectives.base import Objective, ObjectiveBatch


class ReverseCausalLM(Objective):
    description = "right-to-left LM: position i sees tokens i+1.. and predicts token i"
    reading_attention = "anticausal"  # as trained: each position sees itself and what follows
    pooling = "cls"  # position 0 then sees the whole sentence
    score_kind = "exact"
    score_method = "exact right-to-left log-likelihood"

    def _rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        B, T = tokens.shape
        # input t2 .. tT [SEP]: position p shows t_{p+2} and predicts t_{p+1} from its right
        sep = torch.full((B, 1), self.vocab["[SEP]"])
        idx = torch.arange(T).expand(B, T)
        anti_causal = torch.triu(torch.ones(T, T, dtype=torch.bool)).expand(B, T, T)
        return ObjectiveBatch(
            input_ids=torch.cat([tokens[:, 1:], sep], 1),
            targets=tokens,
            attn=anti_causal,
            source_index=torch.cat([idx[:, 1:], torch.full((B, 1), -1)], 1),
            target_source=idx,
        )

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        return self._rows(blocks)

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        return self._rows(tokens[None])
