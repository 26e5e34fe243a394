"""Studies end to end: outputs, caching, interruption, a failing arm, shipped study files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from objbench.harness import study as study_mod
from objbench.harness.errors import ConfigError
from objbench.harness.registry import OBJECTIVES
from objbench.harness.study import load_study, run_study
from objbench.harness.trainer import Trainer
from objbench.objectives.clm import CausalLM

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
        "train": {"batch_size": 8, "eval_points": 2, "threads": 2},
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
