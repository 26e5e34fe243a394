"""The one Transformer encoder shared by every objective.

The model has no notion of an objective: the attention pattern arrives with the batch
("bidirectional", "causal", or a boolean mask) and decides whether it behaves as BERT, GPT,
a prefix LM or a blank-infilling model. The LM head is applied only where a caller asks
(sparse prediction), so objectives that predict 15% of positions pay for 15%; for the same
reason the last block computes its output projection and feed-forward (and, when no row of
the batch wants more than half its positions, its queries) only at the positions whose
output is asked for (``Encoder.forward(..., at=...)``, `last_block_queries`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from objbench.harness.config import ModelConfig

Attention = str | torch.Tensor  # "bidirectional" | "causal" | bool (B, T, T), True = may attend


@dataclass(frozen=True)
class Queries:
    """Where the last block computes its outputs (`last_block_queries`). Padded: ``rows``
    (B, L) holds each row's wanted positions in order, then unwanted ones up to the longest
    row's count, and ``computed`` (B, L) marks the wanted. Packed (``rows`` None): queries and
    attention run at every position, the output projection and feed-forward only where
    ``computed`` (B, T) is True, as (N, D) rows; ``keep`` picks the wanted ones among those."""

    computed: torch.Tensor
    rows: torch.Tensor | None = None
    keep: torch.Tensor | None = None


PACK_LIMIT = 0.9  # share of positions computed above which packing saves less than its gathers cost


def query_rows(at: torch.Tensor) -> torch.Tensor | None:
    """(B, L) positions at which the last block must compute its output to cover ``at`` (bool
    (B, T)): each row's wanted positions in order, padded with unwanted ones to the longest
    row's count. None when that is more than half the row, where the gathers and the explicit
    mask would cost more than the skipped work saves (a causal LM predicts every position)."""
    longest = int(at.sum(1).max()) if at.numel() else 0
    if longest == 0 or 2 * longest > at.shape[1]:
        return None
    order = torch.sort(at.logical_not().to(torch.uint8), dim=1, stable=True).indices
    return order[:, :longest]


def last_block_queries(at: torch.Tensor) -> Queries | None:
    """The last block's work to cover ``at`` (bool (B, T)), or None to compute every position.

    A row wanting more than half its positions computes all of them (`query_rows`' rule, and
    `token_loss_flops`' count); the others compute only their wanted positions: padded to the
    longest row (`query_rows`) when no row is dense, else packed, so that one row masked at
    rate 0.9 (`mdlm` draws a rate per row; `masked-ar` rows at r near 1/2 straddle half) does
    not make the sparse rows beside it pay for the whole block."""
    rows = query_rows(at)
    if rows is not None:
        return Queries(torch.arange(rows.shape[1], device=at.device) < at.sum(1, keepdim=True), rows=rows)
    computed = at | (2 * at.sum(1, keepdim=True) > at.shape[1])
    if not at.any() or int(computed.sum()) > PACK_LIMIT * at.numel():
        return None
    return Queries(computed, keep=at[computed])


Rotation = tuple[torch.Tensor, torch.Tensor]  # cos and sin of RoPE's angles, (B, T, 1, Dh/2) each


def rotary(position_ids: torch.Tensor, head_dim: int, base: float = 10000.0) -> Rotation:
    """RoPE's rotation at each position (Su et al., 2021): dimension i of a head's first half
    and dimension i of its second half turn together by position x base^(-2i/head_dim). The
    angles are computed in float64 so that shifting every position changes nothing visible."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64, device=position_ids.device) / head_dim
    angle = position_ids[..., None].to(torch.float64) * base ** -exponent
    return angle.cos()[:, :, None], angle.sin()[:, :, None]


def rotate(x: torch.Tensor, rot: Rotation) -> torch.Tensor:
    """Queries or keys (B, L, H, Dh) turned by their positions' angles, so that a query-key
    dot product depends on how far apart they are, not on where they are."""
    cos, sin = (r.to(x.dtype) for r in rot)
    a, b = x.chunk(2, -1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)


def _take(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[b, rows[b, l]] for (B, T, ...) ``x`` and (B, L) ``rows``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], rows]


class Block(nn.Module):
    """Pre-LN Transformer block with fused QKV projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff_in = nn.Linear(cfg.d_model, cfg.d_ff)
        self.ff_out = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn: Attention, queries: Queries | None = None,
                rot: Rotation | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with ``queries`` only the outputs they ask for, (B, L, D) or,
        packed, (N, D): keys and values still come from every position, so each output is
        exactly the same."""
        B, T, D = x.shape
        shape = (B, -1, self.n_heads, D // self.n_heads)
        h = self.ln1(x)
        if queries is None or queries.rows is None:
            q, k, v = self.qkv(h).view(B, T, 3, *shape[2:]).unbind(2)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            k, v = F.linear(h, w[D:], b[D:]).view(B, T, 2, *shape[2:]).unbind(2)
            q = F.linear(_take(h, queries.rows), w[:D], b[:D]).view(shape)
            x = _take(x, queries.rows)
            attn = _query_attention(attn, queries.rows, T)
        if rot is not None:
            q_rot = rot if queries is None or queries.rows is None else (_take(rot[0], queries.rows),
                                                                           _take(rot[1], queries.rows))
            q, k = rotate(q, q_rot), rotate(k, rot)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        mask = None if isinstance(attn, str) else attn[:, None]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=attn == "causal" if isinstance(attn, str) else False,
            dropout_p=self.dropout if self.training else 0.0,
        ).transpose(1, 2).reshape(B, -1, D)
        if queries is not None and queries.rows is None:
            x, y = x[queries.computed], y[queries.computed]
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ff_out(F.gelu(self.ff_in(self.ln2(x)))))


def _query_attention(attn: Attention, rows: torch.Tensor, T: int) -> Attention:
    """The attention pattern's rows for the queries at ``rows``: (B, L, T) bool, or as it was."""
    if not isinstance(attn, str):
        return _take(attn, rows)
    if attn == "causal":  # the query at position p sees keys 0..p
        return torch.arange(T, device=rows.device) <= rows[..., None]
    return attn


class Encoder(nn.Module):
    """Token + position (+ segment) embeddings, pre-LN blocks, tied LM head. With
    ``position: rope`` no position embedding is added: each block rotates its queries and keys
    by their positions instead."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        self.seg = nn.Embedding(2, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attn: Attention,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        all_layers: bool = False,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Hidden states (B, T, D) after the final norm, or every layer's output.

        With ``all_layers`` the list holds the embedding output first and then each block's
        output (the last one final-normed), so index ``l`` is "after l blocks". With ``at``
        (bool (B, T)) only the final states where it is True, as (N, D) in row-major order:
        what the loss needs, and the last block skips its work elsewhere.
        """
        B, T = input_ids.shape
        if isinstance(attn, str) and attn not in ("bidirectional", "causal"):
            raise ValueError(f"attention {attn!r}: the encoder takes 'bidirectional', 'causal' or a bool mask")
        if all_layers and at is not None:
            raise ValueError("all_layers and at exclude each other: all layers means every position")
        if T > self.cfg.max_len and position_ids is None:
            raise ValueError(f"sequence length {T} exceeds model.max_len={self.cfg.max_len}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        # no segment ids means segment 0 everywhere, exactly as a padded pair batch reads it
        seg = self.seg.weight[0] if segment_ids is None else self.seg(segment_ids)
        if self.pos is None:
            x, rot = self.tok(input_ids) + seg, rotary(position_ids, self.cfg.d_model // self.cfg.n_heads)
        else:
            x, rot = self.tok(input_ids) + self.pos(position_ids) + seg, None
        x = self.drop(x)
        queries = None if at is None else last_block_queries(at)
        layers = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, attn, queries if i == len(self.blocks) - 1 else None, rot)
            layers.append(x)
        layers[-1] = self.ln_f(x)
        if at is None:
            return layers if all_layers else layers[-1]
        if queries is None:
            return layers[-1][at]
        return layers[-1][queries.computed] if queries.rows is not None else layers[-1][queries.keep]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits for the given hidden states (any leading shape); weights tied to input."""
        return F.linear(hidden, self.tok.weight, self.head_bias)

    def num_params(self, include_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        embeddings = self.tok.weight.numel() + (0 if self.pos is None else self.pos.weight.numel())
        return n if include_embeddings else n - embeddings
