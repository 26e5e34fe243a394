"""Read a study directory into pandas, tolerating what interrupted or failed runs leave behind.

Only files are read (no model, no torch), so a report can be built on any machine from a copy
of `STUDY_DIR`. Every problem found is kept in `StudyData.problems` (and raised as a
`ReportWarning`) so the report can say what it ignored instead of silently dropping it.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from objbench.harness.config import BUDGET_AXES, study_arms
from objbench.harness.errors import ConfigError, DataError

# metrics.jsonl column that measures each budget axis
AXIS_COLUMN = {"steps": "step", "tokens": "tokens", "targets": "targets", "flops": "flops"}

# A result value is identified by (arm, seed, eval point) plus these columns. Missing optional
# parts are stored as NO_LAYER / "" rather than NaN so that groupby and dict look-ups never meet
# NaN != NaN; `export.restore_nulls` turns them back into nulls for the files users read.
KEY = ["task", "metric", "split", "layer", "pooling", "group"]
NO_LAYER = -1
RESULT_COLUMNS = [
    "study", "arm", "objective", "options", "seed", "budget_axis", "budget_value", "step",
    "tokens", "targets", "flops", "epoch", "unique_tokens", *KEY, "value", "n", "higher_is_better",
    "final",
]
ITEM_COLUMNS = ["arm", "seed", "budget_value", "task", "metric", "layer", "pooling", "item", "value"]
RUN_COLUMNS = [
    "arm", "seed", "state", "error", "objective", "options", "config_hash", "wall_time_s", "train_s",
    "tasks_s", "score_kind", "init",
]

_SEED_DIR = re.compile(r"seed(\d+)")


class ReportWarning(UserWarning):
    """A file in the study directory was missing, half-written or inconsistent."""


@dataclass(frozen=True)
class StudyData:
    """Everything a report needs, read from one study directory."""

    root: Path
    config: dict
    name: str
    reference: str
    budget_axis: str
    budget_value: float
    provenance: dict
    runs: pd.DataFrame      # one row per run folder: RUN_COLUMNS
    results: pd.DataFrame   # every result row, plus run_state of the run it came from
    items: pd.DataFrame     # per-item scores of runs that finished
    metrics: pd.DataFrame   # training curves of all runs, plus arm, seed, objective
    problems: list[str]

    @property
    def done_results(self) -> pd.DataFrame:
        """Rows of finished runs only: partial runs would mix seed sets across eval points."""
        return self.results[self.results["run_state"] == "done"]


def read_jsonl(path: Path, problems: list[str], label: str) -> list[dict]:
    """Rows of a JSON-lines file; unreadable lines (typically a truncated last line) are skipped."""
    rows: list[dict] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            where = "last line (truncated write?)" if number == len(lines) else f"line {number}"
            _problem(problems, f"{label}: ignored unreadable {where}")
            continue
        if not isinstance(row, dict):
            _problem(problems, f"{label}: ignored line {number}, not a JSON object")
            continue
        rows.append(row)
    return rows


def load_study(study_dir: Path) -> StudyData:
    """Read study.yaml, provenance.json and every runs/<arm>/seed<k>/ folder."""
    root = Path(study_dir)
    problems: list[str] = []
    config = _read_config(root)
    name, reference, axis, value = _study_fields(config)
    provenance = _read_json(root / "provenance.json", problems, "provenance.json", optional=True)

    runs, results, items, metrics = [], [], [], []
    for arm, seed, run_dir in _run_dirs(root, problems):
        label = f"runs/{arm}/seed{seed}"
        status = _read_json(run_dir / "status.json", problems, f"{label}/status.json")
        run = _run_record(arm, seed, status, label, problems)
        runs.append(run)
        origin = {"arm": arm, "seed": seed}
        rows = _read_run_file(run_dir / "results.jsonl", run, problems, f"{label}/results.jsonl")
        _check_identity(rows, origin, problems, f"{label}/results.jsonl")
        results += [{**row, **origin, "run_state": run["state"]} for row in rows]
        curve = _read_run_file(run_dir / "metrics.jsonl", run, problems, f"{label}/metrics.jsonl")
        metrics += [{**row, **origin, "objective": run["objective"]} for row in curve]
        if run["state"] == "done" and (run_dir / "items.jsonl").exists():
            scored = read_jsonl(run_dir / "items.jsonl", problems, f"{label}/items.jsonl")
            items += [{**row, **origin} for row in scored]

    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    _check_expected_runs(config, runs_df, problems)
    return StudyData(
        root=root,
        config=config,
        name=name,
        reference=reference,
        budget_axis=axis,
        budget_value=value,
        provenance=provenance,
        runs=runs_df.sort_values(["arm", "seed"], ignore_index=True),
        results=_dedupe(_results_frame(results, problems), problems),
        items=_items_frame(items),
        metrics=pd.DataFrame(metrics),
        problems=problems,
    )


def _problem(problems: list[str], message: str) -> None:
    problems.append(message)
    warnings.warn(message, ReportWarning, stacklevel=3)


def _read_config(root: Path) -> dict:
    path = root / "study.yaml"
    if not path.is_file():
        raise DataError(f"{root} is not a study directory: study.yaml is missing")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a mapping, got {type(config).__name__}")
    return config


def _study_fields(config: dict) -> tuple[str, str, str, float]:
    for key in ("name", "reference", "budget"):
        if key not in config:
            raise ConfigError(f"study.yaml: key '{key}' is missing")
    axis, value = _budget(config["budget"])
    reference = study_arms([str(config["reference"])], config.get("data_caps") or [])[0]
    return str(config["name"]), reference, axis, value


def arm_names(config: dict) -> list[str]:
    """The arms the study file asks for, as its runs are named (each at each data cap)."""
    arms = config.get("arms")
    names = list(arms) if isinstance(arms, dict) else [
        a.get("name") if isinstance(a, dict) else a for a in arms or []]
    return study_arms([str(n) for n in names if n is not None], config.get("data_caps") or [])


def _budget(budget: object) -> tuple[str, float]:
    """The (axis, value) of a study file's budget, ``{tokens: 5e5}``; folders written before the
    targets axis existed say ``{axis: tokens, value: 5e5}``."""
    if isinstance(budget, dict):
        if budget.get("axis") in BUDGET_AXES and "value" in budget:
            return budget["axis"], float(budget["value"])
        given = [(axis, value) for axis, value in budget.items() if value is not None]
        if len(given) == 1 and given[0][0] in BUDGET_AXES:
            return given[0][0], float(given[0][1])
    raise ConfigError(f"study.yaml: budget must set one of {', '.join(BUDGET_AXES)}, got {budget!r}")


def _read_json(path: Path, problems: list[str], label: str, optional: bool = False) -> dict:
    if not path.exists():
        if not optional:
            _problem(problems, f"{label}: missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        _problem(problems, f"{label}: unreadable ({err.msg} at line {err.lineno})")
        return {}
    if not isinstance(data, dict):
        _problem(problems, f"{label}: not a JSON object")
        return {}
    return data


def _run_dirs(root: Path, problems: list[str]) -> list[tuple[str, int, Path]]:
    runs_root = root / "runs"
    if not runs_root.is_dir():
        _problem(problems, "runs/: missing, the study has no runs")
        return []
    found = []
    for arm_dir in sorted(p for p in runs_root.iterdir() if p.is_dir()):
        for run_dir in sorted(p for p in arm_dir.iterdir() if p.is_dir()):
            match = _SEED_DIR.fullmatch(run_dir.name)
            if match is None:
                _problem(problems, f"runs/{arm_dir.name}/{run_dir.name}: not a seed<k> folder")
                continue
            found.append((arm_dir.name, int(match.group(1)), run_dir))
    return found


def _run_record(arm: str, seed: int, status: dict, label: str, problems: list[str]) -> dict:
    state = status.get("state", "unknown")
    if state not in ("done", "failed", "running"):
        state = "unknown"
    if status and (status.get("arm", arm) != arm or status.get("seed", seed) != seed):
        _problem(
            problems,
            f"{label}/status.json names arm {status.get('arm')!r} seed {status.get('seed')!r};"
            " the folder is used",
        )
    options = status.get("options")
    return {
        "arm": arm,
        "seed": seed,
        "state": state,
        "error": status.get("error") or ("" if status else "status.json missing or unreadable"),
        "objective": status.get("objective", ""),
        "options": json.dumps(options, sort_keys=True) if options is not None else "",
        "config_hash": status.get("config_hash", ""),
        "wall_time_s": status.get("wall_time_s"),
        "score_kind": status.get("score_kind") or "",  # how zero-shot tasks scored sentences
        "train_s": status.get("train_s"),  # absent in runs recorded before training and tasks were timed
        "tasks_s": status.get("tasks_s"),
        "init": _parent(status.get("init")),  # continued pre-training: whose checkpoint it started from
    }


def _parent(init: dict | None) -> str:
    """``clm at 0.5`` for a run continued from arm clm's checkpoint at half its budget."""
    return f"{init.get('arm') or init.get('run')} at {init.get('at')}" if isinstance(init, dict) else ""


def _read_run_file(path: Path, run: dict, problems: list[str], label: str) -> list[dict]:
    if path.exists():
        return read_jsonl(path, problems, label)
    if run["state"] == "done":
        _problem(problems, f"{label}: missing although the run is marked done")
    return []


def _check_identity(rows: list[dict], origin: dict, problems: list[str], label: str) -> None:
    wrong = sum(1 for r in rows if r.get("arm", origin["arm"]) != origin["arm"]
                or r.get("seed", origin["seed"]) != origin["seed"])
    if wrong:
        _problem(problems, f"{label}: {wrong} rows name another arm or seed; the folder is used")


def _results_frame(rows: list[dict], problems: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in [*RESULT_COLUMNS, "run_state"]:
        if column not in frame:
            frame[column] = None
    missing = frame["value"].isna() | frame["task"].isna() | frame["metric"].isna()
    if missing.any():
        _problem(problems, f"results: ignored {int(missing.sum())} rows without task/metric/value")
        frame = frame[~missing]
    frame = frame.astype({"seed": int, "value": float, "budget_value": float})
    frame["layer"] = frame["layer"].fillna(NO_LAYER).astype(int)
    for column in ("split", "pooling", "group"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["final"] = frame["final"].fillna(False).astype(bool)
    frame["higher_is_better"] = frame["higher_is_better"].astype(bool)
    frame["options"] = frame["options"].map(
        lambda o: o if isinstance(o, str) or o is None else json.dumps(o, sort_keys=True)
    )
    return frame[[*RESULT_COLUMNS, "run_state"]].reset_index(drop=True)


def _dedupe(frame: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
    """Merged shards can repeat rows; identical repeats are dropped, conflicting ones reported."""
    ident = ["arm", "seed", "budget_value", *KEY]
    repeated = frame.duplicated(ident, keep=False)
    if repeated.any():
        conflicts = frame[repeated].groupby(ident)["value"].nunique().gt(1).sum()
        if conflicts:
            _problem(problems, f"results: {conflicts} values reported twice with different"
                               " numbers; the first one is kept")
    return frame.drop_duplicates(ident, keep="first", ignore_index=True)


def _items_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    frame["layer"] = frame["layer"].fillna(NO_LAYER).astype(int)
    frame["pooling"] = frame["pooling"].fillna("").astype(str)
    frame["item"] = frame["item"].astype(str)
    return frame.astype({"seed": int, "value": float, "budget_value": float})


def _check_expected_runs(config: dict, runs: pd.DataFrame, problems: list[str]) -> None:
    """Compare the run folders with the arms x seeds the study asked for, when it says so."""
    names = arm_names(config)
    seeds = config.get("seeds")  # only an explicit list; a count would leave the first seed a guess
    if not names or not isinstance(seeds, list):
        return
    have = set(zip(runs["arm"], runs["seed"]))
    absent = [f"{arm}/seed{seed}" for arm in names for seed in seeds if (arm, seed) not in have]
    if absent:
        _problem(problems, f"runs missing entirely: {', '.join(absent)}")
