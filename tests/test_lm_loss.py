"""The fused, chunked head + cross-entropy against ``F.cross_entropy(F.linear(...))``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from objbench.harness import lm_loss
from objbench.harness.lm_loss import linear_cross_entropy

N, D, V = 37, 8, 11  # 37 rows: chunks of 3 leave a ragged last chunk


def inputs(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, D, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(V, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    return hidden, weight, bias, targets


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setitem(lm_loss.CHUNK_ELEMENTS, "cpu", 3 * V)  # 3 rows per chunk, 13 chunks


@pytest.mark.usefixtures("small_chunks")
def test_loss_and_grads_equal_the_unfused_head():
    hidden, weight, bias, targets = inputs(torch.float64)
    got = linear_cross_entropy(hidden, weight, bias, targets)
    (2.5 * got).backward()  # the incoming gradient scales every gradient
    fused_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    want = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")
    (2.5 * want).backward()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    for name, a, t in zip(("hidden", "weight", "bias"), fused_grads, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(a, t.grad, atol=1e-12, rtol=1e-12, msg=name)


@pytest.mark.usefixtures("small_chunks")
def test_weighted_loss_and_grads_equal_the_weighted_unfused_head():
    """Per-target weights (masked diffusion's 1/t) scale each row's loss and its gradients."""
    hidden, weight, bias, targets = inputs(torch.float64, seed=6)
    w = torch.rand(N, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 10
    w[3] = 0.0  # a weight of zero removes its row
    got = linear_cross_entropy(hidden, weight, bias, targets, w)
    (1.5 * got).backward()
    fused_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    want = (w * F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="none")).sum()
    (1.5 * want).backward()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    for name, a, t in zip(("hidden", "weight", "bias"), fused_grads, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(a, t.grad, atol=1e-12, rtol=1e-12, msg=name)
    assert torch.count_nonzero(fused_grads[0][3]) == 0


def test_chunking_does_not_change_the_loss(monkeypatch):
    hidden, weight, bias, targets = inputs(torch.float64, seed=1)
    one_chunk = linear_cross_entropy(hidden, weight, bias, targets)
    monkeypatch.setitem(lm_loss.CHUNK_ELEMENTS, "cpu", 1)  # one row per chunk
    torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, targets), one_chunk,
                               atol=1e-12, rtol=1e-12)


def test_without_grad_it_computes_no_gradients():
    hidden, weight, bias, targets = inputs(torch.float32, seed=2)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, bias, targets)
    assert loss.grad_fn is None
    want = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")
    torch.testing.assert_close(loss, want.detach())


def test_bf16_autocast_keeps_the_loss_in_fp32_and_close():
    hidden, weight, bias, targets = inputs(torch.float32, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    assert loss.dtype == torch.float32
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    want = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum").detach()
    assert abs(loss.detach().item() - want.item()) < 0.02 * abs(want.item())


def test_no_targets_give_zero_loss_and_zero_grads():
    hidden, weight, bias, targets = inputs(torch.float64, seed=4)
    loss = linear_cross_entropy(hidden[:0], weight, bias, targets[:0])
    loss.backward()
    assert loss.detach().item() == 0.0
    assert torch.count_nonzero(weight.grad) == 0 and torch.count_nonzero(bias.grad) == 0


def test_an_underflowing_target_probability_gives_the_exact_finite_loss():
    """A target 200 nats below the best logit: p[y] underflows in fp32, the loss must not."""
    hidden = torch.zeros(2, 1, requires_grad=True)
    weight = torch.zeros(3, 1, requires_grad=True)
    bias = torch.tensor([200.0, 0.0, 1.0], requires_grad=True)
    targets = torch.tensor([1, 0])
    loss = linear_cross_entropy(hidden, weight, bias, targets)
    want = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.detach(), want.detach())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_in_bf16_autocast_the_loss_tracks_fp32():
    hidden, weight, bias, targets = (t.detach().cuda() for t in inputs(torch.float32, seed=5))
    hidden.requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    want = F.cross_entropy(F.linear(hidden.detach(), weight, bias), targets, reduction="sum")
    assert loss.dtype == hidden.grad.dtype == torch.float32
    assert abs(loss.item() - want.item()) < 0.02 * abs(want.item())
