"""Linear probes on frozen features, layer by layer, each with a control task.

A probe is standardised features -> logistic regression (scikit-learn on CPU; in torch on the
run's device where that is a GPU, `objbench.tasks.logistic`), with C picked on the validation
split. Every probe is paired with a control task (Hewitt & Liang 2019): the same
features, with each control key (a word type for token tasks, an example for sentence tasks)
given a random label drawn from the training label distribution. Selectivity = probe accuracy
- control accuracy: how much of the accuracy comes from the representation rather than from
the probe memorising its inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import ConstantInputWarning, spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from objbench.harness.progress import progress_bar
from objbench.harness.reading import Text, TrainedModel
from objbench.tasks.base import TaskResult
from objbench.tasks.logistic import TorchLogistic

MEAN = "mean"  # mean over the text tokens ([CLS] and padding excluded), at every layer
TOKEN_POOLING = "first-subtoken"  # token tasks read each word at its first sub-token
# The most feature bytes a streamed probe holds at once (`probe_streamed`): as many layers as
# fit, one layer at least. Fitting adds the probe's standardised copy of one layer.
FEATURE_BYTES = 1 << 30


@dataclass
class ProbeSplit:
    """One split of a probing set.

    ``x`` is ``(N, n_layers + 1, D)``; ``y`` the N labels; ``keys`` what the control task maps
    to a random label (the word form for token tasks, the text for sentence tasks; not needed
    by regression probes).
    """

    x: np.ndarray
    y: np.ndarray
    keys: np.ndarray | None = None


@dataclass
class LayerProbe:
    """One layer's probe (C picked on validation) and its control task, scored on test."""

    layer: int
    val_correct: np.ndarray  # (N_val,) bool: the probe's validation predictions that are right
    correct: np.ndarray  # (N_test,) bool: the probe's test predictions that are right
    control_acc: float

    @property
    def val_acc(self) -> float:
        return float(self.val_correct.mean())

    @property
    def probe_acc(self) -> float:
        return float(self.correct.mean())

    @property
    def selectivity(self) -> float:
        return self.probe_acc - self.control_acc


def control_labels(splits: Sequence[ProbeSplit], train_y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each split's control labels: one random label per key, fixed across splits.

    Labels are drawn from the training label distribution, so the control task has the same
    label marginals as the real one.
    """
    keys = np.unique(np.concatenate([s.keys for s in splits]))
    classes, counts = np.unique(train_y, return_counts=True)
    drawn = np.random.default_rng(seed).choice(classes, size=len(keys), p=counts / counts.sum())
    mapping = dict(zip(keys.tolist(), drawn))
    return [np.array([mapping[k] for k in s.keys.tolist()]) for s in splits]


def _fit_best(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
              cs: Sequence[float], max_iter: int, seed: int, device: torch.device):
    """The logistic-regression probe with the best validation accuracy over ``cs``: fit in
    torch on ``device`` when it is a GPU (`TorchLogistic`), else by scikit-learn.

    L-BFGS stops after ``max_iter`` iterations: a fixed compute budget, the same for every arm
    (control probes on random labels rarely converge), so convergence warnings are silenced.
    BLAS runs single-threaded: these matrices are small, and BLAS threads contending with
    torch's idle worker threads made fits 10-50x slower on 2 cores.
    """
    best, best_acc = None, -1.0
    for c in cs:
        if device.type != "cpu":
            clf = TorchLogistic(c, max_iter, device).fit(x_tr, y_tr)
        else:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(x_tr, y_tr)
        acc = float((clf.predict(x_va) == y_va).mean())
        if acc > best_acc:
            best, best_acc = clf, acc
    return best, best_acc


def majority_acc(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of always answering the most frequent training label."""
    classes, counts = np.unique(train_y, return_counts=True)
    return float((test_y == classes[counts.argmax()]).mean())


def probe_layers(train: ProbeSplit, validation: ProbeSplit, test: ProbeSplit, seed: int,
                 cs: Sequence[float] = (1.0,), max_iter: int = 200,
                 device: torch.device | str = "cpu") -> list[LayerProbe]:
    """Probe and control accuracy on test for every layer; C picked on validation, separately
    for each. Probes are fit on ``device`` (the run's: `TrainedModel.device`) when it is a GPU."""
    c_tr, c_va, c_te = control_labels([train, validation, test], train.y, seed)
    device, layers = torch.device(device), []
    for layer in range(train.x.shape[1]):
        x_tr, x_va, x_te = train.x[:, layer], validation.x[:, layer], test.x[:, layer]
        probe, _ = _fit_best(x_tr, train.y, x_va, validation.y, cs, max_iter, seed, device)
        control, _ = _fit_best(x_tr, c_tr, x_va, c_va, cs, max_iter, seed, device)
        layers.append(LayerProbe(layer, probe.predict(x_va) == validation.y, probe.predict(x_te) == test.y,
                                 float((control.predict(x_te) == c_te).mean())))
    return layers


def probe_streamed(read: Callable[[list[int]], list[ProbeSplit]], n_layers: int, n_rows: int, width: int,
                   seed: int, cs: Sequence[float] = (1.0,), max_iter: int = 200,
                   device: torch.device | str = "cpu") -> list[LayerProbe]:
    """`probe_layers` over features too large to hold for every layer at once.

    ``read(layers)`` returns the train, validation and test splits with features at those
    layers only, ``(N, len(layers), width)``; it is called for consecutive groups of layers,
    each as large as `FEATURE_BYTES` allows for ``n_rows`` rows (all splits, an upper bound),
    and a group's features are dropped before the next is read.
    """
    per_layer = max(1, n_rows * width * np.dtype(np.float32).itemsize)
    size = int(min(n_layers, max(1, FEATURE_BYTES // per_layer)))
    layers = []
    for start in range(0, n_layers, size):
        group = list(range(start, min(start + size, n_layers)))
        probes = probe_layers(*read(group), seed=seed, cs=cs, max_iter=max_iter, device=device)
        layers += [replace(p, layer=layer) for p, layer in zip(probes, group, strict=True)]
    return layers


def best_layer(layers: Sequence[LayerProbe], val_items: np.ndarray | None = None,
               first: int = 0) -> LayerProbe:
    """The layer (from ``first`` on) with the highest validation accuracy, on ``val_items`` (a
    bool mask) if given: the reading is chosen on validation, never on test; ties go to the
    lower layer."""
    keep = slice(None) if val_items is None else val_items
    return max(layers[first:], key=lambda p: float(p.val_correct[keep].mean()))


def add_probe_rows(result: TaskResult, layers: list[LayerProbe], pooling: str,
                   item_ids: Sequence[str] | None) -> LayerProbe:
    """Rows ``probe_acc``, ``control_acc`` and ``selectivity`` for every layer (n = test
    examples), and ``probe_acc`` at the layer best on validation (``layer`` None; its index in
    ``best_layer``) with, given ``item_ids`` (one per test example, in order), each test item's
    correctness there. Returns that layer's probe."""
    n = len(layers[0].correct)
    for p in layers:
        result.add("probe_acc", p.probe_acc, n, layer=p.layer, pooling=pooling)
        result.add("control_acc", p.control_acc, n, layer=p.layer, pooling=pooling, higher_is_better=False)
        result.add("selectivity", p.selectivity, n, layer=p.layer, pooling=pooling)
    best = best_layer(layers)
    result.add("probe_acc", best.probe_acc, n, pooling=pooling)
    result.add("best_layer", best.layer, len(best.val_correct), pooling=pooling, split="validation")
    if item_ids is not None:
        result.add_items("probe_acc", None, item_ids, best.correct, pooling=pooling)
    return best


def ridge_layers(train: ProbeSplit, validation: ProbeSplit, test: ProbeSplit,
                 alphas: Sequence[float] = (1.0, 100.0)) -> list[tuple[float, float]]:
    """(validation, test) Spearman correlation of a ridge regression probe per layer, alpha
    picked on validation."""
    out = []
    for layer in range(train.x.shape[1]):
        best, best_rho = None, -np.inf
        for a in alphas:
            with threadpool_limits(1):
                reg = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(train.x[:, layer], train.y)
            rho = spearman(reg.predict(validation.x[:, layer]), validation.y)
            if rho > best_rho:
                best, best_rho = reg, rho
        out.append((best_rho, spearman(best.predict(test.x[:, layer]), test.y)))
    return out


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman's rho; 0 for constant predictions (e.g. [CLS] at the embedding layer), which rank nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = spearmanr(pred, gold).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def pair_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SentEval-style features of a sentence pair from separate encodings: ``[|a - b|, a * b]``."""
    return np.concatenate([np.abs(a - b), a * b], axis=-1)


@torch.no_grad()
def pooled_features(model: TrainedModel, texts: Sequence[Text], mean: bool = True,
                    batch_size: int = 64, desc: str = "features") -> dict[str, np.ndarray]:
    """``(N, n_layers + 1, D)`` features per pooling, from one forward pass per batch.

    Always the objective's declared pooling (``model.objective.pooling``); with ``mean`` also
    the mean over text tokens, which reads every objective the same way (once, when the
    declared pooling is already the mean).
    """
    cfg = model.cfg.model
    names = list(dict.fromkeys([model.objective.pooling, *([MEAN] if mean else [])]))
    out = {p: np.zeros((len(texts), cfg.n_layers + 1, cfg.d_model), np.float32) for p in names}
    order = np.argsort([len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts])
    dev = model.device
    for start in progress_bar(range(0, len(texts), batch_size), desc=desc, leave=False):
        idx = order[start:start + batch_size]
        x = model.inputs([texts[i] for i in idx])
        layers = model.model(x.input_ids.to(dev), x.attn.to(dev), None, x.segment_ids.to(dev), all_layers=True)
        h = torch.stack(layers, 2).float().cpu()  # (B, T, L + 1, D)
        for name in names:
            out[name][idx] = x.pool(h, name).numpy()
    return out
