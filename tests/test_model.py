"""The shared encoder against slow, obvious reference code: attention, sparse head, the last
block's sparse queries, FLOPs, compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from objbench.harness.config import ModelConfig
from objbench.harness.flops import forward_flops, train_flops
from objbench.harness.model import Encoder, last_block_queries, query_rows
from objbench.objectives.base import IGNORE, attention_matrix, token_loss, token_loss_flops
from tests.helpers import VOCAB_SIZE, make_objective, random_blocks, tiny_encoder, tiny_vocab

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: a second thread only adds waiting on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def naive_rope(t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Queries or keys (B, H, T, dh) rotated as complex numbers: dimension i of the first half is
    the real part, dimension i of the second half the imaginary part, turned by pos * 10000^(-2i/dh)."""
    half = t.shape[-1] // 2
    z = torch.complex(t[..., :half].double(), t[..., half:].double())
    angle = pos[:, None, :, None].double() * 10000.0 ** (-2 * torch.arange(half, dtype=torch.float64) / t.shape[-1])
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), -1).to(t.dtype)


def naive_hidden(model: Encoder, ids: torch.Tensor, attn, position_ids=None, segment_ids=None) -> torch.Tensor:
    """The encoder written out with an explicit softmax over masked scores (eval mode)."""
    B, T = ids.shape
    pos = position_ids if position_ids is not None else torch.arange(T).expand(B, T)
    seg = segment_ids if segment_ids is not None else torch.zeros_like(ids)
    rope = model.cfg.position == "rope"
    x = model.tok(ids) + (0 if rope else model.pos(pos)) + model.seg(seg)
    allowed = attention_matrix(attn, ids)[:, None]  # (B, 1, T, T), True = may attend
    for blk in model.blocks:
        D = x.shape[-1]
        H, dh = blk.n_heads, D // blk.n_heads
        q, k, v = (t.reshape(B, T, H, dh).transpose(1, 2) for t in blk.qkv(blk.ln1(x)).split(D, -1))
        if rope:
            q, k = naive_rope(q, pos), naive_rope(k, pos)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(~allowed, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + blk.proj(y)
        x = x + blk.ff_out(F.gelu(blk.ff_in(blk.ln2(x))))
    return model.ln_f(x)


def encoder(dtype: torch.dtype, position: str = "learned") -> Encoder:
    return tiny_encoder(position=position).to(dtype)


def random_mask(B: int, T: int, seed: int) -> torch.Tensor:
    """Random bool attention; every position sees itself so no softmax row is empty."""
    m = torch.rand(B, T, T, generator=torch.Generator().manual_seed(seed)) < 0.5
    return m | torch.eye(T, dtype=torch.bool)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("pattern", ["bidirectional", "causal", "random-bool", "masked-ar"])
def test_sdpa_matches_naive_attention(dtype, pattern, position):
    model = encoder(dtype, position)
    ids = random_blocks(3, 10, seed=0)
    attn, pos, seg = pattern, None, None
    if pattern == "random-bool":
        attn = random_mask(3, 10, seed=1)
    elif pattern == "masked-ar":  # bool (B, T', T') with part A / part B structure and padding rows
        batch = make_objective("masked-ar", r=0.3).make_batch(ids, torch.Generator().manual_seed(2))
        ids, attn, pos, seg = batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids
    with torch.no_grad():
        got = model(ids, attn, pos, seg)
        want = naive_hidden(model, ids, attn, pos, seg)
    torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_is_causal_fast_path_equals_explicit_tril_mask(dtype):
    model = encoder(dtype)
    ids = random_blocks(4, 12, seed=3)
    tril = torch.tril(torch.ones(12, 12, dtype=torch.bool)).expand(4, 12, 12)
    full = torch.ones(4, 12, 12, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, "causal"), model(ids, tril), atol=TOL[dtype], rtol=TOL[dtype])
        torch.testing.assert_close(model(ids, "bidirectional"), model(ids, full), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("name", ["mlm", "clm", "masked-ar"])
def test_sparse_head_loss_and_grads_equal_full_head(name):
    """Applying the head only where targets exist changes nothing but the cost."""
    batch = make_objective(name).make_batch(random_blocks(3, 12, seed=4), torch.Generator().manual_seed(5))
    sparse_model, full_model = tiny_encoder(), tiny_encoder()
    s, n = token_loss(sparse_model, batch), batch.n_targets
    s.backward()
    hidden = full_model(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids)
    logits = full_model.logits(hidden)  # (B, T', V): every position
    full = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), batch.targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    full.backward()
    assert n == batch.n_targets > 0
    torch.testing.assert_close(s, full, atol=1e-12, rtol=1e-12)
    for (name_, a), b in zip(sparse_model.named_parameters(), full_model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-10, msg=name_)


def test_flops_pinned_by_hand():
    cfg = ModelConfig(d_model=8, n_layers=2, n_heads=2, d_ff=16, max_len=8)
    # per token and layer: QKV 3*8*8 + output 8*8 + FFN 2*8*16 = 512 multiply-adds = 1024 FLOPs
    # per sequence and layer: QK^T and AV over 4x4 scores, 4*4*8 multiply-adds each = 512 FLOPs
    # body: 2 layers * (2 sequences * 4 tokens * 1024 + 2 sequences * 512) = 18432
    # head: 3 targets * 8 * 10 vocab multiply-adds = 480 FLOPs
    assert forward_flops(cfg, vocab_size=10, batch=2, seq_len=4, n_targets=3) == 18432 + 480
    assert train_flops(cfg, vocab_size=10, batch=2, seq_len=4, n_targets=3) == 3 * (18432 + 480)


@pytest.mark.parametrize("name, sparse_queries", [("mlm", True), ("clm", False), ("masked-ar", True)])
def test_flops_equal_the_matmuls_each_row_runs_alone(name, sparse_queries):
    """flops.py counts what runs, row by row: checked against torch's FLOP counter on the math
    SDPA path (the CPU flash kernel is not registered with the counter; the math path is plain
    bmm). Each row counts as it runs alone, so padding to the batch's longest row (masked-ar
    rows differ in length) is not counted and batching never changes the total."""
    model = tiny_encoder().float()
    pad = tiny_vocab()["[PAD]"]
    batch = make_objective(name).make_batch(random_blocks(3, 20, seed=6), torch.Generator().manual_seed(3))
    assert (query_rows(batch.targets != IGNORE) is not None) == sparse_queries
    lengths = (batch.input_ids != pad).sum(1)
    assert (len(set(lengths.tolist())) > 1) == (name == "masked-ar")  # padding to exclude
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for b in range(3):
            token_loss(model, batch.row(b, pad)).backward()
    assert counter.get_total_flops() == token_loss_flops(model.cfg, VOCAB_SIZE, batch, pad)
    B, T = batch.input_ids.shape
    dense = train_flops(model.cfg, VOCAB_SIZE, B, T, batch.n_targets)
    assert (token_loss_flops(model.cfg, VOCAB_SIZE, batch, pad) < dense) == sparse_queries


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("pattern", ["bidirectional", "causal", "random-bool", "masked-ar"])
def test_outputs_at_positions_equal_the_full_forward(pattern, layout, position):
    """``at`` only skips work: the last block's sparse queries give the same states and grads,
    padded to the longest row or, beside a row that wants most of its positions, packed."""
    ids = random_blocks(4, 16, seed=9)
    attn, pos, seg = pattern, None, None
    if pattern == "random-bool":
        attn = random_mask(4, 16, seed=10)
    elif pattern == "masked-ar":
        batch = make_objective("masked-ar", r=0.3).make_batch(ids, torch.Generator().manual_seed(11))
        ids, attn, pos, seg = batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids
    at = torch.rand(ids.shape, generator=torch.Generator().manual_seed(12)) < 0.25
    at[0] = False  # a row with nothing wanted
    at[1, :5] = True  # rows wanting different counts
    if layout == "packed":
        at[2, : ids.shape[1] - 2] = True  # a dense row: computed everywhere
    queries = last_block_queries(at)
    assert queries is not None and (queries.rows is None) == (layout == "packed")
    sparse_model, full_model = tiny_encoder(position=position), tiny_encoder(position=position)
    weights = torch.randn(int(at.sum()), sparse_model.cfg.d_model, dtype=torch.float64)
    got = sparse_model(ids, attn, pos, seg, at=at)
    want = full_model(ids, attn, pos, seg)[at]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    for (name, a), b in zip(sparse_model.named_parameters(), full_model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-10, msg=name)


def test_rope_reads_relative_positions_and_has_no_position_embeddings():
    """Shifting every position changes nothing (to fp64 rounding); reordering them does."""
    model = tiny_encoder(position="rope")
    ids = random_blocks(3, 12, seed=4)
    positions = torch.arange(12).expand(3, 12)
    with torch.no_grad():
        plain = model(ids, "bidirectional")
        torch.testing.assert_close(model(ids, "bidirectional", positions + 37), plain, atol=1e-12, rtol=1e-12)
        assert (model(ids, "bidirectional", positions.flip(1)) - plain).abs().max() > 1e-3
    assert model.pos is None and "pos.weight" not in model.state_dict()
    assert model.num_params() == tiny_encoder().num_params()  # only the embeddings differ


def test_query_rows_pads_with_unwanted_positions_and_declines_dense_rows():
    at = torch.tensor([[0, 1, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    assert query_rows(at).tolist() == [[1, 4], [6, 0]]
    at[0, :5] = True  # 6 of 8 wanted: computing everything is cheaper
    assert query_rows(at) is None
    assert query_rows(torch.zeros(2, 8, dtype=torch.bool)) is None


def test_last_block_computes_a_dense_row_whole_and_packs_the_sparse_ones():
    """The work `token_loss_flops` counts row by row: a row wanting more than half its positions
    computes all of them, the others their wanted ones; packing stops paying near density 1."""
    at = torch.tensor([[0, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]],
                      dtype=torch.bool)
    queries = last_block_queries(at)
    assert queries.rows is None
    assert queries.computed.sum(1).tolist() == [1, 8, 1]
    assert queries.keep.tolist() == [True, True, True, True, True, True, False, False, False, True]
    many = torch.zeros(10, 8, dtype=torch.bool)
    many[:, 0], many[:8, :6] = True, True  # 8 dense rows and 2 sparse: 66 of 80 positions computed
    assert last_block_queries(many).rows is None
    many[8, :6] = True  # 73 of 80 (over 0.9): computing everything is cheaper than packing
    assert last_block_queries(many) is None
    assert last_block_queries(torch.zeros(2, 8, dtype=torch.bool)) is None


@pytest.mark.slow  # torch.compile: ~7 s
def test_compiled_encoder_matches_eager():
    """What ``train.compile`` runs: the training loss through a compiled encoder (sparse queries)."""
    model = tiny_encoder().float()
    batch = make_objective("mlm").make_batch(random_blocks(2, 20, seed=8), torch.Generator().manual_seed(9))
    with torch.no_grad():
        eager = token_loss(model, batch)
        try:
            compiled = token_loss(torch.compile(model, dynamic=False), batch)
        except Exception as exc:  # no C++ toolchain, unsupported CPU, ...: say which
            pytest.skip(f"torch.compile does not work on this machine: {type(exc).__name__}: {exc}"[:400])
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
