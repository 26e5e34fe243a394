"""Model FLOPs of a training step, counted on the sequences actually processed.

Matmul FLOPs only (2 per multiply-add): per layer the QKV, output and feed-forward
projections for every input position, the two attention products over the full ``T x T``
score matrix (what the kernels compute, masked or not), and the tied LM head for predicted
positions only. When the last block computes its outputs at only ``last_queries`` positions
per sequence (``model.query_rows``), that block's query, output and feed-forward projections
and its attention products count at those positions. Backward costs twice the forward, so a
training step is 3x forward.
"""

from __future__ import annotations

from objbench.harness.config import ModelConfig


def forward_flops(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, n_targets: int,
                  last_queries: int | None = None) -> float:
    d, f = cfg.d_model, cfg.d_ff
    kv = 2 * 2 * d * d  # per position: the key and value projections
    query_side = 2 * (2 * d * d + 2 * d * f)  # per position: query, output, feed-forward
    attention = 2 * 2 * seq_len * d  # per query: QK^T and AV over seq_len keys
    full_layer = batch * seq_len * (kv + query_side + attention)
    L = seq_len if last_queries is None else last_queries
    last_layer = batch * (seq_len * kv + L * (query_side + attention))
    head = 2 * d * vocab_size * n_targets
    return float((cfg.n_layers - 1) * full_layer + last_layer + head)


def train_flops(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, n_targets: int,
                last_queries: int | None = None) -> float:
    return 3.0 * forward_flops(cfg, vocab_size, batch, seq_len, n_targets, last_queries)
