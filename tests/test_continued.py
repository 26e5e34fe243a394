"""Continued pre-training: a run starts from another run's checkpoint at a budget fraction and
spends the rest of the same budget; in a study, parents train first and children's hashes
include their parents'."""

from __future__ import annotations

import json
from itertools import takewhile

import pytest
import torch
from safetensors.torch import load_file

from objbench.harness.checkpoint import checkpoints
from objbench.harness.errors import CheckpointError, ConfigError
from objbench.harness.study import load_study, run_keys, run_study
from objbench.harness.trainer import Trainer, resolve
from tests.test_study import tiny_study
from tests.test_trainer import config, interrupted_run, metrics, weights


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

    interrupted_run(cfg, tmp_path / "cut", step=6)
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


CONTINUED = [{"name": "clm", "objective": "clm"},
             {"name": "mlm-from-clm", "objective": "mlm", "init": {"arm": "clm", "at": 0.5}},
             {"name": "mlm", "objective": "mlm"}]


def test_a_study_trains_parents_first_and_reports_the_child_on_the_whole_budget(tmp_path):
    """Composites run in the same study, read by their declared components."""
    arms = [*CONTINUED, {"name": "gpt-bert", "objective": "mixture"}, {"name": "clm-then-mlm", "objective": "schedule"}]
    study = load_study(tiny_study(tmp_path, arms, seeds=[0], probe_at=[1.0],
                                  tasks={"agreement": {"max_per_phenomenon": 2}}))
    assert [a.name for a, _ in study.run_configs()] == ["clm", "mlm", "gpt-bert", "clm-then-mlm", "mlm-from-clm"]
    assert run_study(study, tmp_path / "out")
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| result |"))
    started = next(line for line in lines if line.startswith("| started from |"))
    cells = dict(zip(*([c.strip() for c in line.split("|")[2:-2]] for line in (header, started))))
    assert cells == {**{a["name"]: "scratch" for a in arms}, "mlm-from-clm": "clm at 0.5"}
    runs = tmp_path / "out" / "runs"
    child = json.loads((runs / "mlm-from-clm" / "seed0" / "status.json").read_text())
    assert child["state"] == "done" and child["init"] == {"arm": "clm", "at": 0.5}
    steps = [r["step"] for r in metrics(runs / "mlm-from-clm" / "seed0")]
    assert steps == [2, 3, 4]  # from the parent's half-way checkpoint to the end of the budget
    results = [json.loads(l) for l in (runs / "mlm-from-clm" / "seed0" / "results.jsonl").read_text().splitlines()]
    final = [r for r in results if r["task"] == "agreement" and r["final"]]
    parent = {r["step"]: r for r in metrics(runs / "clm" / "seed0")}
    assert final and all(r["step"] == 4 and r["tokens"] == parent[4]["tokens"] for r in final)
    kinds = {arm: json.loads((runs / arm / "seed0" / "status.json").read_text())["score_kind"]
             for arm in ("gpt-bert", "clm-then-mlm")}
    assert kinds == {"gpt-bert": "pseudo", "clm-then-mlm": "pseudo"}  # mntp's and mlm's scores
    table = takewhile(lambda line: line.startswith("|"), lines[lines.index("### Budget by phase") + 2:])
    phases = [line.split("|")[1:-1] for line in table if line.startswith("| clm-then-mlm |")]
    schedule = metrics(runs / "clm-then-mlm" / "seed0")
    assert [cells[1].strip() for cells in phases] == ["clm", "mlm"]  # the budget by phase, in order
    assert sum(int(cells[2]) for cells in phases) == schedule[-1]["step"]
    assert sum(float(cells[-1].strip(" %")) for cells in phases) == pytest.approx(100.0, abs=0.15)


def test_a_child_s_hash_includes_its_parent_s(tmp_path):
    """The child's own config is the same in every case; only its parent's options change."""
    def child_hash(parent_options: dict) -> str:
        arms = [{"name": "parent", "objective": "mlm", "options": parent_options},
                {"name": "child", "objective": "clm", "init": {"arm": "parent", "at": 0.5}}]
        study = load_study(tiny_study(tmp_path, arms, probe_at=[1.0]))
        arm, cfg = study.run_configs()[-1]
        return run_keys(study, resolve(cfg), "corpus", resolve(study.parent_config(arm, cfg.seed)))["config_hash"]

    assert child_hash({}) == child_hash({"mask_rate": 0.15})  # the default, spelled out
    assert child_hash({}) != child_hash({"mask_rate": 0.3})


@pytest.mark.parametrize("init, extra, message", [
    ({"arm": "bert", "at": 0.5}, {}, "init.arm 'bert' must be another arm that starts from scratch"),
    ({"arm": "clm", "at": 0.3}, {}, r"init.at 0.3 is not an evaluation point \[0.5, 1.0\]"),
    ({"arm": "clm", "at": 0.5}, {"probe_at": [0.5, 1.0]}, "must all come later"),
])
def test_bad_continued_arms_are_refused_before_any_work(tmp_path, init, extra, message):
    arms = [CONTINUED[0], {**CONTINUED[1], "init": init}]
    with pytest.raises(ConfigError, match=message):
        load_study(tiny_study(tmp_path, arms, **{"probe_at": [1.0], **extra}))
