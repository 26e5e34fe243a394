"""The tied LM head and its cross-entropy, fused and chunked over target rows.

A training step needs only the summed loss and its gradients, never the (targets x vocab)
logits. Computing both a chunk of rows at a time, while the chunk's logits are still in
cache, replaces the full-size passes of ``F.cross_entropy(F.linear(...))`` (bias broadcast,
log-softmax, the zero-filled one-hot gradient, its backward, the bias-gradient sum) with one
softmax per chunk, turned into the logits' gradient in place, and caps the head's
activation memory at one chunk: a causal LM step of 4096 tokens over 8192 types holds 134 MB
of logits unfused, 16 MB here. The gradients are computed in the forward pass and scaled by
the incoming gradient in backward. Targets may carry loss weights (masked diffusion weighs a
target by 1/t); without them the computation is exactly the unweighted one.
"""

from __future__ import annotations

import torch

# logits per chunk: 16 MB in fp32 on a CPU (cache-sized); far more on an accelerator, where
# many small GEMMs would cost launches
CHUNK_ELEMENTS = {"cpu": 2**22}
ACCELERATOR_CHUNK_ELEMENTS = 2**26


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                targets: torch.Tensor, loss_weights: torch.Tensor | None) -> torch.Tensor:
        want_grads = any(ctx.needs_input_grad[:3])
        rows = max(1, CHUNK_ELEMENTS.get(hidden.device.type, ACCELERATOR_CHUNK_ELEMENTS) // weight.shape[0])
        loss = torch.zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
        if want_grads:
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros_like(weight)
            grad_bias = torch.zeros_like(bias)
        for start in range(0, hidden.shape[0], rows):
            h, y = hidden[start:start + rows], targets[start:start + rows]
            logits = (h @ weight.t()).to(loss.dtype).add_(bias)  # the matmul in bf16 under autocast
            p = torch.softmax(logits, dim=1)
            nll = _nll(p, logits, y)
            w = None if loss_weights is None else loss_weights[start:start + rows].to(loss.dtype)
            loss += nll.sum() if w is None else (w * nll).sum()
            if want_grads:
                p[torch.arange(len(y), device=y.device), y] -= 1  # d(loss) / d(logits)
                if w is not None:
                    p.mul_(w[:, None])
                grad_hidden[start:start + rows] = p @ weight
                grad_weight += p.t() @ h
                grad_bias += p.sum(0)
        if want_grads:
            ctx.grads = (grad_hidden, grad_weight, grad_bias)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        return (*(g * grad_loss.to(g.dtype) for g in ctx.grads), None, None)


def _nll(p: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p[y] per row; rows whose p[y] underflowed are recomputed in log space, so a
    confidently wrong prediction gives its large finite loss, never inf."""
    p_y = p.gather(1, y[:, None])[:, 0]
    nll = -p_y.log()
    tiny = p_y < torch.finfo(p.dtype).tiny
    if tiny.any():
        nll[tiny] = -torch.log_softmax(logits[tiny], dim=1).gather(1, y[tiny, None])[:, 0]
    return nll


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         targets: torch.Tensor, loss_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="none")`` summed,
    each row times its ``loss_weights`` entry when given, in at least fp32, without
    materialising the logits. ``hidden`` is (N, D), ``targets`` and ``loss_weights`` (N,); the
    weights are constants (no gradient flows into them)."""
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, loss_weights)
