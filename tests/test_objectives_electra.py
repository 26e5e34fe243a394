"""ELECTRA: the generator's size, its sampling, the replaced-token labels, the loss's two
terms, and the leakage contract holding the discriminator's labels too."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from objbench.harness.config import ModelConfig
from objbench.harness.registry import OBJECTIVES
from objbench.objectives.base import IGNORE
from objbench.objectives.contract import check_objective, tiny_models
from objbench.objectives.electra import Electra, generator_config, sample
from tests.helpers import make_objective, random_blocks


def test_the_generator_is_the_encoder_narrowed_with_heads_of_the_same_size():
    base = ModelConfig(d_model=256, n_layers=4, n_heads=4, d_ff=1024)
    quarter, half = generator_config(base, 0.25), generator_config(base, 0.5)
    assert (quarter.d_model, quarter.n_heads, quarter.d_ff, quarter.n_layers) == (64, 1, 256, 4)
    assert (half.d_model, half.n_heads, half.d_ff) == (128, 2, 512)
    assert generator_config(ModelConfig(d_model=16, n_heads=2, d_ff=32), 0.25).d_model == 8  # at least 8


def test_sampling_follows_the_softmax_over_ordinary_tokens():
    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(0)).expand(60000, 12)
    allowed = torch.arange(12) >= 3  # the first three ids are specials
    drawn = sample(logits, torch.rand(60000, generator=torch.Generator().manual_seed(1)), allowed)
    assert drawn.min() >= 3
    want = torch.softmax(logits[0].masked_fill(~allowed, float("-inf")), -1)
    got = torch.bincount(drawn, minlength=12) / 60000
    assert torch.all((got - want).abs() < 4 * torch.sqrt(want * (1 - want) / 60000) + 1e-9)


def test_loss_is_generator_mlm_per_masked_token_plus_lambda_times_bce_per_position():
    obj = make_objective("electra", mask_rate=0.25)
    encoder, modules = tiny_models(obj)
    batch = obj.make_batch(random_blocks(6, 16, seed=2), torch.Generator().manual_seed(3))
    masked, text = batch.targets != IGNORE, batch.extra["text"]
    gen_logits, disc_logits, replaced = obj._forward(encoder, modules, batch)
    gen = F.cross_entropy(gen_logits, batch.targets[masked])  # mean over masked tokens (rows are equal)
    disc = F.binary_cross_entropy_with_logits(disc_logits, replaced.double())  # mean over text positions
    loss = obj.loss(encoder, modules, batch)
    torch.testing.assert_close(loss.summed / batch.loss_normaliser, gen + 50.0 * disc, rtol=1e-12, atol=1e-12)
    assert batch.loss_normaliser == text.sum() == 6 * 16 and obj.count_targets(batch) == 6 * 16 + masked.sum()
    assert loss.logs["discriminator_loss"][1] == 6 * 16 and loss.logs["generator_loss"][1] == masked.sum()


def test_a_sample_equal_to_the_original_counts_as_original():
    obj = make_objective("electra", mask_rate=0.5)
    encoder, modules = tiny_models(obj)
    batch = obj.make_batch(random_blocks(4, 10, seed=4), torch.Generator().manual_seed(5))
    masked = batch.targets != IGNORE
    token = int(batch.targets[masked][0])
    batch.targets[masked] = token  # the same original at every masked position
    generator = modules["generator"]
    with torch.no_grad():  # a generator whose every sample is that token
        generator.tok.weight.zero_()
        generator.head_bias.fill_(-1e4)
        generator.head_bias[token] = 0.0
    _, _, replaced = obj._forward(encoder, modules, batch)
    assert masked.sum() > 4 and not replaced.any()
    with torch.no_grad():
        generator.head_bias[token] = -2e4  # now never that token: every masked position is replaced
    _, _, replaced = obj._forward(encoder, modules, batch)
    assert torch.equal(replaced, masked[batch.extra["text"]])


class PeekingElectra(Electra):
    """A bug the contract must catch: the discriminator reads the original masked tokens."""

    def _forward(self, encoder, modules, batch):
        gen_logits, _, replaced = super()._forward(encoder, modules, batch)
        masked, text = batch.targets != IGNORE, batch.extra["text"]
        clean = torch.where(masked, batch.targets, batch.input_ids)
        hidden = encoder(clean, batch.attn, batch.position_ids, batch.segment_ids, at=text)
        return gen_logits, modules["head"](hidden)[:, 0], replaced


@pytest.fixture
def peeking():
    OBJECTIVES.register("peeking-electra", PeekingElectra)
    yield "peeking-electra"
    OBJECTIVES.unregister("peeking-electra")


def test_the_contract_holds_the_discriminator_labels_to_what_they_may_see(peeking):
    results = {c.name: c for c in check_objective(peeking)}
    assert not results["no leakage"].passed
    assert re.search(r"replaced target at position \d+.*: its output depends on clean index \d+",
                     results["no leakage"].detail), results["no leakage"].detail
