"""What each built-in objective promises about visibility, measured on a tiny encoder."""

from __future__ import annotations

import pytest
import torch

from objbench.objectives.base import IGNORE
from tests.helpers import VOCAB_SIZE, all_specials, make_objective, random_blocks, tiny_encoder

T = 12


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids))


def measured_visibility(obj, blocks: torch.Tensor, seed: int) -> tuple[torch.Tensor, object]:
    """Bool (B, T', T): does the output at position i (any position, not only targets) change
    when clean token j changes?"""
    model = tiny_encoder()
    base = obj.make_batch(blocks, torch.Generator().manual_seed(seed))
    ref = logits_of(model, base)
    vis = torch.zeros(*base.input_ids.shape, blocks.shape[1], dtype=torch.bool)
    n_special = len(all_specials())
    for j in range(blocks.shape[1]):
        pert = blocks.clone()
        pert[:, j] = (blocks[:, j] - n_special + 1) % (VOCAB_SIZE - n_special) + n_special
        vis[:, :, j] = (logits_of(model, obj.make_batch(pert, torch.Generator().manual_seed(seed))) - ref).abs().amax(-1) > 1e-10
    return vis, base


def visible_sets(name: str, seed: int = 0, **options):
    obj = make_objective(name, **options)
    blocks = random_blocks(2, T, seed=seed)
    vis, batch = measured_visibility(obj, blocks, seed=seed + 1)
    out = []  # (row, target source k, set of clean indices its logits depend on)
    for b, i in torch.nonzero((batch.targets != IGNORE) & (batch.target_source >= 0)).tolist():
        out.append((b, batch.target_source[b, i].item(), set(torch.nonzero(vis[b, i]).flatten().tolist())))
    return out, batch, vis


def test_clm_target_k_sees_exactly_the_tokens_before_it():
    sets, _, _ = visible_sets("clm")
    assert len(sets) == 2 * T
    for _, k, seen in sets:
        assert seen == set(range(k))


def test_masked_ar_r1_left_to_right_is_causal_lm():
    sets, batch, _ = visible_sets("masked-ar", r=1.0, order="left-to-right", unit="token")
    assert len(sets) == 2 * T  # every token predicted, plus [E] which has no source
    for _, k, seen in sets:
        assert seen == set(range(k))


def test_masked_ar_suffix_is_prefix_lm():
    q = 4  # r = 1/3 of 12
    sets, batch, vis = visible_sets("masked-ar", r=q / T, suffix=True)
    assert sorted({k for _, k, _ in sets}) == list(range(T - q, T))
    for _, k, seen in sets:
        assert seen == set(range(k))  # the whole prefix plus earlier suffix tokens
    # the prefix itself is bidirectional: [CLS] (position 0) sees every prefix token
    assert set(torch.nonzero(vis[0, 0]).flatten().tolist()) == set(range(T - q))


def test_masked_ar_small_r_sees_unmasked_context_and_earlier_spans_only():
    sets, batch, _ = visible_sets("masked-ar", seed=5, r=0.25, order="random", mean_span=2.0)
    for b, k, seen in sets:
        masked = set(batch.target_source[b][batch.target_source[b] >= 0].tolist())
        unmasked = set(range(T)) - masked
        assert unmasked <= seen  # all of part A's text
        assert k not in seen
        assert seen - unmasked <= masked  # plus only masked tokens decoded before it


@pytest.mark.parametrize("name", ["mlm", "mntp"])
def test_mask_only_sees_every_unmasked_token_and_no_masked_one(name):
    sets, _, _ = visible_sets(name, mask_rate=0.3, p_mask=1.0, p_random=0.0, p_keep=0.0)
    for b in (0, 1):
        masked = {k for r, k, _ in sets if r == b}
        for r, k, seen in sets:
            if r == b:
                assert seen == set(range(T)) - masked


def test_mlm_default_only_kept_targets_see_themselves():
    obj = make_objective("mlm", mask_rate=0.5)
    blocks = random_blocks(6, T, seed=9)
    vis, batch = measured_visibility(obj, blocks, seed=10)
    b, i = torch.nonzero(batch.targets != IGNORE, as_tuple=True)
    kept = batch.source_index[b, i] >= 0  # the objective's record of a "keep" draw
    assert torch.equal(batch.input_ids[b, i][kept], blocks[b, i - 1][kept])  # [CLS] shifts by one
    own = vis[b, i, batch.target_source[b, i]]
    assert torch.equal(own, kept)
    assert kept.any() and (~kept).any()


def test_mlm_applied_rates_match_configured_within_sampling_error():
    obj = make_objective("mlm", mask_rate=0.15, p_mask=0.7, p_random=0.2, p_keep=0.1)
    blocks = random_blocks(64, 128, seed=11)
    stats = [obj.make_batch(blocks, torch.Generator().manual_seed(s)).stats for s in range(20)]
    n_selected = 64 * round(128 * 0.15) * 20
    for key, p in (("p_mask_applied", 0.7), ("p_random_applied", 0.2), ("p_keep_applied", 0.1)):
        mean = sum(s[key] for s in stats) / len(stats)
        sigma = (p * (1 - p) / n_selected) ** 0.5
        assert abs(mean - p) < 4 * sigma, (key, mean, p)
    assert all(abs(s["mask_rate_applied"] - round(128 * 0.15) / 128) < 1e-6 for s in stats)


def test_mlm_whole_word_masks_whole_words():
    obj = make_objective("mlm", unit="word", mask_rate=0.3)
    word_start = obj.vocab.word_start.clone()
    word_start[20:] = False  # ids >= 20 continue a word
    obj.vocab = obj.vocab.__class__(obj.vocab.size, obj.vocab.specials, word_start)
    blocks = random_blocks(8, 32, seed=12)
    batch = obj.make_batch(blocks, torch.Generator().manual_seed(0))
    selected = batch.targets[:, 1:] != IGNORE
    starts = word_start[blocks]
    starts[:, 0] = True
    words = starts.long().cumsum(1)
    for b in range(8):
        for w in words[b].unique():
            in_word = selected[b][words[b] == w]
            assert in_word.all() or not in_word.any()


def test_masked_ar_scoring_choice_follows_its_training():
    tokens = random_blocks(1, 6, seed=13)[0]
    for options, rows in (({"r": 0.15}, 6), ({"r": 0.5}, 1), ({"r": 0.15, "suffix": True}, 1),
                          ({"r": 0.9, "score": "infill-each"}, 6), ({"r": 0.15, "score": "joint"}, 1)):
        obj = make_objective("masked-ar", **options)
        batch = obj.score_rows(tokens)
        assert batch.input_ids.shape[0] == rows, options
        assert ("whole sentence" in obj.score_method) == (rows == 1)
    # joint: one left-to-right pass where token k sees exactly the tokens before it
    joint = make_objective("masked-ar", r=1.0, order="left-to-right").score_rows(tokens)
    assert (joint.targets[0] != IGNORE).sum() == 6


def test_mntp_predicts_each_masked_token_from_the_position_before_it():
    blocks = random_blocks(8, T, seed=14)
    mlm = make_objective("mlm", mask_rate=0.3).make_batch(blocks, torch.Generator().manual_seed(3))
    mntp = make_objective("mntp", mask_rate=0.3).make_batch(blocks, torch.Generator().manual_seed(3))
    assert torch.equal(mntp.input_ids, mlm.input_ids)  # the same masking, draw for draw
    b, i = torch.nonzero(mntp.targets != IGNORE, as_tuple=True)
    assert torch.equal(mntp.target_source[b, i], i)  # clean index k sits at k + 1, predicted at k
    assert torch.equal(mlm.targets[b, i + 1], mntp.targets[b, i])
    assert mntp.n_targets == mlm.n_targets and (mntp.targets[:, 0] != IGNORE).any()  # [CLS] predicts token 0
    rows = make_objective("mntp").score_rows(blocks[0, :5])
    assert rows.target_source[rows.targets != IGNORE].tolist() == [0, 1, 2, 3, 4]
    assert (rows.input_ids[torch.arange(5), torch.arange(5) + 1] == make_objective("mntp").vocab["[MASK]"]).all()
