"""Studies: every (arm, seed) trained under one budget, probed, and reported.

A study folder holds one run folder per (arm, seed). A run whose resolved config hash already
has complete results is never trained again, an interrupted one resumes from its checkpoint,
and a run that fails is recorded with its error while the others go on.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import objbench
import yaml
from objbench.harness.config import (
    BudgetConfig,
    capped_arm,
    DataConfig,
    InitConfig,
    ModelConfig,
    RunConfig,
    Strict,
    TrainConfig,
    content_hash,
    load_yaml,
    result_settings,
    validate,
)
from objbench.harness.errors import ConfigError, PluginError
from objbench.harness.output import output_folder
from objbench.harness.ranks import agree, from_main, is_main
from objbench.harness.registry import OBJECTIVES, TASKS, code_identity, source_commit
from pydantic import AfterValidator, Field, model_validator

if TYPE_CHECKING:
    from objbench.harness.reading import TrainedModel


def _folder_name(name: str) -> str:
    """Study and arm names become folder names under the study folder: never a path."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"{name!r} becomes a folder name, so it must be non-empty, contain no "
                         f"'/' or '\\' and not start with '.'")
    return name


FolderName = Annotated[str, AfterValidator(_folder_name)]
SHARED = ("seeds", "budget", "model", "data", "train", "tasks", "probe_at")  # study-wide only


class ArmInit(Strict):
    arm: str = Field(description="the arm whose run of the same seed this arm continues")
    at: float = Field(gt=0.0, lt=1.0, description="the budget fraction (an evaluation point) of the "
                      "parent's run to start from; the child trains the rest of the budget")


class Arm(Strict):
    name: FolderName = Field(description="unique label of the arm in tables and folders")
    objective: str
    options: dict[str, Any] = Field(default_factory=dict)
    init: ArmInit | None = Field(None, description="continued pre-training: start from another arm's "
                                 "checkpoint instead of from the seed's initial weights")

    @model_validator(mode="before")
    @classmethod
    def _no_shared_settings(cls, data: Any) -> Any:
        shared = [k for k in SHARED if isinstance(data, dict) and k in data]
        if shared:
            raise ValueError(f"arms cannot set {', '.join(shared)}: every arm of a study shares "
                             f"them, so that arms differ only in their objective; set them at the "
                             f"top level of the study")
        return data


class Primary(Strict):
    """One result the study's question is about: compared between arms with Holm's correction
    over the primary results only; every other result is exploratory."""

    task: str
    metric: str
    pooling: str | None = Field(None, description="the reading, where a task reports several")
    group: str | None = Field(None, description="a subset such as a phenomenon; null = all items")
    layer: int | None = Field(None, description="a layer index; null = the layer chosen on each run's "
                              "validation split (per-layer metrics) or no layer")


class Study(Strict):
    name: FolderName
    description: str = Field("", description="the question the study answers, shown first in its report")
    arms: list[Arm] = Field(min_length=1)
    reference: str = Field(description="arm every other arm is compared against")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    budget: BudgetConfig = Field(description="ONE budget shared by every arm")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict, description="task -> options")
    probe_at: list[float] = Field([1.0], description="budget fractions at which tasks run; each "
                                  "must be an evaluation point k / train.eval_points")
    primary: list[Primary] = Field(default_factory=list, description="the results the question is "
                                   "about; empty: each task's own default (`Task.primary`)")
    data_caps: list[int | None] = Field(default_factory=list, description="a sweep over the unique "
                                        "training data: every arm runs once per cap (data.unique_tokens; "
                                        "null = the whole split) as '<arm>-<cap>'; the reference is the "
                                        "reference arm at the first cap")

    @model_validator(mode="after")
    def _consistent(self) -> "Study":
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {dupes}")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds must be unique; repeated: {repeated}")
        if self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not an arm; arms: {names}")
        if len(set(self.data_caps)) != len(self.data_caps):
            raise ValueError(f"data_caps must be unique; got {self.data_caps}")
        if self.data_caps and self.data.unique_tokens is not None:
            raise ValueError("set data.unique_tokens or data_caps, not both: data_caps sweeps it")
        points = {round(k / self.train.eval_points, 9) for k in range(1, self.train.eval_points + 1)}
        off = [p for p in self.probe_at if round(p, 9) not in points]
        if off:
            raise ValueError(f"probe_at {off} are not evaluation points {sorted(points)} "
                             f"(train.eval_points={self.train.eval_points})")
        for arm in self.arms:
            if arm.init is not None:
                self._check_init(arm, points)
        return self

    def _check_init(self, arm: Arm, points: set[float]) -> None:
        """A continued arm starts from an arm that starts from scratch, at one of its evaluation
        points, and is probed only after that point (it has no checkpoint before it)."""
        parent = next((a for a in self.arms if a.name == arm.init.arm), None)
        where = f"arm {arm.name!r}: init"
        if parent is None or parent.init is not None:
            raise ValueError(f"{where}.arm {arm.init.arm!r} must be another arm that starts from scratch "
                             f"(arms: {[a.name for a in self.arms]})")
        if round(arm.init.at, 9) not in points:
            raise ValueError(f"{where}.at {arm.init.at} is not an evaluation point {sorted(points)}")
        if any(p <= arm.init.at for p in self.probe_at):
            raise ValueError(f"{where}.at {arm.init.at}: probe_at {self.probe_at} must all come later "
                             f"(the arm has no checkpoint of its own before it)")
        if self.data_caps:
            raise ValueError(f"{where}: continued arms and data_caps cannot be combined yet")

    def run_configs(self, runs_dir: Path = Path("runs")) -> list[tuple[Arm, RunConfig]]:
        """Every (arm, seed) run, each arm once per data cap when the study sweeps them; arms
        that continue another arm's runs (``init``, read from ``runs_dir/<arm>/seed<k>``) come
        after every other arm, so their parents are trained first."""
        out = []
        for arm in sorted(self.arms, key=lambda a: a.init is not None):
            for cap in self.data_caps or [self.data.unique_tokens]:
                named = arm.model_copy(update={"name": capped_arm(arm.name, cap)}) if self.data_caps else arm
                data = self.data.model_copy(update={"unique_tokens": cap})
                out += [(named, RunConfig(objective=arm.objective, options=arm.options, seed=seed,
                                          model=self.model, data=data, train=self.train,
                                          budget=self.budget, init=_init(arm, seed, runs_dir)))
                        for seed in self.seeds]
        return out

    def parent_config(self, arm: Arm, seed: int) -> RunConfig:
        """The run config of the arm that ``arm`` continues, for ``seed``."""
        return next(cfg for a, cfg in self.run_configs() if a.name == arm.init.arm and cfg.seed == seed)


def _init(arm: Arm, seed: int, runs_dir: Path) -> InitConfig | None:
    if arm.init is None:
        return None
    return InitConfig(run=str(runs_dir / arm.init.arm / f"seed{seed}"), at=arm.init.at)


def load_study(path: Path) -> Study:
    """Read and validate a study file completely (objectives, options, tasks) before any work."""
    from objbench.harness.trainer import checked
    from objbench.tasks.runner import resolve as resolve_tasks

    study = validate(Study, load_yaml(path), where=str(path))
    for i, arm in enumerate(study.arms):
        try:
            checked(RunConfig(objective=arm.objective, options=arm.options, model=study.model,
                              data=study.data, train=study.train, budget=study.budget))
        except (ConfigError, PluginError) as exc:
            raise ConfigError(f"{path}: arms[{i}] ({arm.name}): {exc}") from None
    try:
        tasks = resolve_tasks(list(study.tasks), study.tasks)
    except (ConfigError, PluginError) as exc:
        raise ConfigError(f"{path}: tasks: {exc}") from None
    return _with_primary(study, tasks, path)


def _with_primary(study: Study, tasks: list, path: Path) -> Study:
    """The study with its primary results spelled out (each task's default when none is given)."""
    if not study.primary:
        given = [Primary(task=t.name, **spec) for t in tasks for spec in t.primary()]
        return study.model_copy(update={"primary": given})
    names = [t.name for t in tasks]
    for i, p in enumerate(study.primary):
        if p.task not in names:
            raise ConfigError(f"{path}: primary[{i}]: task {p.task!r} is not among the study's tasks "
                              f"({', '.join(names) or 'none'}); validation losses are never compared "
                              f"across objectives")
    return study


def shard_of(runs: list, shard: str | None) -> list:
    """The deterministic ``i/n`` share (0-based i) of the ordered (arm, seed) runs."""
    if not shard:
        return runs
    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ConfigError(f"--shard {shard!r}: expected i/n with 0 <= i < n, e.g. 0/4") from None
    return runs[i::n]


def run_study(study: Study, out: Path | None = None, shard: str | None = None) -> bool:
    """Run every (arm, seed) of the shard, then write the report. True if no run failed.

    Under torchrun every rank calls it: they train each run together, rank 0 probes it and
    writes, and a failure on any rank fails the run on every rank (`objbench.harness.ranks`)."""
    from objbench.harness.data import prepare_data
    from objbench.reports import build_report

    out = Path(out or Path("runs") / study.name)
    runs = shard_of(study.run_configs(out.resolve() / "runs"), shard)  # a bad --shard or --out fails
    out = output_folder(out)  # before any work
    # the whole split, checked to hold a batch; each run caps its own copy (data_caps)
    data = prepare_data(study.data.model_copy(update={"unique_tokens": None}), study.train.batch_size)
    resolved = study.model_dump(mode="json")  # a valid study file: `study run` accepts it again
    resolved["budget"] = {study.budget.axis: getattr(study.budget, study.budget.axis)}
    if is_main():
        (out / "study.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (out / "provenance.json").write_text(json.dumps(provenance(data, study), indent=2))

    started, failed = time.perf_counter(), 0
    for n, (arm, cfg) in enumerate(runs, 1):
        state, seconds = run_one(study, arm, cfg, out / "runs" / arm.name / f"seed{cfg.seed}", data)
        failed += state == "failed"
        eta = (time.perf_counter() - started) / n * (len(runs) - n)
        if is_main():
            print(f"[{n}/{len(runs)}] {arm.name} seed {cfg.seed}: {state} ({seconds:.0f}s); "
                  f"study ETA {eta / 60:.1f} min", flush=True)
    if not is_main():
        return failed == 0
    for name, path in build_report(out).items():
        if name in ("report.md", "report.html"):
            print(f"{name}: {out / name}")
    if failed:
        print(f"{failed} of {len(runs)} runs failed; see the report's 'Failed runs'")
    return failed == 0


def run_keys(study: Study, cfg: RunConfig, corpus_hash: str, parent: RunConfig | None = None) -> dict[str, str]:
    """``config_hash``: what decides the trained model (the resolved config without the
    settings that never change results, `RESULT_NEUTRAL`; the precision as it takes effect on
    this machine; the corpus content; the objective's code, `code_identity`; for a continued
    run, the ``parent`` run's config hash).
    ``tasks_hash``: what decides the results read from it (the tasks, their options and code,
    the probe points). A finished run whose hashes both match is not run again."""
    from objbench.harness.trainer import effective_precision

    settings = result_settings(cfg.to_dict())
    settings["train"]["precision"] = effective_precision(cfg.train)
    trained = {"config": settings, "corpus": corpus_hash,
               "objective": code_identity(OBJECTIVES.get(cfg.objective))}
    if parent is not None:
        trained["parent"] = run_keys(study, parent, corpus_hash)["config_hash"]
    read = {"tasks": study.tasks, "probe_at": study.probe_at,
            "code": {name: code_identity(TASKS.get(name)) for name in study.tasks}}
    return {"config_hash": content_hash(trained), "tasks_hash": content_hash(read)}


def run_one(study: Study, arm: Arm, cfg: RunConfig, run_dir: Path, data) -> tuple[str, float]:
    """Train, evaluate and probe one run; never raises for a failure inside the run.

    A run trained with another config (`run_keys`' ``config_hash``) is moved to the study's
    ``stale/`` folder and redone; one whose tasks changed keeps its training and is probed
    again. Returns the run's state and its seconds."""
    from objbench.harness.trainer import resolve

    record = {"arm": arm.name, "seed": cfg.seed, "objective": cfg.objective, "options": cfg.options}
    if arm.init is not None:
        record["init"] = arm.init.model_dump()
    status_path = run_dir / "status.json"
    try:
        cfg = resolve(cfg)
        parent = resolve(study.parent_config(arm, cfg.seed)) if arm.init is not None else None
        record.update(options=cfg.options, **run_keys(study, cfg, data.corpus_hash, parent))
    except Exception as exc:  # a broken plugin fails this run, not the study (alike on every rank)
        return _fail(status_path, record, [(0, _message(exc), _trace(exc))], {}), 0.0
    cached = from_main(lambda: _cached_seconds(status_path, record))
    if cached is not None:
        return "cached", cached

    trained_s = from_main(lambda: _trained_seconds(status_path, record))  # before "running" replaces it
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_status(status_path, {**record, "state": "running", "train_s": trained_s})
    seconds = {"train_s": trained_s}
    failure = None
    try:
        rows, items, score_kind = _train_and_evaluate(study, arm, cfg, run_dir, data, seconds)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        failure = (_message(exc), _trace(exc))
    failures = agree(failure)  # the other ranks wait here while rank 0 probes
    if failures:
        return _fail(status_path, record, failures, seconds), sum(seconds.values())
    if is_main():
        _write_jsonl(run_dir / "results.jsonl", rows)
        _write_jsonl(run_dir / "items.jsonl", items)
    _write_status(status_path, {**record, "state": "done", **_times(seconds), "score_kind": score_kind})
    return "done", sum(seconds.values())


def _train_and_evaluate(study: Study, arm: Arm, cfg: RunConfig, run_dir: Path, data,
                        seconds: dict[str, float]) -> tuple[list[dict], list[dict], str]:
    """Train (every rank, on the run's share of the data; a finished run resumes at its end),
    then, on rank 0, read the trained model in memory at the last probe point. Returns the
    rows, items and how zero-shot tasks scored sentences (the objective's ``score_kind``);
    ``seconds``: this session's training is added to ``train_s``, ``tasks_s`` is set."""
    from objbench.harness.reading import TrainedModel
    from objbench.harness.trainer import Trainer

    start = time.perf_counter()
    trainer = Trainer(cfg, run_dir, data=data.capped(cfg.data.unique_tokens, cfg.train.batch_size))
    trainer.run()
    seconds["train_s"] += time.perf_counter() - start
    score_kind = trainer.objective.score_kind
    if not is_main():
        return [], [], score_kind
    start = time.perf_counter()
    final = TrainedModel.from_trainer(trainer)
    del trainer  # its optimizer state and DDP buckets are not needed to read the model
    rows, items = evaluate_run(study, arm, cfg, run_dir, final)
    seconds["tasks_s"] = time.perf_counter() - start
    return rows, items, score_kind


def _cached_seconds(status_path: Path, record: dict) -> float | None:
    """The seconds a finished run took if its files still hold for ``record``'s hashes, else
    None; a run trained with another config is moved aside first (rank 0 only)."""
    old = _read_status(status_path)
    if old.get("config_hash") not in (None, record["config_hash"]):
        run_dir = status_path.parent
        name = f"{record['arm']}-seed{record['seed']}-{old['config_hash']}"
        stale = run_dir.parent.parent.parent / "stale" / name
        stale.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stale, ignore_errors=True)
        shutil.move(str(run_dir), stale)
        print(f"{record['arm']} seed {record['seed']}: config changed; old run moved to {stale}")
        return None
    done = old.get("state") == "done" and (status_path.parent / "results.jsonl").exists()
    if done and old.get("tasks_hash") == record["tasks_hash"]:
        return float(old.get("wall_time_s", 0.0))
    return None


def _trained_seconds(status_path: Path, record: dict) -> float:
    """Training seconds the run's earlier sessions recorded (0 for a new run; a session killed
    while training records none), so that a run probed again at its end, or resumed, still
    shows what its training cost."""
    old = _read_status(status_path)
    return float(old.get("train_s") or 0.0) if old.get("config_hash") == record["config_hash"] else 0.0


def evaluate_run(study: Study, arm: Arm, cfg: RunConfig, run_dir: Path,
                 final: TrainedModel) -> tuple[list[dict], list[dict]]:
    """Result rows: validation loss at every evaluation point, tasks at the probe points; the
    last point read from ``final`` (the trained model, in memory), earlier ones from their
    checkpoints."""
    from objbench.harness import checkpoint as ckpt
    from objbench.harness.reading import TrainedModel
    from objbench.tasks.runner import evaluate

    base = {"study": study.name, "arm": arm.name, "objective": cfg.objective,
            "options": json.dumps(cfg.options, sort_keys=True), "seed": cfg.seed,
            "budget_axis": cfg.budget.axis}
    metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    at_step = {m["step"]: m for m in metrics}
    evals = [m for m in metrics if "val_loss" in m]
    last_step = evals[-1]["step"]
    rows, items = [], []
    for m in evals:
        rows.append({**base, **_position(m, cfg), "task": "val_loss", "metric": "loss", "split": "validation",
                     "layer": None, "pooling": None, "group": None, "value": m["val_loss"],
                     "n": cfg.data.val_blocks, "higher_is_better": False, "final": m["step"] == last_step})
    # evaluation-point checkpoints by their point k of eval_points (a continued run has only
    # those after its start)
    states = {c: ckpt.load_state(c) for c in ckpt.checkpoints(run_dir)}
    kept = {state["next_eval"]: c for c, state in states.items() if state.get("eval_point")}
    total = cfg.train.eval_points
    for frac in study.probe_at:
        point = kept[round(frac * total)]
        step = ckpt.load_state(point)["counters"]["step"]
        model = final if point == final.checkpoint else TrainedModel(run_dir, point)
        t_rows, t_items = evaluate(model, list(study.tasks), study.tasks, seed=cfg.seed)
        where = _position(at_step[step], cfg)
        final_point = step == last_step
        rows += [{**base, **where, **r, "final": final_point} for r in t_rows]
        items += [{"arm": arm.name, "seed": cfg.seed, "budget_value": where["budget_value"], **it}
                  for it in t_items]
    return rows, items


def _position(logged: dict, cfg: RunConfig) -> dict:
    """Where a result was measured, from the metrics line of its step: the budget consumed on
    every axis, passes over the training data and the unique tokens they held."""
    axis_value = logged["step"] if cfg.budget.axis == "steps" else logged[cfg.budget.axis]
    return {"budget_value": float(axis_value),
            **{k: logged.get(k) for k in ("step", "tokens", "targets", "flops", "epoch", "unique_tokens")}}


def _fail(path: Path, record: dict, failures: list[tuple[int, str, str]],
          seconds: dict[str, float]) -> str:
    """Record a failed run (rank 0): status with each failing rank's error, ``error.log`` with
    their tracebacks."""
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        ranked = len(failures) > 1 or failures[0][0] != 0
        name = lambda rank: f"rank {rank}: " if ranked else ""
        (path.parent / "error.log").write_text("\n".join(f"{name(r)}{trace}" for r, _, trace in failures))
        error = "; ".join(f"{name(r)}{message}" for r, message, _ in failures)
        _write_status(path, {**record, "state": "failed", "error": error, **_times(seconds)})
    return "failed"


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _times(seconds: dict[str, float]) -> dict[str, float]:
    """Status fields: training and task seconds, and their sum as the run's wall time."""
    return {"wall_time_s": round(sum(seconds.values()), 2), **{k: round(v, 2) for k, v in seconds.items()}}


def _write_status(path: Path, status: dict) -> None:
    if is_main():
        _atomic_write(path, json.dumps({"error": None, **status}, indent=2))


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def provenance(data, study: Study) -> dict[str, Any]:
    """What a reviewer needs to reproduce the numbers, every plugin the study uses included
    (its package, version and source hash, `code_identity`)."""
    import importlib.metadata as md

    import torch

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    return {
        "objbench_version": objbench.__version__,
        "git_commit": source_commit(),
        "packages": {p: version(p) for p in ("torch", "datasets", "tokenizers", "safetensors", "numpy",
                                              "pandas", "scikit-learn", "scipy", "seaborn")},
        "python": platform.python_version(),
        "hardware": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "torch_threads": study.train.threads or torch.get_num_threads(),  # as runs train
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "corpus_hash": data.corpus_hash,
        "tokenizer_hash": data.tokenizer_hash,
        "plugins": {"objectives": {name: code_identity(OBJECTIVES.get(name))
                                   for name in sorted({arm.objective for arm in study.arms})},
                    "tasks": {name: code_identity(TASKS.get(name)) for name in sorted(study.tasks)}},
    }
