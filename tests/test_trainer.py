"""The shared training loop: resume, reproducibility, divergence, budgets, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file

from objbench.harness import trainer as trainer_mod
from objbench.harness.checkpoint import checkpoints
from objbench.harness.config import RunConfig, TrainConfig, apply_overrides, validate
from objbench.harness.errors import CheckpointError, ConfigError, PluginError, TrainingDiverged
from objbench.harness.reading import TrainedModel
from objbench.harness.trainer import Trainer
from objbench.objectives import base as objective_base
from tests.conftest import TINY


def config(objective: str = "mlm", *overrides: str) -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": objective}, [*TINY, *overrides]))


def metrics(run_dir) -> list[dict]:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("tokens_per_s", None)  # wall-clock, the only field allowed to differ
    return rows


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run_dir)[-1] / "model.safetensors"))


class Stop(Exception):
    pass


def interrupted_run(cfg, folder: Path, step: int) -> None:
    """Train ``cfg`` into ``folder``, stopped by an exception after ``step`` steps (as a kill
    would), then resumed from its checkpoint to the end."""
    def stop(t: Trainer) -> None:
        if t.counters.step == step:
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg, folder, callbacks=[stop], progress=False).run()
    Trainer(cfg, folder, progress=False).run()


@pytest.mark.parametrize("objective", ["mlm", "masked-ar", "mntp", "mdlm", "electra"])
def test_resume_after_interruption_is_bit_identical(tmp_path, objective):
    cfg = config(objective, "budget.steps=6", "train.checkpoint_every=1", "train.grad_accum=2")
    Trainer(cfg, tmp_path / "full", progress=False).run()

    interrupted_run(cfg, tmp_path / "cut", step=3)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    Trainer(config("clm"), tmp_path / "a", progress=False).run()
    Trainer(config("clm"), tmp_path / "b", progress=False).run()
    Trainer(config("clm", "seed=1"), tmp_path / "c", progress=False).run()
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a")[-1]["loss"] != metrics(tmp_path / "c")[-1]["loss"]


@pytest.mark.parametrize("objective", ["mlm", "clm", "masked-ar", "mntp", "mdlm", "electra"])
def test_validation_loss_falls(tmp_path, objective):
    Trainer(config(objective, "budget.steps=40", "train.lr=3e-3"), tmp_path, progress=False).run()
    vals = [m["val_loss"] for m in metrics(tmp_path) if "val_loss" in m]
    assert vals[-1] < 0.9 * vals[0], vals  # from ~ln(1000) = 6.9 nats (electra: 6.9 + 50 ln 2)


def test_an_objective_s_modules_are_trained_checkpointed_and_counted(tmp_path):
    """ELECTRA's generator and binary head: optimized with the encoder, saved under objective.,
    in the parameter count, and their losses logged every step."""
    Trainer(config("electra", "budget.steps=4"), tmp_path, progress=False).run()
    first, last = checkpoints(tmp_path)[0], checkpoints(tmp_path)[-1]
    a, b = (load_file(str(c / "model.safetensors")) for c in (first, last))
    own = [k for k in b if k.startswith("objective.")]
    assert {k.split(".")[1] for k in own} == {"generator", "head"} and "tok.weight" in b
    assert all(not torch.equal(a[k], b[k]) for k in own if k.endswith("weight") and "seg" not in k)
    rows = metrics(tmp_path)
    n_own = sum(b[k].numel() for k in own)
    assert rows[0]["objective_params"] == n_own and rows[0]["params"] == sum(t.numel() for t in b.values())
    assert all(0 < r["generator_loss"] and 0 < r["discriminator_loss"] for r in rows[1:])
    assert all(r["targets"] > r["tokens"] for r in rows[1:])  # every text position, plus the masked ones


def test_counters_and_token_budget(tmp_path):
    cfg = config("mlm", "budget.tokens=1000", "train.eval_points=1")
    Trainer(cfg, tmp_path, progress=False).run()
    rows = metrics(tmp_path)
    last = rows[-1]
    assert last["tokens"] == 1024 and last["step"] == 4  # 8 blocks x 32 tokens per step
    assert last["input_tokens"] == 4 * 8 * 33  # [CLS] + 32 tokens per block
    assert 0.1 * last["tokens"] < last["targets"] < 0.2 * last["tokens"]
    assert last["flops"] > 0 and rows[0]["step"] == 0 and "val_loss" in rows[0]


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = objective_base.token_loss
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        s = real(model, batch)
        return s * float("nan") if calls["n"] > 3 + 1 else s  # +1: the step-0 validation

    monkeypatch.setattr(objective_base, "token_loss", poisoned)
    cfg = config("clm", "budget.steps=6", "train.checkpoint_every=1", "data.val_blocks=8")
    with pytest.raises(TrainingDiverged, match="step"):
        Trainer(cfg, tmp_path, progress=False).run()
    assert checkpoints(tmp_path), "the last good checkpoint is kept"


def test_every_micro_batch_s_applied_rates_are_logged(tmp_path):
    trainer = Trainer(config("mdlm", "train.grad_accum=4"), tmp_path, progress=False)
    rates = [b.stats["mask_rate_applied"] for b in trainer.micro_batches(0)]
    assert len(set(rates)) > 1  # each micro-batch draws its own rates: the last one alone is not the mean
    assert trainer.train_step()["mask_rate_applied"] == pytest.approx(sum(rates) / 4, rel=1e-12)


@pytest.mark.parametrize("objective, options, message", [
    ("electra", {"generator_width": 1.5}, r"generator_width: .*less than or equal to 1"),
    ("electra", {"disc_weight": 0}, r"disc_weight: .*greater than 0"),
    ("mdlm", {"eps": 1.0}, r"eps: .*less than 1"),
    ("mdlm", {"score_samples": 0}, r"score_samples: .*greater than or equal to 1"),
    ("mntp", {"p_mask": 0.5}, r"p_mask \+ p_random \+ p_keep must be 1"),
])
def test_new_objectives_validate_their_options(objective, options, message):
    with pytest.raises(ConfigError, match=message):
        trainer_mod.resolve(validate(RunConfig, {"objective": objective, "options": options}))


def test_config_errors_name_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        validate(RunConfig, {"trian": {}})
    with pytest.raises(ConfigError, match=r"model\.d_model: .*integer"):
        validate(RunConfig, {"model": {"d_model": "big"}})
    with pytest.raises(ConfigError, match=r"budget: .*exactly one"):
        validate(RunConfig, {"budget": {"steps": 3, "tokens": 5}})
    with pytest.raises(ConfigError, match=r"mask_rate: .*less than or equal to 1"):
        trainer_mod.resolve(validate(RunConfig, {"objective": "mlm", "options": {"mask_rate": 1.5}}))
    with pytest.raises(ConfigError, match=r"p_mask \+ p_random \+ p_keep must be 1"):
        trainer_mod.resolve(validate(RunConfig, {"objective": "mlm", "options": {"p_mask": 0.5}}))
    with pytest.raises(ConfigError, match=r"mask_rat: unknown key \(did you mean 'mask_rate'\?\)"):
        trainer_mod.resolve(validate(RunConfig, {"objective": "mlm", "options": {"mask_rat": 0.2}}))
    with pytest.raises(PluginError, match=r"unknown objective 'mlmm'\. Did you mean 'mlm'\?.*clm"):
        trainer_mod.resolve(validate(RunConfig, {"objective": "mlmm"}))
    with pytest.raises(ConfigError, match=r"position=rope turns pairs of dimensions, but a head has 3 .*even head size"):
        validate(RunConfig, {"model": {"d_model": 12, "n_heads": 4, "position": "rope"}})


def test_runs_made_before_model_position_existed_keep_their_hashes():
    """``model.position`` enters a run's config (and hash) only when it is not the learned
    embeddings every earlier run used, so their cached runs stay valid."""
    default = RunConfig()
    assert "position" not in default.to_dict()["model"]
    assert default.settings_hash() == "6a1f7822e8580a91"  # the hash before the setting existed
    rope = validate(RunConfig, {"model": {"position": "rope"}})
    assert rope.to_dict()["model"]["position"] == "rope"
    assert validate(RunConfig, rope.to_dict()) == rope and rope.settings_hash() != default.settings_hash()


def test_override_syntax():
    data = apply_overrides({"budget": {"steps": 5}}, ["budget.tokens=2e5", "options.unit=word"])
    assert data["budget"] == {"tokens": 200000.0} and data["options"] == {"unit": "word"}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["budget.tokens"])


def test_third_party_objective_trains_through_the_same_loop(tiny_run):
    """The example package (pip-installed by conftest) trains like a built-in."""
    from objbench.harness.registry import OBJECTIVES

    assert OBJECTIVES.get("reverse-clm").__module__ == "objbench_reverse_lm"
    rows = metrics(tiny_run("reverse-clm", "budget.steps=12", "train.lr=3e-3"))
    vals = [m["val_loss"] for m in rows if "val_loss" in m]
    assert rows[-1]["step"] == 12 and vals[-1] < vals[0]


def test_resume_and_probe_accept_other_speed_settings_and_nothing_else(tmp_path):
    """threads, device, compile and checkpoint cadence never change what a run computes: a
    checkpoint resumes and reads under other values of them, and under no other change."""
    def stop_at_2(t: Trainer) -> None:
        if t.counters.step == 2:
            raise Stop

    cfg = config("clm", "train.checkpoint_every=1", "train.threads=2")
    with pytest.raises(Stop):
        Trainer(cfg, tmp_path, callbacks=[stop_at_2], progress=False).run()
    with pytest.raises(CheckpointError, match=r"train\.lr: checkpoint 0\.002, this run 0\.001"):
        Trainer(config("clm", "train.checkpoint_every=1", "train.lr=1e-3"), tmp_path, progress=False).run()
    speed = config("clm", "train.checkpoint_every=3", "train.device=cpu")  # and 1 thread
    Trainer(speed, tmp_path, progress=False).run()
    assert [m["step"] for m in metrics(tmp_path)] == [0, 1, 2, 3, 4]  # resumed at 2, not restarted

    edited = yaml.safe_load((tmp_path / "config.yaml").read_text())
    edited["train"].update(threads=2, compile=True, checkpoint_every=50, device="auto")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(edited))
    assert TrainedModel(tmp_path).cfg.train.compile  # read, the edit notwithstanding
    edited["train"]["batch_size"] = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(CheckpointError, match=r"train\.batch_size: checkpoint 8, config\.yaml 4"):
        TrainedModel(tmp_path)


@pytest.mark.parametrize("schedule, halfway",
                         [("cosine", 0.55e-3), ("linear", 0.55e-3), ("constant", 1e-3), ("wsd", 1e-3)])
def test_learning_rate_warms_up_then_follows_the_schedule_to_the_floor(schedule, halfway):
    t = TrainConfig(lr=1e-3, warmup=0.2, min_lr_ratio=0.1, schedule=schedule)
    lr = lambda progress: trainer_mod.learning_rate(t, progress)
    assert [lr(p) for p in (0.0, 0.1, 0.2)] == pytest.approx([0.0, 0.5e-3, 1e-3])  # linear warmup
    assert lr(0.6) == pytest.approx(halfway)  # halfway through the decay: (1e-3 + 1e-4) / 2
    assert lr(1.0) == lr(1.5) == pytest.approx(1e-3 if schedule == "constant" else 1e-4)
    if schedule == "cosine":
        assert lr(0.4) == pytest.approx(1e-4 + 0.9e-3 * (1 + math.cos(math.pi / 4)) / 2)
        assert lr(0.4) > (1e-3 + 0.55e-3) / 2  # cosine stays high longer than linear
    if schedule == "wsd":  # the peak held until the last fifth, then a straight line to the floor
        assert [lr(p) for p in (0.8, 0.9, 0.95)] == pytest.approx([1e-3, 0.55e-3, 0.325e-3])
    assert trainer_mod.learning_rate(t.model_copy(update={"warmup": 0.0}), 0.0) == pytest.approx(1e-3)


def test_wsd_refuses_a_warmup_that_runs_into_its_cooldown():
    with pytest.raises(ValidationError, match=r"warmup=0\.9 runs into wsd's cooldown .*at most 0\.8"):
        TrainConfig(schedule="wsd", warmup=0.9)
    assert TrainConfig(schedule="wsd", warmup=0.8).warmup == 0.8


def test_flops_budget_stops_at_the_budget_and_schedules_on_it(tmp_path):
    """A FLOPs budget: the run stops at the first step reaching it, learning rate and evaluation
    points follow the FLOPs consumed, and an objective predicting fewer positions gets more
    steps (clm pays its LM head at every position, mlm at 15%)."""
    Trainer(config("clm", "budget.steps=1"), tmp_path / "one", progress=False).run()
    per_step = metrics(tmp_path / "one")[-1]["flops"]
    budget = 3.5 * per_step  # clm's batches never change size: 4 steps
    cfg = config("clm", f"budget.flops={budget}")
    Trainer(cfg, tmp_path / "clm", progress=False).run()
    rows = metrics(tmp_path / "clm")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-2]["flops"] < budget <= rows[-1]["flops"] == pytest.approx(4 * per_step)
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 2, 4]  # eval points at 1.75 and 3.5 steps
    for r in rows[1:]:
        assert r["lr"] == pytest.approx(trainer_mod.learning_rate(cfg.train, r["flops"] / budget))
    Trainer(config("mlm", f"budget.flops={budget}"), tmp_path / "mlm", progress=False).run()
    mlm = metrics(tmp_path / "mlm")
    assert mlm[-1]["step"] > 4 and mlm[-2]["flops"] < budget <= mlm[-1]["flops"]


def test_a_batch_too_small_for_the_processes_is_refused(monkeypatch):
    """Under torchrun every process needs a row in each micro-batch: 4 processes x 2 micro-batches
    cannot share 4 rows."""
    monkeypatch.setattr(trainer_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(trainer_mod.dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(trainer_mod.dist, "get_rank", lambda: 0)
    with pytest.raises(ConfigError, match=r"train\.batch_size=4 gives 4 processes x train\.grad_accum=2 micro-"
                                          r"batches less than one row each: raise train\.batch_size to at least 8"):
        Trainer(config("clm", "train.batch_size=4", "train.grad_accum=2"), "unused", progress=False)
