"""Model FLOPs of a training step, counted on the sequences actually processed.

Matmul FLOPs only (2 per multiply-add): per layer the QKV, output and feed-forward
projections for every input position, the two attention products over the full ``T x T``
score matrix (what the kernels compute, masked or not), and the tied LM head for predicted
positions only. Backward costs twice the forward, so a training step is 3x forward.
"""

from __future__ import annotations

from objbench.harness.config import ModelConfig


def forward_flops(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, n_targets: int) -> float:
    d, f = cfg.d_model, cfg.d_ff
    per_token_per_layer = 2 * (4 * d * d + 2 * d * f)
    attention_per_layer = 2 * 2 * seq_len * seq_len * d  # QK^T and AV, per sequence
    body = cfg.n_layers * (batch * seq_len * per_token_per_layer + batch * attention_per_layer)
    head = 2 * d * vocab_size * n_targets
    return float(body + head)


def train_flops(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, n_targets: int) -> float:
    return 3.0 * forward_flops(cfg, vocab_size, batch, seq_len, n_targets)
