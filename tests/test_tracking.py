"""Metric sinks: TensorBoard per (arm, seed) under a study, sinks passed in or registered by name,
checked before any work, and no part of a run's identity."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.errors import ConfigError
from objbench.harness.study import load_study, run_study
from objbench.harness.trainer import Trainer, checked
from objbench.harness.tracking import TRACKERS, Tracker, scalars
from tests.conftest import TINY

pytest.importorskip("tensorboard", reason="TensorBoard is the optional extra objbench[tensorboard] "
                    "(./setup.sh installs it)")
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer  # noqa: E402


def tiny_cfg(*overrides: str) -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": "mlm"}, [*TINY, *overrides]))


def metrics_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def board_of(folder: Path) -> EventMultiplexer:
    """What `tensorboard --logdir folder` shows: one run per folder holding event files."""
    return EventMultiplexer().AddRunsFromDirectory(str(folder)).Reload()


def curves(accumulator) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of one TensorBoard run (the last value a step was given)."""
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()["scalars"]}


def expected_curves(rows: list[dict]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        for tag, value in scalars(row).items():
            out.setdefault(tag, {})[row["step"]] = value
    return out


def test_study_curves_overlay_one_tensorboard_run_per_arm_and_seed(tmp_path):
    spec = {"name": "tb", "reference": "mlm", "seeds": [0], "budget": {"steps": 4},
            "arms": [{"name": "mlm", "objective": "mlm"}, {"name": "clm", "objective": "clm"}],
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
            "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
            "train": {"batch_size": 8, "eval_points": 2, "threads": 2, "log_to": ["tensorboard"]}}
    (tmp_path / "tb.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert run_study(load_study(tmp_path / "tb.yaml"), out)

    board = board_of(out / "runs")
    assert set(board.Runs()) == {"mlm/seed0/tensorboard", "clm/seed0/tensorboard"}
    for run in board.Runs():
        got = curves(board.GetAccumulator(run))
        want = expected_curves(metrics_of(out / "runs" / Path(run).parent))
        assert {"train/loss", "val/loss", "train/lr", "train/tokens_per_s", "budget/steps",
                "budget/tokens", "budget/input_tokens", "budget/targets", "budget/flops"} <= set(want)
        assert got.keys() == want.keys()
        for tag, points in want.items():  # event files hold float32
            assert got[tag] == pytest.approx(points, rel=1e-6), (run, tag)
        assert sorted(got["train/loss"]) == [1, 2, 3, 4] and sorted(got["val/loss"]) == [0, 2, 4]
    mlm_rates = set(curves(board.GetAccumulator("mlm/seed0/tensorboard")))
    assert {"objective/mask_rate_applied", "objective/p_mask_applied"} <= mlm_rates


def crash_at(step: int, monkeypatch) -> None:
    """Make training fail once it has done ``step`` steps, as a lost node would."""
    real_step = Trainer.train_step

    def failing(self):
        if self.counters.step == step:
            raise RuntimeError("node lost")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", failing)


def test_resumed_run_shows_each_step_once(tmp_path, monkeypatch):
    cfg = tiny_cfg("train.log_to=[tensorboard]")
    crash_at(3, monkeypatch)  # step 3 is logged, but the last checkpoint is step 2's
    with pytest.raises(RuntimeError, match="node lost"):
        Trainer(cfg, tmp_path, progress=False).run()
    monkeypatch.undo()
    Trainer(cfg, tmp_path, progress=False).run()  # resumes from step 2 and redoes step 3
    accumulator = board_of(tmp_path).GetAccumulator("tensorboard")
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]
    got, want = curves(accumulator), expected_curves(metrics_of(tmp_path))
    assert got.keys() == want.keys()
    assert all(got[tag] == pytest.approx(want[tag], rel=1e-6) for tag in want)


class Recorder(Tracker):
    """A user's own tracker, registered by name."""

    description = "keeps rows in memory (test double)"
    made: list["Recorder"] = []

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        super().__init__(run_dir, cfg)
        self.rows: list[dict] = []
        self.closed = 0
        Recorder.made.append(self)

    def log(self, row) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed += 1


class ListSink:
    """A sink passed in by an API caller: anything with log and close."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.closed = 0

    def log(self, row) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed += 1


def test_registered_and_passed_in_sinks_get_every_row(tmp_path):
    TRACKERS.register("recorder", Recorder)
    try:
        passed = ListSink()
        Trainer(tiny_cfg("train.log_to=[recorder]"), tmp_path, progress=False, sinks=[passed]).run()
    finally:
        TRACKERS.unregister("recorder")
    (registered,) = Recorder.made
    assert registered.run_dir == tmp_path and registered.cfg.train.log_to == ["recorder"]
    assert registered.rows == passed.rows == metrics_of(tmp_path)
    assert registered.closed == passed.closed == 1


def test_log_to_is_checked_before_data_and_is_no_part_of_identity(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="train.log_to: unknown tracker 'tensorbord'. Did you mean "
                                          "'tensorboard'"):
        checked(tiny_cfg("train.log_to=[tensorbord]"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'objbench\[tensorboard\]'"):
        checked(tiny_cfg("train.log_to=[tensorboard]"))
    monkeypatch.undo()

    plain, logged = tiny_cfg(), tiny_cfg("train.log_to=[tensorboard]")
    assert plain.settings_hash() == logged.settings_hash()
    crash_at(2, monkeypatch)
    with pytest.raises(RuntimeError, match="node lost"):
        Trainer(plain, tmp_path, progress=False).run()
    monkeypatch.undo()
    Trainer(logged, tmp_path, progress=False).run()  # the same run resumes, now logging
    assert [m["step"] for m in metrics_of(tmp_path)] == [0, 1, 2, 3, 4]
    assert "tensorboard" in (tmp_path / "config.yaml").read_text()  # kept, but no part of the run's identity
    accumulator = board_of(tmp_path).GetAccumulator("tensorboard")
    assert [e.step for e in accumulator.Scalars("train/loss")] == [3, 4]
