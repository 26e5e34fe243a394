"""Linear probes and their control task, on planted numpy features and on a tiny model's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from objbench.harness.reading import TrainedModel
from objbench.tasks.probing import (MEAN, ProbeSplit, control_labels, majority_acc, pair_features,
                                    pooled_features, probe_layers, ridge_layers)

N_LAYERS, D = 3, 8


def planted(n: int, seed: int, informative_layer: int = 2) -> ProbeSplit:
    """Binary labels linearly readable from one layer only; the other layers are noise.

    Each example is its own control key, as for sentence tasks.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, N_LAYERS, D)).astype(np.float32)
    x[:, informative_layer, 0] += np.where(y == 1, 4.0, -4.0)
    return ProbeSplit(x, y, np.array([f"{seed}:{i}" for i in range(n)]))


def test_planted_features_are_found_and_selective():
    layers = probe_layers(planted(400, 0), planted(200, 1), planted(400, 2), seed=0)
    assert [p.layer for p in layers] == [0, 1, 2]
    top = layers[2]
    assert top.probe_acc > 0.97 and top.val_acc > 0.97
    assert abs(top.control_acc - 0.5) < 0.1  # per-example random labels cannot transfer to test
    assert top.selectivity > 0.35
    for noise in layers[:2]:
        assert abs(noise.probe_acc - 0.5) < 0.1 and abs(noise.selectivity) < 0.15
    assert top.correct.dtype == bool and top.correct.mean() == pytest.approx(top.probe_acc)


def test_random_labels_stay_at_chance():
    def shuffled(n: int, seed: int) -> ProbeSplit:
        s = planted(n, seed)
        s.y = np.random.default_rng(seed + 100).integers(0, 2, n)  # labels unrelated to x
        return s

    train, val, test = shuffled(400, 0), shuffled(200, 1), shuffled(400, 2)
    for p in probe_layers(train, val, test, seed=0, cs=(0.1, 1.0)):
        assert abs(p.probe_acc - 0.5) < 0.1
        assert abs(p.selectivity) < 0.15
    assert abs(majority_acc(train.y, test.y) - 0.5) < 0.1


def test_control_labels_are_per_key_seeded_and_follow_train_marginals():
    keys = np.array(["the", "dog", "the", "cat", "dog", "the"])
    train = ProbeSplit(np.zeros((6, 1, 1)), np.array(["DET", "NOUN", "DET", "NOUN", "NOUN", "DET"]), keys)
    test = ProbeSplit(np.zeros((3, 1, 1)), np.array(["NOUN", "DET", "NOUN"]), np.array(["cat", "the", "mouse"]))
    a_train, a_test = control_labels([train, test], train.y, seed=3)
    mapping = {}
    for k, label in [*zip(train.keys, a_train), *zip(test.keys, a_test)]:
        assert mapping.setdefault(k, label) == label  # one label per word type, across splits
    assert set(mapping.values()) <= {"DET", "NOUN"}
    again = control_labels([train, test], train.y, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(again, (a_train, a_test)))

    many = ProbeSplit(np.zeros((4000, 1, 1)), np.zeros(4000), np.arange(4000).astype(str))
    skewed = np.array([0] * 900 + [1] * 100)
    drawn = control_labels([many], skewed, seed=0)[0]
    assert drawn.mean() == pytest.approx(0.1, abs=0.02)


def test_majority_baseline_uses_the_training_majority():
    assert majority_acc(np.array([1, 1, 0]), np.array([0, 0, 1, 0])) == 0.25


def test_ridge_probe_recovers_a_planted_score():
    rng = np.random.default_rng(0)

    def split(n: int) -> ProbeSplit:
        x = rng.normal(size=(n, 2, D))
        return ProbeSplit(x, x[:, 1, 0] * 2 + 0.05 * rng.normal(size=n))

    (val_0, rho_0), (val_1, rho_1) = ridge_layers(split(300), split(100), split(200))
    assert rho_1 > 0.95 and abs(rho_0) < 0.25
    assert val_1 > 0.95 and abs(val_0) < 0.3


def test_pair_features_are_symmetric():
    a, b = np.random.default_rng(0).normal(size=(2, 5, 3, 4))
    assert np.allclose(pair_features(a, b), pair_features(b, a))
    assert pair_features(a, b).shape == (5, 3, 8)


@pytest.mark.parametrize("objective", ["mlm", "clm", "mntp"])
def test_pooled_features_read_the_objective_s_position(tiny_run, objective):
    """The declared pooling and the mean, read once each (mntp declares the mean itself)."""
    model = TrainedModel(tiny_run(objective))
    texts = ["the market fell sharply", "a", ("shares rose", "the company said")]
    feats = pooled_features(model, texts, mean=True, batch_size=2)
    declared = model.objective.pooling
    assert set(feats) == {declared, MEAN}
    assert feats[declared].shape == (3, model.cfg.model.n_layers + 1, model.cfg.model.d_model)
    np.testing.assert_allclose(feats[declared], model.sentence_features(texts), atol=1e-5)
    # mean pooling of one sentence, by hand: its text tokens, [CLS] excluded, at every layer
    x = model.inputs([texts[0]])
    with torch.no_grad():
        layers = model.model(x.input_ids, x.attn, None, x.segment_ids, all_layers=True)
    by_hand = torch.stack([h[0, 1:].mean(0) for h in layers]).numpy()
    np.testing.assert_allclose(feats[MEAN][0], by_hand, atol=1e-5)


def test_torch_probe_agrees_with_scikit_learn():
    """Where both converge, the torch fit (used on GPUs) reaches scikit-learn's optimum: the
    same predictions and, up to the solvers' tolerance, the same weights, for two classes (one
    logit) and for several (softmax)."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from objbench.tasks.logistic import TorchLogistic

    rng = np.random.default_rng(0)
    for n_classes in (2, 4):
        centers = rng.normal(size=(n_classes, 6))
        y = rng.integers(0, n_classes, 300)
        x = (centers[y] + rng.normal(size=(300, 6)) * 1.5).astype(np.float32)
        x[:, 5] = 3.0  # a constant feature: standardised to 0 by both
        x_test = (centers[y] + rng.normal(size=(300, 6)) * 1.5).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scikit-learn must converge: this is its optimum
            sk = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000, tol=1e-8)).fit(x, y)
        ours = TorchLogistic(0.5, max_iter=1000, device="cpu", tol=1e-8).fit(x, y)
        assert np.array_equal(ours.predict(x_test), sk.predict(x_test)), n_classes
        coef, bias = sk[-1].coef_, sk[-1].intercept_
        np.testing.assert_allclose(ours.weight_.detach().numpy(), coef, atol=1e-3)
        np.testing.assert_allclose(ours.bias_.detach().numpy(), bias, atol=1e-3)
        assert 0.5 < float((sk.predict(x_test) == y).mean()) < 1.0  # neither trivial nor separable


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probes_on_the_gpu_agree_with_the_cpu_probes():
    train, val, test = planted(400, 0), planted(200, 1), planted(400, 2)
    cpu = probe_layers(train, val, test, seed=0, max_iter=1000)
    gpu = probe_layers(train, val, test, seed=0, max_iter=1000, device="cuda")
    for a, b in zip(cpu, gpu, strict=True):
        assert abs(a.probe_acc - b.probe_acc) <= 0.01 and abs(a.control_acc - b.control_acc) <= 0.02
