"""The contract every registered objective (built-in or third-party) must honour.

Visibility is measured, not assumed: each clean token is perturbed in turn, with the
objective's random draws held fixed, and we record which output positions' logits move.
"""

from __future__ import annotations

import pytest
import torch

from objbench.harness.registry import OBJECTIVES
from objbench.objectives.base import IGNORE
from tests.helpers import VOCAB_SIZE, all_specials, make_objective, random_blocks, tiny_encoder

T = 12


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids))


def measured_visibility(obj, blocks: torch.Tensor, seed: int) -> tuple[torch.Tensor, object]:
    """Bool (B, T', T): does the output at position i change when clean token j changes?"""
    model = tiny_encoder()
    base = obj.make_batch(blocks, torch.Generator().manual_seed(seed))
    ref = logits_of(model, base)
    vis = torch.zeros(*base.input_ids.shape, blocks.shape[1], dtype=torch.bool)
    n_special = len(all_specials())
    for j in range(blocks.shape[1]):
        pert = blocks.clone()
        pert[:, j] = (blocks[:, j] - n_special + 1) % (VOCAB_SIZE - n_special) + n_special
        batch = obj.make_batch(pert, torch.Generator().manual_seed(seed))
        assert torch.equal(batch.targets != IGNORE, base.targets != IGNORE), \
            "an objective's choice of targets must not depend on token identity"
        vis[:, :, j] = (logits_of(model, batch) - ref).abs().amax(-1) > 1e-10
    return vis, base


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_shapes_targets_and_determinism(name):
    obj = make_objective(name)
    blocks = random_blocks(4, T, seed=1)
    a = obj.make_batch(blocks, torch.Generator().manual_seed(7))
    b = obj.make_batch(blocks, torch.Generator().manual_seed(7))
    shape = a.input_ids.shape
    assert a.targets.shape == shape and a.source_index.shape == shape and a.target_source.shape == shape
    assert a.input_ids.shape[0] == 4
    tg = a.targets[a.targets != IGNORE]
    assert tg.numel() > 0 and tg.min() >= 0 and tg.max() < VOCAB_SIZE
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)
    # the target at i is the clean token its target_source names
    has_src = a.target_source >= 0
    rows = torch.nonzero(has_src, as_tuple=True)[0]
    assert torch.equal(a.targets[has_src], blocks[rows, a.target_source[has_src]])


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_no_leakage_and_visibility_as_declared(name):
    obj = make_objective(name)
    blocks = random_blocks(3, T, seed=2)
    measured, batch = measured_visibility(obj, blocks, seed=3)
    declared = obj.visibility(batch, T)
    has_target = batch.targets != IGNORE
    assert torch.equal(measured[has_target], declared[has_target]), \
        f"{name}: what targets' logits depend on differs from what the objective declares"
    b, i = torch.nonzero(has_target & (batch.target_source >= 0), as_tuple=True)
    sees_self = measured[b, i, batch.target_source[b, i]]
    if not obj.sees_own_target:
        assert not sees_self.any(), f"{name}: a target's logits depend on its own clean token"


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_score_rows_cover_each_token_once(name):
    obj = make_objective(name)
    tokens = random_blocks(1, 7, seed=4)[0]
    rows = obj.score_rows(tokens)
    covered = rows.target_source[rows.targets != IGNORE]
    assert sorted(covered.tolist()) == list(range(7))
    assert torch.equal(rows.targets[rows.targets != IGNORE], tokens[covered])
    model = tiny_encoder()
    measured, _ = measured_visibility_rows(obj, tokens, model)
    b, i = torch.nonzero(rows.targets != IGNORE, as_tuple=True)
    assert not measured[b, i, rows.target_source[b, i]].any(), "a scored token saw itself"


def measured_visibility_rows(obj, tokens, model):
    ref_rows = obj.score_rows(tokens)
    ref = logits_of(model, ref_rows)
    vis = torch.zeros(*ref_rows.input_ids.shape, tokens.shape[0], dtype=torch.bool)
    n_special = len(all_specials())
    for j in range(tokens.shape[0]):
        pert = tokens.clone()
        pert[j] = (tokens[j] - n_special + 1) % (VOCAB_SIZE - n_special) + n_special
        vis[:, :, j] = (logits_of(model, obj.score_rows(pert)) - ref).abs().amax(-1) > 1e-10
    return vis, ref_rows


def _positions_used(batch) -> int:
    pos = batch.position_ids
    return int(pos.max()) + 1 if pos is not None else batch.input_ids.shape[1]


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_positions_needed_is_what_rows_use(name):
    """Training and scoring rows fit in the positions the objective declares (configs are
    validated and sentences cut by that declaration, so an understatement would crash a run),
    and the declaration wastes at most one position."""
    obj = make_objective(name)
    for n in (5, T):
        used = _positions_used(obj.make_batch(random_blocks(4, n, seed=n), torch.Generator().manual_seed(0)))
        assert used <= obj.positions_needed(n) <= used + 1
        assert _positions_used(obj.score_rows(random_blocks(1, n, seed=n)[0])) <= obj.positions_needed(n)
    assert obj.positions_needed(obj.max_tokens(40)) <= 40 < obj.positions_needed(obj.max_tokens(40) + 1)
