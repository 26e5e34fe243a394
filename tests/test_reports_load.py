"""The loader reads what crashed or merged runs leave behind, and says what it ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from objbench.harness.errors import ConfigError, DataError
from objbench.reports.load import NO_LAYER, ReportWarning, load_study


def _row(arm: str, seed: int, value: float, **extra) -> dict:
    return {"study": "s", "arm": arm, "objective": "mlm", "options": "{}", "seed": seed,
            "budget_axis": "steps", "budget_value": 10, "step": 10, "tokens": 640, "flops": 1e9,
            "task": "val_loss", "metric": "loss", "split": "val", "layer": None, "pooling": None,
            "value": value, "n": 50, "higher_is_better": False, "final": True, **extra}


def _run(root: Path, arm: str, seed: int, state: str | None, results: str = "") -> Path:
    run = root / "runs" / arm / f"seed{seed}"
    run.mkdir(parents=True)
    if state is not None:
        (run / "status.json").write_text(json.dumps({
            "state": state, "error": "boom" if state == "failed" else None, "config_hash": "h",
            "wall_time_s": 1.0, "arm": arm, "seed": seed, "objective": "mlm", "options": {}}))
    (run / "results.jsonl").write_text(results)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 2.0}) + "\n")
    return run


def _study(root: Path, **config) -> Path:
    root.mkdir()
    (root / "study.yaml").write_text(yaml.safe_dump({
        "name": "s", "reference": "a", "budget": {"axis": "steps", "value": 10}, **config}))
    return root


def test_truncated_last_line_is_ignored_with_a_warning(tmp_path):
    root = _study(tmp_path / "s")
    good = json.dumps(_row("a", 0, 2.5))
    _run(root, "a", 0, "done", good + "\n" + good[:40])
    with pytest.warns(ReportWarning, match="last line"):
        data = load_study(root)
    assert data.results["value"].tolist() == [2.5]
    assert data.results["layer"].tolist() == [NO_LAYER] and data.results["group"].tolist() == [""]
    assert data.problems == ["runs/a/seed0/results.jsonl: ignored unreadable last line"
                             " (truncated write?)"]


def test_failed_running_and_statusless_runs_are_kept_but_not_analysed(tmp_path):
    root = _study(tmp_path / "s", arms=["a", "b"], seeds=[0, 1])
    _run(root, "a", 0, "done", json.dumps(_row("a", 0, 2.5)) + "\n")
    _run(root, "a", 1, "failed", json.dumps(_row("a", 1, 2.9)) + "\n")
    _run(root, "b", 0, "running")
    _run(root, "b", 1, None)
    with pytest.warns(ReportWarning):
        data = load_study(root)
    states = dict(zip(zip(data.runs["arm"], data.runs["seed"]), data.runs["state"]))
    assert states == {("a", 0): "done", ("a", 1): "failed", ("b", 0): "running",
                      ("b", 1): "unknown"}
    assert data.runs.set_index(["arm", "seed"]).loc[("a", 1), "error"] == "boom"
    assert len(data.results) == 2 and data.done_results["seed"].tolist() == [0]
    assert any("runs/b/seed1/status.json: missing" in p for p in data.problems)


def test_merged_shards_repeating_a_row_keep_one_and_report_conflicts(tmp_path):
    root = _study(tmp_path / "s")
    first, again, other = (json.dumps(_row("a", 0, v)) for v in (2.5, 2.5, 2.7))
    _run(root, "a", 0, "done", "\n".join([first, again]) + "\n")
    _run(root, "a", 1, "done", "\n".join([json.dumps(_row("a", 1, 2.6)), other.replace(
        '"seed": 0', '"seed": 1')]) + "\n")
    with pytest.warns(ReportWarning, match="different numbers"):
        data = load_study(root)
    assert sorted(data.results["value"]) == [2.5, 2.6]


def test_missing_or_invalid_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="study.yaml is missing"):
        load_study(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(
        {"name": "s", "reference": "a", "budget": {"axis": "epochs", "value": 3}}))
    with pytest.raises(ConfigError, match="steps, tokens, targets, flops"):
        load_study(tmp_path)
