"""Sampling continuations from a trained encoder: the pieces objectives' samplers are made of.

An objective that can generate declares a one-line ``sampler`` and implements
`Objective.sample`; these helpers draw tokens (temperature, nucleus) and run the two iterative
samplers that masked models use: masked diffusion's unmasking (revealed tokens are final) and
mask-predict (Ghazvininejad et al. 2019: every step re-masks the least confident tokens).
All randomness comes from the generator handed in, so a seed gives the same samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from objbench.harness.model import Encoder
from objbench.objectives.base import Vocab, with_cls


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn: ``temperature`` divides the logits, ``top_p`` keeps the smallest
    set of tokens holding that much probability (1 = all), ``steps`` bounds iterative samplers."""

    temperature: float = 1.0
    top_p: float = 1.0
    steps: int = 16


def draw(logits: torch.Tensor, how: Sampling, gen: torch.Generator, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` ``(N, V)``, never a special token, and the probability
    the (tempered, truncated) distribution gave it."""
    logits = logits.float() / how.temperature
    logits[:, vocab.special_ids.to(logits.device)] = -math.inf
    probs = torch.softmax(logits, -1)
    if how.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= how.top_p  # the tokens after the nucleus is full
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(outside, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    tokens = torch.multinomial(probs.cpu(), 1, generator=gen)[:, 0].to(logits.device)
    return tokens, probs.gather(-1, tokens[:, None])[:, 0]


def iterative_fill(encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling, gen: torch.Generator,
                   vocab: Vocab, remask: bool, shift: int = 0) -> torch.Tensor:
    """Continuations ``(B, length)`` of ``prompts`` ``(B, N)`` from ``length`` ``[MASK]`` tokens
    after the prompt, read bidirectionally, in ``how.steps`` steps. Without ``remask`` (masked
    diffusion) each step reveals an equal share of the masked positions, chosen at random, and
    a revealed token stays; with ``remask`` (mask-predict) each step predicts every masked
    position, then masks again the least confident of all, fewer each step. A masked token is
    predicted ``shift`` positions from its own (MNTP: -1, from the position before it)."""
    B, N = prompts.shape
    start = N + 1 + shift  # +1: the [CLS] in front
    seq = torch.cat([prompts, torch.full((B, length), vocab["[MASK]"], device=prompts.device)], 1)
    masked = torch.ones(B, length, dtype=torch.bool, device=prompts.device)
    confidence = torch.zeros(B, length, device=prompts.device)
    for step in range(how.steps):
        hidden = encoder(with_cls(seq, vocab["[CLS]"]), "bidirectional")[:, start:start + length]
        tokens, probs = draw(encoder.logits(hidden[masked]), how, gen, vocab)
        if remask:
            seq[:, N:][masked], confidence[masked] = tokens, probs
            keep_masked = length * (how.steps - 1 - step) // how.steps
            masked = torch.zeros_like(masked).scatter(1, confidence.argsort(1)[:, :keep_masked], True)
        else:
            reveal = math.ceil(int(masked[0].sum()) / (how.steps - step))
            keys = torch.rand(B, length, generator=gen).to(prompts.device).masked_fill(~masked, 2.0)
            chosen = torch.zeros_like(masked).scatter(1, keys.argsort(1)[:, :reveal], True)
            drawn = torch.full_like(seq[:, N:], vocab["[MASK]"])
            drawn[masked] = tokens
            seq[:, N:] = torch.where(chosen, drawn, seq[:, N:])
            masked = masked & ~chosen
        seq[:, N:] = seq[:, N:].masked_fill(masked, vocab["[MASK]"])
        if not masked.any():
            break
    return seq[:, N:]
