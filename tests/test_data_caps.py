"""Data-constrained runs: a cap on unique training data, repeated in epochs, counted and swept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from objbench.harness.blocks import SeenBlocks, batch_rows
from objbench.harness.cli import main
from objbench.harness.config import capped_arm
from objbench.harness.data import cap_documents
from objbench.harness.errors import ConfigError
from objbench.harness.study import load_study, run_study
from objbench.harness.trainer import Trainer
from tests.test_trainer import config, interrupted_run, metrics, weights

SEP = 2


def _packed(lengths: list[int], block: int) -> np.ndarray:
    """Documents of the given lengths (token ids from 10 up), each ended by [SEP], packed."""
    stream = np.concatenate([np.r_[np.arange(10, 10 + n), SEP] for n in lengths]).astype(np.uint16)
    return stream[: len(stream) // block * block].reshape(-1, block)


def test_a_cap_keeps_a_prefix_of_whole_documents_in_whole_blocks():
    train = _packed([30, 50, 20, 70, 40], block=8)  # documents end at tokens 31, 82, 103, 174
    capped = cap_documents(train, 110, SEP)
    stream = train.ravel()
    assert np.array_equal(capped.ravel(), stream[: capped.size])  # a prefix, in order
    assert capped.shape[1] == 8 and capped.size == 103 // 8 * 8  # up to the document ending at 103
    assert cap_documents(train, 103, SEP).size == 96 and cap_documents(train, 102, SEP).size == 80


@pytest.mark.parametrize("cap, message", [(10_000, "not below"), (20, "no whole document")])
def test_a_cap_that_cannot_hold_a_document_or_caps_nothing_is_a_clear_error(cap, message):
    with pytest.raises(ConfigError, match=message):
        cap_documents(_packed([30, 50, 20, 70, 40], block=8), cap, SEP)


def test_unique_blocks_seen_replay_from_the_seed():
    seen = SeenBlocks(50, 8, seed=3)
    for step in range(20):  # 6 steps per epoch: over three epochs
        assert SeenBlocks(50, 8, seed=3, steps=step).count == seen.count
        seen.add(step)
    first_epoch = {int(r) for step in range(6) for r in batch_rows(50, 8, step, 3)}
    assert SeenBlocks(50, 8, seed=3, steps=6).count == len(first_epoch) == 48  # 2 left out
    assert seen.count == 50


@pytest.mark.parametrize("objective", ["mlm", "mixture", "schedule"])  # composites: their defaults
def test_a_capped_run_repeats_its_data_in_epochs_and_resumes_bit_identical(tmp_path, objective):
    cfg = config(objective, "data.unique_tokens=2000", "budget.steps=12", "train.checkpoint_every=1")
    Trainer(cfg, tmp_path / "full", progress=False).run()
    rows = metrics(tmp_path / "full")
    last = rows[-1]
    train_tokens = last["tokens"] / last["epoch"]  # the capped split: whole blocks, at most the cap
    assert last["epoch"] > 1.5 and train_tokens <= 2000 and train_tokens == pytest.approx(round(train_tokens / 32) * 32)
    assert last["unique_tokens"] <= train_tokens
    assert [r["unique_tokens"] for r in rows[1:]] == sorted(r["unique_tokens"] for r in rows[1:])

    interrupted_run(cfg, tmp_path / "cut", step=9)  # mid-epoch
    assert metrics(tmp_path / "cut") == rows
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_a_study_sweeps_data_caps_without_copying_arms(tmp_path, capsys):
    spec = {
        "name": "caps", "reference": "clm", "seeds": [0], "budget": {"steps": 6},
        "arms": [{"name": "clm", "objective": "clm"}], "data_caps": [None, 3000],
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
        "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
        "train": {"batch_size": 8, "eval_points": 2, "threads": 2}, "probe_at": [0.5, 1.0],
        "tasks": {"agreement": {"max_per_phenomenon": 4}},
    }
    (tmp_path / "caps.yaml").write_text(yaml.safe_dump(spec))
    main(["study", "validate", str(tmp_path / "caps.yaml")])
    assert capsys.readouterr().out.endswith("valid (1 arm x 2 data caps x 1 seed: 2 runs)\n")
    study = load_study(tmp_path / "caps.yaml")
    runs = study.run_configs()
    assert [(arm.name, cfg.data.unique_tokens) for arm, cfg in runs] == [("clm-all", None), ("clm-3k", 3000)]
    assert capped_arm("mlm", 1_250_000) == "mlm-1.25M"
    assert run_study(study, tmp_path / "out")
    capped = [json.loads(l) for l in (tmp_path / "out/runs/clm-3k/seed0/results.jsonl").read_text().splitlines()]
    whole = [json.loads(l) for l in (tmp_path / "out/runs/clm-all/seed0/results.jsonl").read_text().splitlines()]
    assert max(r["epoch"] or 0 for r in capped) > 0.5 > max(r["epoch"] or 0 for r in whole)  # none at step 0
    assert 0 < max(r["unique_tokens"] or 0 for r in capped) <= 3000
    report = (tmp_path / "out/report.md").read_text()
    assert "figures/data_use.png" in report and "Arms: clm-all, clm-3k (reference: clm-all)" in report
    assert "budget used: epochs over the training data" in report


def test_data_caps_and_a_fixed_cap_exclude_each_other(tmp_path):
    spec = {"name": "s", "reference": "a", "budget": {"steps": 2}, "arms": [{"name": "a", "objective": "clm"}],
            "data_caps": [1000, 1000]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="data_caps must be unique"):
        load_study(tmp_path / "s.yaml")
    spec.update(data_caps=[1000], data={"unique_tokens": 500})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="not both"):
        load_study(tmp_path / "s.yaml")
