"""Studies end to end: outputs, caching, interruption, a failing arm, shipped study files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import objbench
from objbench.harness import study as study_mod
from objbench.harness import trainer as trainer_mod
from objbench.harness.errors import ConfigError
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import OBJECTIVES, TASKS, code_identity, source_commit
from objbench.harness.study import Study, load_study, run_study
from objbench.harness.trainer import Trainer
from objbench.objectives.clm import CausalLM
from objbench.objectives.mlm import MLMOptions
from objbench.tasks.base import Options, Task, TaskResult

ROOT = Path(__file__).resolve().parents[1]


class Exploding(CausalLM):
    """A third-party objective that crashes on its third batch."""

    description = "crashes mid-run (test double)"

    def make_batch(self, blocks, gen):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            raise RuntimeError("boom inside a plugin")
        return super().make_batch(blocks, gen)


def tiny_study(tmp_path: Path, arms: list[dict], **extra) -> Path:
    spec = {
        "name": "tiny", "reference": arms[0]["name"], "seeds": [0, 1],
        "budget": {"steps": 4}, "arms": arms,
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
        "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
        "train": {"batch_size": 8, "eval_points": 2, "threads": 1},
        "probe_at": [0.5, 1.0],
        "tasks": {"pos": {"max_train": 60, "max_validation": 20, "max_test": 40},
                  "agreement": {"max_per_phenomenon": 4}},
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


ARMS = [{"name": "mlm", "objective": "mlm"}, {"name": "clm", "objective": "clm"}]


def test_tiny_study_end_to_end_cached_and_resumed(tmp_path, monkeypatch):
    study = load_study(tiny_study(tmp_path, ARMS))
    out = tmp_path / "out"

    # interrupt the third run mid-training, as a kill would
    real_step = Trainer.train_step
    def interrupting(self):
        if self.cfg.objective == "clm" and self.cfg.seed == 0 and self.counters.step == 2:
            raise KeyboardInterrupt
        return real_step(self)
    monkeypatch.setattr(Trainer, "train_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert json.loads((out / "runs/mlm/seed1/status.json").read_text())["state"] == "done"
    assert json.loads((out / "runs/mlm/seed1/status.json").read_text())["score_kind"] == "pseudo"
    assert json.loads((out / "runs/clm/seed0/status.json").read_text())["state"] == "running"

    trained = []
    real_init = Trainer.__init__
    def spy(self, cfg, run_dir, *a, **k):
        trained.append(Path(run_dir).relative_to(out).as_posix())
        real_init(self, cfg, run_dir, *a, **k)
    monkeypatch.setattr(Trainer, "__init__", spy)
    assert run_study(study, out)
    assert trained == ["runs/clm/seed0", "runs/clm/seed1"]  # finished runs are not retrained
    metrics = [json.loads(l) for l in (out / "runs/clm/seed0/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]  # resumed, not restarted

    for name in ("report.md", "report.html", "results.csv", "study.yaml", "provenance.json"):
        assert (out / name).exists(), name
    rows = [json.loads(l) for l in (out / "runs/mlm/seed0/results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"val_loss", "pos", "agreement"}
    assert {r["budget_value"] for r in rows if r["task"] == "pos"} == {2.0, 4.0}
    assert all(r["study"] == "tiny" and r["arm"] == "mlm" and r["seed"] == 0 for r in rows)

    trained.clear()
    assert run_study(study, out)  # a finished study only rebuilds its report
    assert trained == []


def test_failing_run_is_reported_and_others_finish(tmp_path):
    OBJECTIVES.register("exploding", Exploding)
    try:
        arms = [*ARMS[:1], {"name": "exploding", "objective": "exploding"}]
        study = load_study(tiny_study(tmp_path, arms, tasks={}, probe_at=[1.0]))
        out = tmp_path / "out"
        assert run_study(study, out) is False
    finally:
        OBJECTIVES.unregister("exploding")
    status = json.loads((out / "runs/exploding/seed0/status.json").read_text())
    assert status["state"] == "failed" and "boom inside a plugin" in status["error"]
    assert "boom inside a plugin" in (out / "runs/exploding/seed0/error.log").read_text()
    assert json.loads((out / "runs/mlm/seed1/status.json").read_text())["state"] == "done"
    assert json.loads((out / "runs/mlm/seed1/status.json").read_text())["score_kind"] == "pseudo"
    assert "boom inside a plugin" in (out / "report.md").read_text()


def test_shards_partition_the_runs():
    runs = list(range(7))
    shards = [study_mod.shard_of(runs, f"{i}/3") for i in range(3)]
    assert sorted(sum(shards, [])) == runs
    with pytest.raises(ConfigError, match="i/n"):
        study_mod.shard_of(runs, "3/3")


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_validate(path):
    study = load_study(path)
    assert study.reference in [a.name for a in study.arms]


@pytest.mark.parametrize("change, message", [
    ({"arms": [{"name": "a", "objective": "mlm"}, {"name": "a", "objective": "clm"}]}, "unique"),
    ({"arms": [{"name": "a", "objective": "mlmm"}]}, "Did you mean 'mlm'"),
    ({"arms": [{"name": "a", "objective": "mlm", "options": {"mask_rate": 2}}]}, r"arms\[0\] \(a\).*mask_rate"),
    ({"arms": [{"name": "a", "objective": "mlm", "budget": {"steps": 3}}]}, "arms.0: arms cannot set budget: every arm"),
    ({"reference": "zzz"}, "reference 'zzz' is not an arm"),
    ({"tasks": {"poss": {}}}, "Did you mean 'pos'"),
    ({"seedz": [1]}, r"seedz: unknown key \(did you mean 'seeds'\?\)"),
    ({"probe_at": [0.3]}, "not evaluation points"),
])
def test_bad_study_files_name_file_key_and_allowed(tmp_path, change, message):
    base = {"name": "x", "reference": "a", "budget": {"steps": 3}, "arms": [{"name": "a", "objective": "mlm"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**base, **change}))
    with pytest.raises(ConfigError, match=f"(?s){message}") as info:
        load_study(path)
    assert "bad.yaml" in str(info.value)


class SpyOptions(Options):
    tag: int = 0


class Spy(Task):
    """Reads one sentence's features and keeps the model it was handed."""

    name = "spy"
    description = "records the model it reads (test double)"
    Options = SpyOptions
    seen: list = []

    def run(self, model, seed):
        Spy.seen.append(model)
        result = TaskResult(self.name)
        result.add("feature_sum", float(model.sentence_features(["the cat sat ."]).sum()), 1)
        result.add("tag", self.options.tag, 1)
        return result


@pytest.fixture
def spy(monkeypatch):
    """The spy task registered, and the Trainers a study builds and the steps they train."""
    TASKS.register("spy", Spy)
    Spy.seen.clear()
    built, steps = [], []
    real_init, real_step = Trainer.__init__, Trainer.train_step

    def init(self, *a, **k):
        real_init(self, *a, **k)
        built.append(self)

    def step(self):
        steps.append(self.counters.step)
        return real_step(self)

    monkeypatch.setattr(Trainer, "__init__", init)
    monkeypatch.setattr(Trainer, "train_step", step)
    yield built, steps
    TASKS.unregister("spy")


def one_run(tmp_path: Path, arms=({"name": "mlm", "objective": "mlm"},), **extra) -> Study:
    spec = {"seeds": [0], "tasks": {"spy": {}}, "probe_at": [0.5, 1.0], **extra}
    return load_study(tiny_study(tmp_path, list(arms), **spec))


def status(out: Path, arm: str = "mlm") -> dict:
    return json.loads((out / f"runs/{arm}/seed0/status.json").read_text())


def results(out: Path, arm: str = "mlm") -> list[dict]:
    return [json.loads(l) for l in (out / f"runs/{arm}/seed0/results.jsonl").read_text().splitlines()]


def test_speed_settings_never_retrain_and_result_settings_do(tmp_path, spy):
    built, steps = spy
    out = tmp_path / "out"
    assert run_study(one_run(tmp_path), out)
    first = status(out)
    steps.clear()
    speed = {"threads": 2, "device": "cpu", "compile": True, "checkpoint_every": 1}
    assert run_study(one_run(tmp_path, train={"batch_size": 8, "eval_points": 2, **speed}), out)
    assert steps == [] and status(out) == first  # cached: not trained, not even read again
    assert run_study(one_run(tmp_path, train={"batch_size": 8, "eval_points": 2, "lr": 1e-3}), out)
    stale = out / "stale" / f"mlm-seed0-{first['config_hash']}"
    assert json.loads((stale / "status.json").read_text()) == first  # moved aside whole
    assert steps == [0, 1, 2, 3] and status(out)["config_hash"] != first["config_hash"]
    assert yaml.safe_load((out / "runs/mlm/seed0/config.yaml").read_text())["train"]["lr"] == 1e-3


def test_an_edited_plugin_reruns_its_arms(tmp_path, spy, monkeypatch):
    """The objective's code is part of the run hash: a plugin edited after a study ran makes
    its arm stale, and the study's provenance names the code it used."""
    plugin = tmp_path / "plugin" / "edited_objective.py"
    plugin.parent.mkdir()
    plugin.write_text("from objbench.objectives.clm import CausalLM\n\n\nclass Edited(CausalLM):\n"
                      "    description = 'clm under another name (test double)'\n")
    monkeypatch.syspath_prepend(str(plugin.parent))
    OBJECTIVES.register("edited", importlib.import_module("edited_objective").Edited)
    try:
        out, arms = tmp_path / "out", [{"name": "edited", "objective": "edited"}]
        assert run_study(one_run(tmp_path, arms, tasks={}, probe_at=[1.0]), out)
        first = status(out, "edited")
        used = json.loads((out / "provenance.json").read_text())["plugins"]["objectives"]["edited"]
        assert run_study(one_run(tmp_path, arms, tasks={}, probe_at=[1.0]), out)
        assert status(out, "edited") == first  # unchanged code: cached
        plugin.write_text(plugin.read_text() + "    # masks drawn differently from here on\n")
        assert run_study(one_run(tmp_path, arms, tasks={}, probe_at=[1.0]), out)
    finally:
        OBJECTIVES.unregister("edited")
    assert (out / "stale" / f"edited-seed0-{first['config_hash']}").is_dir()
    now = json.loads((out / "provenance.json").read_text())["plugins"]["objectives"]["edited"]
    assert used["package"] == now["package"] == "" and used["source_sha256"] != now["source_sha256"]


def test_code_identity_names_the_package_version_and_source():
    mlm, example = code_identity(OBJECTIVES.get("mlm")), code_identity(OBJECTIVES.get("reverse-clm"))
    assert (mlm["package"], mlm["version"]) == ("objbench", objbench.__version__)
    assert (example["package"], example["version"]) == ("objbench-reverse-lm", "0.1.0")
    assert code_identity(OBJECTIVES.get("clm")) == mlm  # built-ins: the objectives subpackage
    assert code_identity(TASKS.get("pos"))["source_sha256"] != mlm["source_sha256"]


def test_source_commit_says_when_tracked_files_differ_from_the_commit(tmp_path):
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    assert source_commit(tmp_path) == "unknown"  # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("runs and caches are not the code")
    assert source_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == f"{head}-dirty"


def test_provenance_records_the_threads_the_runs_train_with(tmp_path):
    import torch

    data = SimpleNamespace(corpus_hash="c0", tokenizer_hash="t0")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # the process default differs from the study's train.threads
        one_thread = load_study(tiny_study(tmp_path, ARMS))
        assert study_mod.provenance(data, one_thread)["hardware"]["torch_threads"] == 1
        unset = load_study(tiny_study(tmp_path, ARMS, train={"batch_size": 8, "eval_points": 2}))
        assert study_mod.provenance(data, unset)["hardware"]["torch_threads"] == 3
    finally:
        torch.set_num_threads(before)


def test_trained_model_is_read_in_memory_and_changed_tasks_do_not_retrain(tmp_path, spy):
    """One pass: the last probe point reads the Trainer's own model; earlier points come from
    their checkpoints. A changed task re-reads the run without training it again. Objective
    options are validated once, and status.json says how long training and tasks took."""
    built, steps = spy
    out = tmp_path / "out"
    validations = []
    real = MLMOptions.model_validate.__func__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MLMOptions, "model_validate",
                      classmethod(lambda cls, *a, **k: validations.append(1) or real(cls, *a, **k)))
        trainer_mod._validated.clear()
        assert run_study(one_run(tmp_path), out)
    assert len(validations) == 1  # study validation; the run, its trainer and readers reuse it
    earlier, final = Spy.seen
    assert final.model is built[0].model and earlier.model is not built[0].model
    on_disk = TrainedModel(out / "runs/mlm/seed0")
    assert on_disk.checkpoint == final.checkpoint
    feature_sum = {r["step"]: r["value"] for r in results(out) if r["metric"] == "feature_sum"}
    assert feature_sum[4] == float(on_disk.sentence_features(["the cat sat ."]).sum())
    done = status(out)
    assert done["train_s"] > 0 and done["tasks_s"] > 0
    assert done["wall_time_s"] == pytest.approx(done["train_s"] + done["tasks_s"], abs=0.02)
    table = (out / "report.md").read_text().split("| wall\\_time\\_s | train\\_s | tasks\\_s |")[1]
    assert f"| {done['wall_time_s']:.4g} | {done['train_s']:.4g} | {done['tasks_s']:.4g} |" in table

    steps.clear()
    (out / "runs/mlm/seed0/status.json").write_text(json.dumps({**done, "train_s": 1000.0}))
    assert run_study(one_run(tmp_path, tasks={"spy": {"tag": 7}}), out)
    assert steps == []  # resumed at its end: no step trained again
    again = status(out)
    assert again["config_hash"] == done["config_hash"] and again["tasks_hash"] != done["tasks_hash"]
    assert 1000.0 < again["train_s"] < 1060.0  # the earlier training's seconds are kept
    assert {r["value"] for r in results(out) if r["metric"] == "tag"} == {7.0}
