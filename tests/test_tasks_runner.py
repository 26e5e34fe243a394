"""The task runner: options validated before any work, rows checked, files written by `objbench probe`."""

from __future__ import annotations

import json

import pytest

from objbench.harness.cli import main
from objbench.harness.errors import ConfigError, PluginError
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import TASKS
from objbench.tasks.base import ROW_KEYS, Task, TaskResult
from objbench.tasks.runner import ITEMS_FILE, RESULTS_FILE, evaluate, parse_options, resolve


def test_unknown_option_names_the_task_and_the_key():
    with pytest.raises(ConfigError, match=r"task 'pos'[\s\S]*max_trian: unknown key \(did you mean 'max_train'\?\)"):
        resolve(["pos"], {"pos": {"max_trian": 10}})


def test_bad_option_value_names_the_task_and_the_key():
    with pytest.raises(ConfigError, match=r"task 'sentiment'[\s\S]*readings"):
        resolve(["sentiment"], {"sentiment": {"readings": ["zero-shot"]}})


def test_options_for_a_task_not_requested_are_an_error():
    with pytest.raises(ConfigError, match="pos"):
        resolve(["sentiment"], {"pos": {"max_train": 10}})


def test_unknown_task_suggests_a_name():
    with pytest.raises(PluginError, match="Did you mean 'sentiment'"):
        resolve(["sentimnet"], {})


def test_parse_options():
    assert parse_options(["pos.max_train=500", "sentiment.readings=[probe, finetune]", "pos.C=[0.1, 1]"]) == {
        "pos": {"max_train": 500, "C": [0.1, 1]}, "sentiment": {"readings": ["probe", "finetune"]}}
    for bad in ("pos=3", "max_train=3", "pos.max_train"):
        with pytest.raises(ConfigError, match="task.key=value"):
            parse_options([bad])


class Malformed(Task):
    name = "malformed"
    description = "returns a row that packs two fields into one key"

    def run(self, model, seed):
        result = TaskResult(self.name)
        result.rows.append({k: None for k in ROW_KEYS if k != "pooling"} | {"metric": "acc,none"})
        return result


def test_a_task_s_malformed_rows_are_rejected(tiny_run):
    TASKS.register("malformed", Malformed)
    try:
        with pytest.raises(PluginError, match="malformed.*expected exactly"):
            evaluate(TrainedModel(tiny_run("mlm")), ["malformed"], {}, seed=0)
    finally:
        TASKS.unregister("malformed")


def test_probe_command_writes_rows_items_and_a_table(tiny_run, capsys):
    run_dir = tiny_run("mlm")
    main(["probe", str(run_dir), "--task", "sentiment", "--task", "agreement",
          "--set", "sentiment.max_train=40", "--set", "sentiment.max_validation=20",
          "--set", "sentiment.max_test=20", "--set", "sentiment.max_iter=50",
          "--set", "agreement.max_per_phenomenon=1"])
    rows = [json.loads(line) for line in (run_dir / RESULTS_FILE).read_text().splitlines()]
    items = [json.loads(line) for line in (run_dir / ITEMS_FILE).read_text().splitlines()]
    assert {r["task"] for r in rows} == {"sentiment", "agreement"}
    assert {i["task"] for i in items} == {"sentiment", "agreement"}
    assert all(tuple(r) == ROW_KEYS for r in rows)
    out = capsys.readouterr().out
    assert "probe_acc@majority" in out and "probe_acc" in out and "acc_sum@trigram" in out


def test_probe_command_reports_bad_options_without_a_traceback(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(tiny_run("mlm")), "--task", "pos", "--set", "pos.max_trian=3"])
    assert exit_info.value.code == 2
    assert "max_trian" in capsys.readouterr().err
