"""Fine-tuning through the pooled position learns planted tasks, is seeded, and leaves the run alone."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from objbench.harness.reading import TrainedModel
from objbench.tasks.finetune import Labelled, finetune

WORDS = "the a of market stock company year new said share price".split()


def keyword_task(n: int, seed: int) -> Labelled:
    """Label 1 iff the sentence holds "up" rather than "down", somewhere in filler words."""
    rng = random.Random(seed)
    texts, y = [], []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randrange(len(words) + 1), "up" if i % 2 else "down")
        texts.append(" ".join(words))
        y.append(i % 2)
    return Labelled(texts, np.array(y))


def counting_pairs(n: int, seed: int) -> Labelled:
    """Pairs whose score is how often "up" occurs in the first sentence."""
    rng = random.Random(seed)
    texts, y = [], []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(5)] + ["up"] * (i % 4)
        rng.shuffle(words)
        texts.append((" ".join(words), "the market"))
        y.append(float(i % 4))
    return Labelled(texts, np.array(y, np.float32))


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_learns_a_planted_classification_through_the_declared_position(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    ft = finetune(model, keyword_task(160, 0), keyword_task(60, 1), keyword_task(60, 2), n_classes=2,
                  lrs=[1e-3, 3e-3], epochs=4, batch_size=16, seed=0)
    assert ft.test_score > 0.9 and ft.lr in (1e-3, 3e-3)
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items()), \
        "fine-tuning must train a copy, never the run's model"


def test_learns_a_planted_pair_regression(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    ft = finetune(model, counting_pairs(160, 0), counting_pairs(60, 1), counting_pairs(60, 2), n_classes=None,
                  lrs=[3e-3], epochs=4, batch_size=16, seed=0)
    assert ft.test_score > 0.8  # Spearman
    assert ft.test_pred.dtype == np.float32 and ft.test_pred.shape == (60,)


def test_seeded_and_leaves_the_global_rng_alone(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    data = keyword_task(40, 0), keyword_task(20, 1), keyword_task(20, 2)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    runs = [finetune(model, *data, n_classes=2, lrs=[1e-3], epochs=1, batch_size=8, seed=5) for _ in range(2)]
    assert torch.equal(torch.rand(1), expected_next)
    assert runs[0].val_score == runs[1].val_score and np.array_equal(runs[0].test_pred, runs[1].test_pred)
