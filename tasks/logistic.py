"""Logistic-regression probes fit in torch, on the device the features come from.

The same model and objective as scikit-learn's ``StandardScaler`` then
``LogisticRegression(C, solver="lbfgs")``, so where both converge they find the same optimum
(tested): features standardised by the training split's mean and (population) standard
deviation; one logit for two classes, a softmax over the classes for more; minimised
``mean_i cross_entropy_i + ||W||^2 / (2 C n)`` (the intercept is not penalised) by L-BFGS with
a strong-Wolfe line search, stopping after ``max_iter`` iterations or when no gradient entry
exceeds ``tol``, as scikit-learn's ``max_iter`` and ``tol`` do. On a GPU this keeps the fits
next to the features; scikit-learn stays the default on CPU, where it is faster at probe sizes
(bench/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class TorchLogistic:
    """``fit``/``predict`` like a scikit-learn pipeline of scaler and logistic regression."""

    def __init__(self, C: float, max_iter: int, device: torch.device | str, tol: float = 1e-4) -> None:
        self.C, self.max_iter, self.tol, self.device = C, max_iter, tol, torch.device(device)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "TorchLogistic":
        self.classes_, target = np.unique(y, return_inverse=True)
        feats = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        self.mean_ = feats.mean(0)
        std = feats.std(0, correction=0)
        self.scale_ = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay 0
        feats = (feats - self.mean_) / self.scale_
        target_t = torch.as_tensor(target, device=self.device)
        outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        self.weight_ = torch.zeros(outputs, x.shape[1], device=self.device, requires_grad=True)
        self.bias_ = torch.zeros(outputs, device=self.device, requires_grad=True)
        penalty = 1.0 / (2 * self.C * len(target))
        solver = torch.optim.LBFGS([self.weight_, self.bias_], max_iter=self.max_iter,
                                   tolerance_grad=self.tol, tolerance_change=64 * float(np.finfo(float).eps),
                                   history_size=10, line_search_fn="strong_wolfe")  # scikit-learn's settings

        def objective() -> torch.Tensor:
            solver.zero_grad()
            logits = feats @ self.weight_.T + self.bias_
            loss = self._loss(logits, target_t) + penalty * self.weight_.square().sum()
            loss.backward()
            return loss

        solver.step(objective)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            feats = (torch.as_tensor(x, dtype=torch.float32, device=self.device) - self.mean_) / self.scale_
            logits = feats @ self.weight_.T + self.bias_
            index = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        return self.classes_[index.cpu().numpy()]

    @staticmethod
    def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
        return F.cross_entropy(logits, target)
