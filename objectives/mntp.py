"""Masked next-token prediction (MNTP; LLM2Vec, GPT-BERT): BERT's masking, GPT's shift.

The input is masked exactly as `mlm` masks it (`mask_rate` of the non-special tokens
selected, then ``[MASK]`` / a random token / kept, 80/10/10 by default), under bidirectional
attention; the token selected at clean index k is predicted from the position before it
(``[CLS]`` for the first token), so every prediction is made one step to the left of the
token, as a causal LM makes it. Sentences are read by mean pooling, as LLM2Vec reads MNTP
models, and scored by a pseudo-log-likelihood with the same shift.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from objbench.harness.model import Encoder
from objbench.objectives.base import IGNORE, ObjectiveBatch
from objbench.objectives.mlm import MaskedLM
from objbench.objectives.sampling import Sampling, iterative_fill


def shift_targets(batch: ObjectiveBatch) -> ObjectiveBatch:
    """The batch with every target (and its source and weight) moved one position to the left.
    The first position of an `mlm` row is ``[CLS]``, which never holds a target, so none is lost."""
    if (batch.targets[:, 0] != IGNORE).any():
        raise ValueError("a target at position 0 has no position before it")
    left = lambda t, fill: F.pad(t[:, 1:], (0, 1), value=fill)  # noqa: E731
    return replace(batch, targets=left(batch.targets, IGNORE), target_source=left(batch.target_source, -1),
                   weights=None if batch.weights is None else left(batch.weights, 0.0))


class MaskedNextTokenPrediction(MaskedLM):
    description = "masked next-token prediction (LLM2Vec): mlm's masking, token k predicted at the position before it"
    pooling = "mean"
    score_kind = "pseudo"
    sampler = ("mask-predict as mlm's, each masked token predicted at the position before it, for "
               "`steps` steps")

    @property
    def score_method(self) -> str:  # type: ignore[override]
        return f"{super().score_method}, each predicted from the position before it"

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        return shift_targets(super().make_batch(blocks, gen))

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        return shift_targets(super().score_rows(tokens))

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        return iterative_fill(encoder, prompts, length, how, gen, self.vocab, remask=True, shift=-1)
