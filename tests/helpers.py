"""Small builders shared by tests: a vocabulary and a tiny float64 encoder."""

from __future__ import annotations

import torch

from objbench.harness.config import ModelConfig
from objbench.objectives.base import special_tokens
from objbench.harness.model import Encoder
from objbench.harness.registry import OBJECTIVES
from objbench.objectives.base import Vocab

VOCAB_SIZE = 40


def all_specials() -> list[str]:
    extra = [s for name in OBJECTIVES.names() for s in OBJECTIVES.get(name).special_tokens]
    return special_tokens(extra)


def tiny_vocab() -> Vocab:
    specials = all_specials()
    return Vocab(VOCAB_SIZE, {s: i for i, s in enumerate(specials)}, torch.ones(VOCAB_SIZE, dtype=torch.bool))


def make_objective(name: str, **options):
    cls = OBJECTIVES.get(name)
    return cls(cls.Options(**options), tiny_vocab())


def tiny_encoder(seed: int = 0, position: str = "learned") -> Encoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=64, position=position)
    return Encoder(cfg, VOCAB_SIZE).double().eval()


def random_blocks(B: int, T: int, seed: int) -> torch.Tensor:
    n_special = len(all_specials())
    return torch.randint(n_special, VOCAB_SIZE, (B, T), generator=torch.Generator().manual_seed(seed))
