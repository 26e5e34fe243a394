"""Fine-tuning through the pooled features: a copy of the encoder plus a linear head, all trained.

The pooling is the objective's declared ``pooling`` ([CLS] under bidirectional reading, the
last token under causal reading, or the mean over the text), on inputs built by `TrainedModel.inputs` under
the objective's reading attention: single sentences ``[CLS] A`` or pairs
``[CLS] A [SEP] B [SEP]`` with segment ids. The run's own model is never modified.
Learning rates come from a small fixed grid, picked on validation; test is read once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from objbench.harness.model import Encoder
from objbench.harness.reading import Text, TrainedModel
from objbench.tasks.probing import spearman


@dataclass
class Labelled:
    """Inputs and targets: class ids (int) for classification, floats for regression."""

    texts: list[Text]
    y: np.ndarray


@dataclass
class Finetuned:
    lr: float
    val_score: float
    test_score: float
    test_pred: np.ndarray  # class ids or regression outputs, one per test input


def finetune(model: TrainedModel, train: Labelled, validation: Labelled, test: Labelled, *,
             n_classes: int | None, lrs: Sequence[float], epochs: int, batch_size: int,
             seed: int) -> Finetuned:
    """Fine-tune once per learning rate; keep the one best on validation.

    ``n_classes=None`` means regression (MSE on standardised targets; scored by Spearman),
    otherwise classification (cross-entropy; scored by accuracy).
    """
    best: Finetuned | None = None
    for lr in lrs:
        enc, head = _train(model, train, n_classes, lr, epochs, batch_size, seed)
        val = _score(_predict(model, enc, head, validation.texts, batch_size, n_classes), validation.y, n_classes)
        if best is None or val > best.val_score:
            pred = _predict(model, enc, head, test.texts, batch_size, n_classes)
            best = Finetuned(lr, val, _score(pred, test.y, n_classes), pred)
    assert best is not None, "lrs is validated to be non-empty"
    return best


def _forward(enc: Encoder, head: nn.Linear, model: TrainedModel, texts: list[Text]) -> torch.Tensor:
    x = model.inputs(texts)
    dev = model.device
    hidden = enc(x.input_ids.to(dev), x.attn.to(dev), None, x.segment_ids.to(dev))
    return head(x.pool(hidden))


def _train(model: TrainedModel, data: Labelled, n_classes: int | None, lr: float, epochs: int,
           batch_size: int, seed: int) -> tuple[Encoder, nn.Linear]:
    dev = model.device
    y = torch.as_tensor(data.y)
    if n_classes is None:  # standardised targets: the head starts near the right scale
        y = ((y - y.mean()) / y.std().clamp(min=1e-6)).float()
    # The forked RNG seeds the head's init and any dropout without touching the global RNG.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        enc = copy.deepcopy(model.model).train()
        head = nn.Linear(enc.cfg.d_model, n_classes or 1).to(dev)
        params = [*enc.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        total = epochs * math.ceil(len(data.texts) / batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / total)  # linear decay
        for _ in range(epochs):
            order = torch.randperm(len(data.texts), generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                out = _forward(enc, head, model, [data.texts[i] for i in idx])
                target = y[idx].to(dev)
                loss = F.cross_entropy(out, target) if n_classes else F.mse_loss(out[:, 0], target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
    return enc.eval(), head


@torch.no_grad()
def _predict(model: TrainedModel, enc: Encoder, head: nn.Linear, texts: list[Text], batch_size: int,
             n_classes: int | None) -> np.ndarray:
    out = torch.cat([_forward(enc, head, model, texts[s:s + batch_size]).float().cpu()
                     for s in range(0, len(texts), batch_size)])
    return out.argmax(1).numpy() if n_classes else out[:, 0].numpy()


def _score(pred: np.ndarray, y: np.ndarray, n_classes: int | None) -> float:
    return float((pred == y).mean()) if n_classes else spearman(pred, y)
