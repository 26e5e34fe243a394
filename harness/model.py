"""The one Transformer encoder shared by every objective.

The model has no notion of an objective: the attention pattern arrives with the batch
("bidirectional", "causal", or a boolean mask) and decides whether it behaves as BERT, GPT,
a prefix LM or a blank-infilling model. The LM head is applied only where a caller asks
(sparse prediction), so objectives that predict 15% of positions pay for 15%.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from objbench.harness.config import ModelConfig

Attention = str | torch.Tensor  # "bidirectional" | "causal" | bool (B, T, T), True = may attend


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

    def forward(self, x: torch.Tensor, attn: Attention) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        mask = None if isinstance(attn, str) else attn[:, None]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=attn == "causal" if isinstance(attn, str) else False,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff_out(F.gelu(self.ff_in(self.ln2(x)))))


class Encoder(nn.Module):
    """Token + position (+ segment) embeddings, pre-LN blocks, tied LM head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
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
    ) -> torch.Tensor | list[torch.Tensor]:
        """Hidden states (B, T, D) after the final norm, or every layer's output.

        With ``all_layers`` the list holds the embedding output first and then each block's
        output (the last one final-normed), so index ``l`` is "after l blocks".
        """
        B, T = input_ids.shape
        if T > self.cfg.max_len and position_ids is None:
            raise ValueError(f"sequence length {T} exceeds model.max_len={self.cfg.max_len}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        # no segment ids means segment 0 everywhere, exactly as a padded pair batch reads it
        seg = self.seg.weight[0] if segment_ids is None else self.seg(segment_ids)
        x = self.tok(input_ids) + self.pos(position_ids) + seg
        x = self.drop(x)
        layers = [x]
        for block in self.blocks:
            x = block(x, attn)
            layers.append(x)
        layers[-1] = self.ln_f(x)
        return layers if all_layers else layers[-1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits for the given hidden states (any leading shape); weights tied to input."""
        return F.linear(hidden, self.tok.weight, self.head_bias)

    def num_params(self, include_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if include_embeddings else n - self.tok.weight.numel() - self.pos.weight.numel()
