"""Continued pre-training: a run starts from another run's checkpoint at a budget fraction and
spends the rest of the same budget; in a study, parents train first and children's hashes
include their parents'."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from objbench.harness.checkpoint import checkpoints
from objbench.harness.errors import CheckpointError
from objbench.harness.trainer import Trainer
from tests.test_trainer import Stop, config, metrics, weights


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """clm, 8 steps, evaluation points at 4 and 8 steps."""
    out = tmp_path_factory.mktemp("parent")
    Trainer(config("clm", "budget.steps=8"), out, progress=False).run()
    return out


def child(parent, *overrides: str):
    return config("mlm", "budget.steps=8", f"init.run={parent}", "init.at=0.5", *overrides)


def test_a_child_starts_from_the_parent_s_weights_and_counters_and_ends_on_the_same_budget(parent, tmp_path):
    t = Trainer(child(parent), tmp_path, progress=False)
    t._start_from_parent()
    at_half = checkpoints(parent)[0]
    saved = load_file(str(at_half / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in t.model.state_dict().items())
    t.run()
    mine, theirs = metrics(tmp_path), {r["step"]: r for r in metrics(parent)}
    assert mine[0]["step"] == 4 and "val_loss" in mine[0]  # the child's own loss at the start
    for key in ("tokens", "targets", "flops"):
        assert mine[0][key] == theirs[4][key]  # the parent's half of the budget, counted
    assert mine[-1]["step"] == 8 and mine[-1]["tokens"] == theirs[8]["tokens"]
    assert mine[-1]["targets"] < theirs[8]["targets"]  # mlm predicts 15% where clm predicts all
    assert [r["step"] for r in mine if "val_loss" in r] == [4, 8]


def test_a_child_resumes_bit_identical(parent, tmp_path):
    cfg = child(parent, "train.checkpoint_every=1")
    Trainer(cfg, tmp_path / "full", progress=False).run()

    def stop_at_6(t: Trainer) -> None:
        if t.counters.step == 6:
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg, tmp_path / "cut", callbacks=[stop_at_6], progress=False).run()
    Trainer(cfg, tmp_path / "cut", progress=False).run()
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides, message", [
    (["init.at=0.25"], r"no checkpoint at evaluation point init.at=0.25 \(it has \[0.5, 1.0\]\)"),
    (["model.d_ff=128"], "model.d_ff: checkpoint 64, this run 128"),
    (["seed=1"], "seed: checkpoint 0, this run 1"),
])
def test_a_parent_that_does_not_fit_is_refused_naming_why(parent, tmp_path, overrides, message):
    with pytest.raises(CheckpointError, match=message):
        Trainer(child(parent, *overrides), tmp_path, progress=False).run()
