"""ELECTRA (Clark et al. 2020): replaced-token detection against a small generator.

A generator, a narrower copy of the encoder (``generator_width`` of its hidden size,
feed-forward size and heads, all of its layers, its own embeddings), is trained with MLM on
``mask_rate`` of the non-special tokens, all replaced by ``[MASK]``. Its samples (temperature
1, never a special token, no gradient through the sampling) replace the masked tokens, and
the encoder under study, the discriminator, predicts through a binary head at every
non-special position whether the token there was replaced (a sample equal to the original
counts as original). Loss = generator MLM loss per masked token + ``disc_weight`` x the
discriminator's sigmoid cross-entropy per position (50, as in the paper): the batch is
normalised by its text positions, and each masked token's generator loss is weighted by its
row's text positions over its masked count, which makes the generator term its per-row mean
over masked tokens. Features are read from the discriminator; there is no sentence score (a
discriminator has no likelihood). The generator's FLOPs count in the budget, so FLOPs-matched
studies charge ELECTRA for it.

The sampling is reproducible: `make_batch` draws one uniform number per position from the
step's generator, and the loss turns it into a sample by inverting the generator's
cumulative distribution. Unlike the reference code, which leaves 15% of the selected tokens
unmasked for the generator, every selected token is masked, so the discriminator never sees
a selected token's original through the generator (the leakage contract checks this).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from objbench.harness.config import ModelConfig
from objbench.harness.flops import train_flops
from objbench.harness.model import Encoder, query_rows
from objbench.objectives import draws
from objbench.objectives.base import IGNORE, Loss, Objective, ObjectiveBatch, Options, Predictions
from objbench.objectives.mlm import MaskedLM, MLMOptions


class ElectraOptions(Options):
    mask_rate: float = Field(0.15, gt=0.0, le=1.0, description="fraction of non-special tokens the generator fills")
    unit: Literal["token", "word", "span"] = Field("token", description="what is masked as a whole")
    mean_span: float = Field(3.0, ge=1.0, description="mean span length when unit=span (geometric)")
    generator_width: float = Field(0.25, gt=0.0, le=1.0, description="generator hidden and feed-forward "
                                   "size as a fraction of the encoder's (the paper finds 1/4 to 1/2 best)")
    disc_weight: float = Field(50.0, gt=0.0, description="lambda: weight of the discriminator's loss")


def generator_config(model: ModelConfig, width: float) -> ModelConfig:
    """The encoder's config narrowed to ``width``: as many layers, heads of the same size where
    the width allows (ELECTRA's rule), hidden and feed-forward sizes of at least 8."""
    d = max(8, round(model.d_model * width))
    heads = max(1, d // (model.d_model // model.n_heads))
    while d % heads:
        heads -= 1
    return model.model_copy(update={"d_model": d, "n_heads": heads, "d_ff": max(8, round(model.d_ff * width))})


def binary_head(d_model: int) -> nn.Module:
    """ELECTRA's discriminator head: dense + GELU, then one logit per position."""
    head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
    head.apply(Encoder._init)
    return head


def sample(logits: torch.Tensor, uniform: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One token per row of ``logits`` (N, V) from softmax(logits) restricted to ``allowed`` (V,),
    by inverting the cumulative distribution at ``uniform`` (N,) in [0, 1)."""
    probs = torch.softmax(logits.double().masked_fill(~allowed, float("-inf")), -1)
    cdf = probs.cumsum(-1)
    picked = torch.searchsorted(cdf, (uniform.double() * cdf[:, -1])[:, None], right=True)[:, 0]
    return picked.clamp(max=logits.shape[1] - 1)


class Electra(Objective):
    description = "ELECTRA: a small MLM generator fills masked tokens; the encoder detects replaced tokens at every position"
    Options = ElectraOptions
    reading_attention = "bidirectional"
    pooling = "cls"
    score_kind = "none"
    score_method = "none: a replaced-token detector has no likelihood"

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        o, v = self.options, self.vocab
        masking = MLMOptions(mask_rate=o.mask_rate, p_mask=1.0, p_random=0.0, p_keep=0.0, unit=o.unit,
                             mean_span=o.mean_span)
        batch = MaskedLM(masking, v).make_batch(blocks, gen)
        masked = batch.targets != IGNORE
        text = F.pad(~v.is_special(blocks), (1, 0), value=False)  # the discriminator's positions
        per_row = text.sum(1) / masked.sum(1).clamp(min=1)
        batch.weights = torch.where(masked, per_row[:, None], 0.0)
        batch.normaliser = float(text.sum().clamp(min=1))
        batch.extra = {"uniform": draws.rand(gen, *batch.targets.shape), "text": text}
        batch.stats = {"mask_rate_applied": batch.stats["mask_rate_applied"]}
        return batch

    def build_modules(self, model: ModelConfig, vocab_size: int) -> dict[str, nn.Module]:
        return {"generator": Encoder(generator_config(model, self.options.generator_width), vocab_size),
                "head": binary_head(model.d_model)}

    def _forward(self, encoder: Encoder, modules: nn.ModuleDict, batch: ObjectiveBatch):
        """Generator logits at the masked positions, discriminator logits at the text positions,
        and whether each text position's token was replaced."""
        masked, text = batch.targets != IGNORE, batch.extra["text"]
        generator = modules["generator"]
        hidden = generator(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids, at=masked)
        gen_logits = generator.logits(hidden)
        gen_logits = gen_logits.to(torch.promote_types(gen_logits.dtype, torch.float32))
        allowed = ~self.vocab.is_special(torch.arange(self.vocab.size, device=gen_logits.device))
        with torch.no_grad():
            sampled = sample(gen_logits, batch.extra["uniform"][masked], allowed)
        corrupted = batch.input_ids.masked_scatter(masked, sampled)
        replaced = masked & (corrupted != batch.targets)
        hidden = encoder(corrupted, batch.attn, batch.position_ids, batch.segment_ids, at=text)
        disc_logits = modules["head"](hidden)[:, 0]
        return gen_logits, disc_logits.to(torch.promote_types(disc_logits.dtype, torch.float32)), replaced[text]

    def loss(self, encoder: Encoder, modules: nn.ModuleDict, batch: ObjectiveBatch) -> Loss:
        masked = batch.targets != IGNORE
        gen_logits, disc_logits, replaced = self._forward(encoder, modules, batch)
        gen = F.cross_entropy(gen_logits, batch.targets[masked], reduction="none")
        disc = F.binary_cross_entropy_with_logits(disc_logits, replaced.to(disc_logits.dtype), reduction="sum")
        summed = (gen * batch.weights[masked]).sum() + self.options.disc_weight * disc
        n_masked, n_text = float(masked.sum()), float(len(replaced))
        correct = float(((disc_logits > 0) == replaced).sum())
        return Loss(summed, {"generator_loss": (float(gen.detach().sum()), n_masked),
                             "discriminator_loss": (float(disc.detach()), n_text),
                             "discriminator_acc": (correct, n_text),
                             "replaced_rate": (float(replaced.sum()), n_masked)})

    def predictions(self, encoder: Encoder, modules: nn.ModuleDict, batch: ObjectiveBatch) -> list[Predictions]:
        masked, text = batch.targets != IGNORE, batch.extra["text"]
        gen_logits, disc_logits, _ = self._forward(encoder, modules, batch)
        # a replaced-token label must not see the original of a masked token; elsewhere it hides none
        hidden_original = torch.where(masked, batch.target_source, -1)[text]
        return [Predictions("token", masked, gen_logits, batch.target_source[masked]),
                Predictions("replaced", text, disc_logits[:, None], hidden_original)]

    def count_targets(self, batch: ObjectiveBatch) -> int:
        """The generator's masked tokens and the discriminator's text positions."""
        return batch.n_targets + int(batch.extra["text"].sum())

    def flops(self, model: ModelConfig, vocab_size: int, batch: ObjectiveBatch) -> float:
        """Generator (sparse last block, LM head at the masked tokens), discriminator (every
        position, no LM head) and its binary head at the text positions; each 3x forward, each
        row counted as it runs alone (`Objective.flops`)."""
        generator = generator_config(model, self.options.generator_width)
        pad = self.vocab["[PAD]"]

        def row_flops(row: ObjectiveBatch) -> float:
            masked, text = row.targets != IGNORE, row.extra["text"]
            T = row.input_ids.shape[1]
            gen_rows, disc_rows = query_rows(masked), query_rows(text)
            return (train_flops(generator, vocab_size, 1, T, int(masked.sum()),
                                None if gen_rows is None else gen_rows.shape[1])
                    + train_flops(model, vocab_size, 1, T, 0, None if disc_rows is None else disc_rows.shape[1])
                    + 3 * 2 * (model.d_model * model.d_model + model.d_model) * int(text.sum()))

        return sum(row_flops(batch.row(b, pad)) for b in range(batch.input_ids.shape[0]))
