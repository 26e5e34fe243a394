"""Masked diffusion: the training draw and weights, and the ELBO estimate against the exact
ELBO enumerated over every mask of a short sentence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from objbench.harness.reading import TrainedModel
from objbench.objectives.base import IGNORE
from tests.helpers import make_objective, random_blocks, tiny_encoder


def test_each_row_draws_its_rate_in_its_own_stratum_and_masks_about_that_fraction():
    eps, B, T = 1e-3, 8, 2000
    obj = make_objective("mdlm", eps=eps)
    blocks = random_blocks(B, T, seed=0)
    blocks[:, :10] = obj.vocab["[SEP]"]  # document separators: never masked, not text positions
    batch = obj.make_batch(blocks, torch.Generator().manual_seed(1))
    masked = batch.targets[:, 1:] != IGNORE
    assert not masked[:, :10].any()
    assert batch.normaliser == B * (T - 10)
    w = batch.weights[:, 1:]
    assert torch.all(w[~masked] == 0)
    t = torch.stack([1 / w[b][masked[b]][0] for b in range(B)])  # one weight 1/t per row
    assert all(torch.allclose(w[b][masked[b]], 1 / t[b]) for b in range(B))
    u = (1 - t) / (1 - eps)  # t = 1 - (1 - eps) u, u of row b in [b/B, (b+1)/B)
    assert torch.all((u >= torch.arange(B) / B - 1e-6) & (u < (torch.arange(B) + 1) / B + 1e-6)), u
    frac = masked[:, 10:].float().mean(1)
    assert torch.all((frac - t).abs() < 4 * torch.sqrt(t * (1 - t) / (T - 10)) + 1e-3), (frac, t)
    assert abs(batch.stats["t_mean"] - float(t.mean())) < 1e-6


def weighted_log_prob(model, rows) -> float:
    """Sum over targets of weight x log p(target), from one forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model.logits(model(rows.input_ids, rows.attn)), -1)
    keep = rows.targets != IGNORE
    picked = logp[keep].gather(1, rows.targets[keep][:, None])[:, 0]
    return float((picked * rows.weights[keep].double()).sum())


def exact_elbo(model, obj, tokens: torch.Tensor) -> float:
    """sum over non-empty masks M of (m-1)!(n-m)!/n! x sum_{i in M} log p(x_i | x without M)."""
    n, mask_id, cls = len(tokens), obj.vocab["[MASK]"], obj.vocab["[CLS]"]
    total = 0.0
    for m in range(1, n + 1):
        weight = math.factorial(m - 1) * math.factorial(n - m) / math.factorial(n)
        for M in itertools.combinations(range(n), m):
            ids = tokens.clone()
            ids[list(M)] = mask_id
            x = torch.cat([torch.tensor([cls]), ids])[None]
            with torch.no_grad():
                logp = torch.log_softmax(model.logits(model(x, "bidirectional")), -1)[0]
            total += weight * sum(float(logp[i + 1, tokens[i]]) for i in M)
    return total


def test_the_elbo_estimate_is_unbiased_and_converges_to_the_exact_elbo():
    model = tiny_encoder(seed=3)
    tokens = random_blocks(1, 5, seed=4)[0]
    mdlm = make_objective("mdlm")
    exact = exact_elbo(model, mdlm, tokens)

    def estimates(K: int, seeds: int) -> np.ndarray:
        objectives = (type(mdlm)(mdlm.Options(score_samples=K, score_seed=s), mdlm.vocab) for s in range(seeds))
        return np.array([weighted_log_prob(model, obj.score_rows(tokens)) for obj in objectives])

    small, large = estimates(8, 100), estimates(512, 20)
    assert abs(small.mean() - exact) < 4 * small.std() / math.sqrt(len(small))  # unbiased
    error_small, error_large = np.abs(small - exact).mean(), np.abs(large - exact).mean()
    assert error_large < error_small / 4  # 64x the samples: at least sqrt(64)/2 less error
    assert error_large < 0.001 * abs(exact), (error_large, exact)  # measured: 0.003 nats of 18.5


def test_score_rows_draw_the_same_masks_for_sentences_of_one_length():
    obj = make_objective("mdlm", score_samples=6)
    a, b = random_blocks(2, 7, seed=5)
    ra, rb = obj.score_rows(a), obj.score_rows(b)
    assert torch.equal(ra.targets != IGNORE, rb.targets != IGNORE) and torch.equal(ra.weights, rb.weights)
    assert len(ra.targets) == 6 and (ra.targets != IGNORE).any(1).all()  # every row masks something


def test_trained_model_scores_are_the_weighted_sums_of_its_rows(tiny_run):
    model = TrainedModel(tiny_run("mdlm"))
    sentences = ["the company said it expects higher sales", "shares fell"]
    totals, counts = model.score(sentences, max_rows=5)
    for s, total, count in zip(sentences, totals, counts):
        ids = torch.tensor(model.ids(s))
        rows = model.objective.score_rows(ids)
        assert count == len(ids)
        np.testing.assert_allclose(total, weighted_log_prob(model.model, rows), rtol=1e-5, atol=1e-4)
