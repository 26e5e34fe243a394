"""Run registered tasks on a trained model: validate everything first, then evaluate and write rows.

`evaluate` is what a study calls for each checkpoint; `probe_run` backs ``objbench probe``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from objbench.harness.config import validate
from objbench.harness.errors import ConfigError, PluginError
from objbench.harness.progress import progress_bar
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import TASKS
from objbench.tasks.base import ITEM_KEYS, ROW_KEYS, Task

logger = logging.getLogger(__name__)

RESULTS_FILE = "probe_results.jsonl"
ITEMS_FILE = "probe_items.jsonl"


def resolve(task_names: list[str], task_options: dict[str, dict]) -> list[Task]:
    """Every task built with validated options, before any work starts."""
    repeated = sorted({n for n in task_names if task_names.count(n) > 1})
    if repeated:
        raise ConfigError(f"task(s) {repeated} requested more than once")
    stray = sorted(set(task_options) - set(task_names))
    if stray:
        raise ConfigError(f"options given for task(s) {stray} that are not requested "
                          f"(requested: {', '.join(task_names)})")
    tasks = []
    for name in task_names:
        cls = TASKS.get(name)
        options = validate(cls.Options, task_options.get(name, {}), where=f"options of task {name!r}")
        tasks.append(cls(options))
    return tasks


def evaluate(model: TrainedModel, task_names: list[str], task_options: dict[str, dict],
             seed: int) -> tuple[list[dict], list[dict]]:
    """All rows and per-item values of the named tasks on ``model``; options keyed by task name."""
    return _run(model, resolve(task_names, task_options), seed)


def _run(model: TrainedModel, tasks: list[Task], seed: int) -> tuple[list[dict], list[dict]]:
    rows: list[dict] = []
    items: list[dict] = []
    bar = progress_bar(tasks, desc="tasks", leave=False)
    for task in bar:
        bar.set_postfix_str(task.name)
        start = time.perf_counter()
        result = task.run(model, seed)
        _check(task, result.rows, ROW_KEYS, "row")
        _check(task, result.items, ITEM_KEYS, "item")
        logger.info("task %s: %d rows, %d items in %.1f s", task.name, len(result.rows),
                    len(result.items), time.perf_counter() - start)
        rows.extend(result.rows)
        items.extend(result.items)
    return rows, items


def _check(task: Task, records: list[dict], keys: tuple[str, ...], kind: str) -> None:
    """Hold every task, third-party ones included, to the result format reports read."""
    for record in records:
        if set(record) != set(keys):
            raise PluginError(f"task {task.name!r} returned a {kind} with keys {sorted(record)}; "
                              f"expected exactly {list(keys)}")


def parse_options(items: list[str]) -> dict[str, dict]:
    """``task.key=value`` strings (value parsed as YAML) -> ``{task: {key: value}}``."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        task, dot, field = key.partition(".")
        if not (sep and dot and task and field):
            raise ConfigError(f"option {item!r} is not of the form task.key=value (e.g. pos.max_train=500)")
        try:
            out.setdefault(task, {})[field] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"option {item!r}: value is not valid YAML: {exc}") from None
    return out


def probe_run(run_dir: Path, task_names: list[str], options: list[str]) -> tuple[list[dict], list[dict]]:
    """Evaluate a run's latest checkpoint; write ``probe_results.jsonl`` and ``probe_items.jsonl``
    into the run folder and print a summary table. Seeded by the run's own seed."""
    tasks = resolve(task_names, parse_options(options))  # fail on bad options before loading anything
    model = TrainedModel(run_dir)
    if model.cfg.train.threads:  # the run's CPU thread setting applies to reading it too
        torch.set_num_threads(model.cfg.train.threads)
    rows, items = _run(model, tasks, model.cfg.seed)
    for name, records in ((RESULTS_FILE, rows), (ITEMS_FILE, items)):
        _write_jsonl(Path(run_dir) / name, records)
    print(summary(rows))
    print(f"\n{len(rows)} rows -> {Path(run_dir) / RESULTS_FILE}\n{len(items)} items -> {Path(run_dir) / ITEMS_FILE}")
    return rows, items


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")  # renamed into place: readers never see a half-written file
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def summary(rows: list[dict]) -> str:
    """Test values per task, one line per (reading, layer, group); baselines (``metric@name``)
    on the line without a reading."""
    test = [r for r in rows if r["split"] == "test"]
    if not test:
        return "(no test rows)"
    df = pd.DataFrame(test)
    for col in ("layer", "pooling", "group"):
        df[col] = ["-" if r[col] is None else str(r[col]) for r in test]  # before pandas makes NaN
    blocks = []
    for task, part in df.groupby("task", sort=False):
        table = part.pivot_table(index=["pooling", "layer", "group"], columns="metric", values="value",
                                 aggfunc="first", sort=False)
        blocks.append(f"== {task}\n{table.to_string(float_format='{:.3f}'.format, na_rep='')}")
    return "\n\n".join(blocks)
