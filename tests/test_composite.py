"""Composite objectives: the mixture's loss rule, its rows and steps, what it counts and logs,
the contract through a mixture, and schedules over the budget (phases, ramps, resume)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.errors import ConfigError, ObjbenchError
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import OBJECTIVES
from objbench.harness.study import load_study
from objbench.harness.trainer import Trainer, checked, resolve
from objbench.objectives.base import token_loss
from objbench.reports.aggregate import phase_use
from objbench.objectives.composite import row_counts
from objbench.objectives.contract import build, check_objective
from objbench.objectives.contract import random_blocks as contract_blocks
from objbench.objectives.draws import RowGenerator
from objbench.objectives.sampling import Sampling
from objbench.tasks.base import TaskResult
from objbench.tasks.zero_shot import minimal_pairs
from tests.conftest import TINY
from tests.helpers import make_objective, random_blocks
from tests.test_contract_catches import LeakyMLM
from tests.test_trainer import interrupted_run, metrics, weights

CLM_MLM = {"components": [{"objective": "clm", "weight": 1}, {"objective": "mlm", "weight": 1}]}
CLM_THEN_MLM = {"phases": [{"objective": "clm", "until": 0.4}, {"objective": "mlm"}]}
RAMP = {"phases": [{"objective": "mlm", "options": {"mask_rate": 0.3}, "ramp": {"mask_rate": 0.15}}]}


def config(objective: str, options: dict, *overrides: str) -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": objective, "options": options}, [*TINY, *overrides]))


def test_each_component_is_normalised_by_its_own_targets(tmp_path):
    """Half the rows causal (a target at each of 32 positions), half masked (15%): the step's
    loss and gradient are 0.5 x each component's mean loss per target, not the mean over the
    pooled targets, in which causal LM would weigh about 128 / (128 + 20)."""
    t = Trainer(config("mixture", CLM_MLM, "train.grad_clip=0", "train.grad_accum=2"), tmp_path, progress=False)
    shares = [s for b in t.micro_batches(0) for s in b.shares]
    summed = {"clm": 0.0, "mlm": 0.0}
    targets = {"clm": 0, "mlm": 0}
    for s in shares:
        summed[s.name] = summed[s.name] + token_loss(t.model, s.batch)
        targets[s.name] += s.batch.n_targets
    assert targets["clm"] == 4 * 32 and 0 < targets["mlm"] <= 4 * 5  # 4 rows each; mlm: 15% of 32
    expected = 0.5 * summed["clm"] / targets["clm"] + 0.5 * summed["mlm"] / targets["mlm"]
    pooled = (summed["clm"] + summed["mlm"]) / (targets["clm"] + targets["mlm"])
    expected.backward()
    want = [p.grad.clone() for p in t.parameters()]
    t.optimizer.zero_grad()
    got = []
    t.optimizer.step = lambda: got.extend(p.grad.clone() for p in t.parameters())

    row = t.train_step()
    summed = {n: float(v.detach()) for n, v in summed.items()}
    assert row["loss/clm"] == pytest.approx(summed["clm"] / targets["clm"], rel=1e-6)
    assert row["loss/mlm"] == pytest.approx(summed["mlm"] / targets["mlm"], rel=1e-6)
    assert row["loss"] == pytest.approx(float(expected.detach()), rel=1e-6)
    assert abs(row["loss"] - float(pooled.detach())) > 1e-3  # the pooled rule is another number
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert t.counters.targets == targets["clm"] + targets["mlm"]
    assert t.counters.flops == sum(s.objective.flops(t.cfg.model, t.data.vocab.size, s.batch) for s in shares)
    assert t.counters.tokens == 8 * 32


def test_rows_go_to_components_by_their_place_in_the_global_batch():
    """1 : 3 over 8 rows: places 0-1 causal, 2-7 masked, however the batch is split into
    micro-batches or processes; each row keeps its own draws."""
    mix = make_objective("mixture", components=[{"objective": "clm", "weight": 1}, {"objective": "mlm", "weight": 3}])
    blocks = random_blocks(8, 12, seed=0)
    whole = mix.make_batch(blocks, RowGenerator(range(8), seed=0))
    split = [mix.make_batch(blocks[part], RowGenerator(part.tolist(), seed=0, places=part.tolist(), batch_size=8))
             for part in (torch.arange(0, 8, 2), torch.arange(1, 8, 2))]
    assert [(s.name, s.first, s.rows) for s in whole.shares] == [("clm", 0, 2), ("mlm", 2, 6)]
    for b, place in enumerate(torch.arange(8)):
        half, row = split[int(place) % 2], int(place) // 2
        assert torch.equal(half.input_ids[row], whole.input_ids[b])
        assert torch.equal(half.targets[row], whole.targets[b])


@pytest.mark.parametrize("weights, size, counts", [
    ([1 / 16, 15 / 16], 32, [2, 30]), ([1 / 16, 15 / 16], 8, [1, 7]), ([1 / 16, 15 / 16], 1, [0, 1]),
    ([0.5, 0.25, 0.25], 6, [3, 2, 1]), ([0.01, 0.01, 0.98], 4, [1, 1, 2]),
])
def test_row_counts_round_by_largest_remainder_and_give_every_component_a_row(weights, size, counts):
    assert row_counts(weights, size) == counts


def test_by_steps_one_component_per_step_the_same_in_every_micro_batch(tmp_path):
    opts = {**CLM_MLM, "by": "steps"}
    Trainer(config("mixture", opts, "budget.steps=12", "train.grad_accum=2"), tmp_path / "a", progress=False).run()
    Trainer(config("mixture", opts, "budget.steps=12"), tmp_path / "b", progress=False).run()
    rows = [r for r in metrics(tmp_path / "a") if r["step"] > 0]
    chosen = [[n for n in ("clm", "mlm") if f"loss/{n}" in r] for r in rows]
    assert all(len(c) == 1 for c in chosen) and {c[0] for c in chosen} == {"clm", "mlm"}
    for r, c in zip(rows, chosen):
        assert r["loss"] == r[f"loss/{c[0]}"]  # weight 1 on the step's component
    steps = [r["targets"] - prev["targets"] for prev, r in zip([{"targets": 0}, *rows], rows)]
    assert all((s == 8 * 32) == (c == ["clm"]) for s, c in zip(steps, chosen))
    assert [c for c in chosen] == [[n for n in ("clm", "mlm") if f"loss/{n}" in r]
                                   for r in metrics(tmp_path / "b") if r["step"] > 0]
    validated = [r for r in rows if "val_loss" in r]  # validation splits by rows: both components
    assert all("val_loss/clm" in r and "val_loss/mlm" in r for r in validated)


def test_components_log_their_losses_rates_and_validation(tiny_run):
    rows = metrics(tiny_run("mixture", "train.grad_accum=2"))
    first, last = rows[0], rows[-1]
    assert {"val_loss", "val_loss/clm", "val_loss/mntp"} <= first.keys()
    assert first["val_loss"] == pytest.approx(first["val_loss/clm"] / 16 + first["val_loss/mntp"] * 15 / 16)
    assert {"loss/mntp", "mntp/mask_rate_applied", "loss/clm"} <= last.keys()


@pytest.fixture
def leaky():
    OBJECTIVES.register("leaky-mlm", LeakyMLM)
    yield
    OBJECTIVES.unregister("leaky-mlm")


def test_a_leaky_component_is_caught_through_the_mixture(leaky):
    components = [{"objective": "clm", "weight": 1}, {"objective": "leaky-mlm", "weight": 3, "options": {"leak": 0.05}}]
    results = {c.name: c for c in check_objective("mixture", {"components": components})}
    assert not results["no leakage"].passed
    assert "leaky-mlm:token target" in results["no leakage"].detail
    assert results["shapes"].passed and results["FLOPs"].passed
    components[1]["options"] = {"leak": 0.0}
    assert all(c.passed for c in check_objective("mixture", {"components": components}))


def test_a_ul2_style_mixture_of_masked_ar_settings_passes_the_contract_by_steps():
    components = [{"objective": "masked-ar", "name": "regular", "weight": 2},
                  {"objective": "masked-ar", "name": "extreme", "weight": 1, "options": {"r": 0.5, "mean_span": 8}},
                  {"objective": "masked-ar", "name": "prefix", "weight": 1, "options": {"suffix": True}}]
    failed = [c.line() for c in check_objective("mixture", {"components": components, "by": "steps"}) if not c.passed]
    assert not failed, failed


def test_gpt_bert_read_as_a_causal_model_passes_the_contract():
    """Features and score from the causal component: the reading check compares the causal
    reading with the causal rows' context, not with the masked rows' both sides."""
    failed = [c.line() for c in check_objective("mixture", {"features": "clm", "score": "clm"}) if not c.passed]
    assert not failed, failed


MODES = [{"objective": "masked-ar", "name": "regular", "weight": 1, "mode_token": "[R]"},
         {"objective": "masked-ar", "name": "extreme", "weight": 1, "mode_token": "[X]", "options": {"r": 0.5}}]


def test_ul2_mode_tokens_start_their_component_s_rows_and_scores():
    mix = build("mixture", {"components": MODES, "score": "extreme"})  # a vocabulary with [R] and [X]
    batch = mix.make_batch(contract_blocks(mix, 8, 12, seed=0), torch.Generator().manual_seed(0))
    assert [(s.name, s.rows) for s in batch.shares] == [("regular", 4), ("extreme", 4)]
    for share, mode in zip(batch.shares, ("[R]", "[X]")):
        assert (share.batch.input_ids[:, 0] == mix.vocab[mode]).all()
    assert (mix.score_rows(torch.arange(10, 16)).input_ids[:, 0] == mix.vocab["[X]"]).all()
    failed = [c.line() for c in check_objective("mixture", {"components": MODES}) if not c.passed]
    assert not failed, failed


def test_a_mode_token_missing_from_the_tokenizer_is_refused():
    with pytest.raises(ConfigError, match=r"needs the special tokens \['\[R\]', '\[X\]'\]: add them to data.special_tokens"):
        checked(config("mixture", {"components": MODES}))
    checked(config("mixture", {"components": MODES}, "data.special_tokens=['[S]', '[E]', '[R]', '[X]']"))


def test_reading_rules_default_to_the_largest_weight_and_can_be_named():
    mix = make_objective("mixture", components=[{"objective": "clm", "weight": 1}, {"objective": "mntp", "weight": 15}])
    assert (mix.reading_attention, mix.pooling, mix.score_kind) == ("bidirectional", "mean", "pseudo")
    causal = make_objective("mixture", components=[{"objective": "clm", "weight": 1}, {"objective": "mntp", "weight": 15}],
                            score="clm")
    assert (causal.pooling, causal.score_kind) == ("mean", "exact")
    assert torch.equal(causal.score_rows(torch.arange(10, 15)).targets, mix.components["clm"].score_rows(torch.arange(10, 15)).targets)


def test_a_composite_is_also_scored_by_each_other_component(tiny_run):
    """GPT-BERT read both ways in one run: its masked score, and its causal one as a variant,
    which zero-shot tasks report as their own rows (the component named in ``pooling``)."""
    model = TrainedModel(tiny_run("mixture"))
    assert (model.objective.score_kind, model.objective.score_variants) == ("pseudo", ("clm",))
    causal = model.objective.scoring("clm")
    assert (causal.score_kind, causal.score_variants, causal.score_method) == \
        ("exact", ("mntp",), "clm's: " + causal.components["clm"].score_method)
    sentences = ["the market fell", "shares of the bank rose"]
    as_clm = TrainedModel(tiny_run("mixture"))
    as_clm.objective = as_clm.objective.components["clm"]  # the causal component read on its own
    np.testing.assert_allclose(model.score(sentences, variant="clm")[0], as_clm.score(sentences)[0], rtol=1e-6)
    result = TaskResult("pairs")
    minimal_pairs(result, model, sentences, ["fell market the", "rose bank the of shares"], ["a", "a"],
                  ["p1", "p2"], variants=True)
    assert {r["pooling"] for r in result.rows if r["metric"] == "acc_sum" and r["group"] is None} == {None, "clm"}


def test_a_composite_samples_with_its_score_component_and_its_mode_token():
    mix = build("mixture", {"components": MODES, "score": "extreme"})
    assert mix.sampler == "extreme's: " + mix.components["extreme"].sampler
    seen = []

    class Spy(torch.nn.Module):  # records the rows the sampler feeds the encoder
        def forward(self, ids, *args, **kwargs):
            seen.append(ids[:, 0].tolist())
            return torch.zeros(*ids.shape, 4)

        def logits(self, hidden):
            return torch.zeros(*hidden.shape[:-1], mix.vocab.size)

    out = mix.sample(Spy(), torch.arange(10, 16).view(2, 3), 4, Sampling(steps=2), torch.Generator().manual_seed(0))
    assert out.shape == (2, 4) and seen and all(first == [mix.vocab["[X]"]] * 2 for first in seen)
    no_sampler = make_objective("mixture", components=[{"objective": "electra", "weight": 1}])
    assert no_sampler.sampler == "" and no_sampler.score_variants == ()


@pytest.mark.parametrize("options, message", [
    ({"components": [{"objective": "mlm", "weight": 1}, {"objective": "mlm", "weight": 1}]}, "give each a distinct"),
    ({"components": [{"objective": "mlm", "weight": 1}], "score": "clm"}, "score: 'clm' names no component"),
    ({"components": [{"objective": "mlm", "weight": 0}]}, "greater than 0"),
    ({"components": [{"objective": "mixture", "weight": 1}]}, "cannot itself be"),
    ({"components": [{"objective": "mlm", "weight": 1, "options": {"mask_rate": 2}}]}, "component 'mlm'"),
    ({"components": [{"objective": "mlmm", "weight": 1}]}, "Did you mean 'mlm'"),
])
def test_bad_mixtures_are_one_line_errors(options, message):
    with pytest.raises(ObjbenchError, match=message) as exc:
        resolve(config("mixture", options))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("options, message", [
    ({"phases": [{"objective": "clm", "until": 0.6}, {"objective": "mlm", "until": 0.5}]}, "must rise strictly"),
    ({"phases": [{"objective": "clm", "until": 0.6}]}, "the last be 1.0"),
    ({"phases": [{"objective": "mlm", "ramp": {"unit": 1.0}}]}, "only float options"),
    ({"phases": [{"objective": "mlm", "ramp": {"mask_rate": 1.5}}]}, "ramp end of phase 'mlm'"),
])
def test_bad_schedules_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        resolve(config("schedule", options))


@pytest.mark.parametrize("axis, value", [("steps", 10), ("flops", 2.4e9), ("tokens", 2560), ("targets", 1200)])
def test_a_schedule_switches_at_its_budget_fraction_on_every_axis(tmp_path, axis, value):
    Trainer(config("schedule", CLM_THEN_MLM, f"budget.{axis}={value}"), tmp_path, progress=False).run()
    rows = metrics(tmp_path)
    before = {"steps": 0, "flops": 0.0, "tokens": 0, "targets": 0}
    phases = []
    for r in rows[1:]:
        used = before[axis] / value
        assert r["phase"] == (0 if used < 0.4 else 1), (used, r["phase"])
        assert (f"loss/{'clm' if r['phase'] == 0 else 'mlm'}") in r
        phases.append(r["phase"])
        before = {"steps": r["step"], **{k: r[k] for k in ("flops", "tokens", "targets")}}
    assert phases[0] == 0 and phases[-1] == 1
    use = phase_use(pd.DataFrame(rows), ["clm", "mlm"]).set_index("phase")
    assert list(use.index) == ["clm", "mlm"]
    for key in ("steps", "tokens", "targets", "flops"):
        total = rows[-1]["step" if key == "steps" else key]
        assert use.loc["clm", key] + use.loc["mlm", key] == pytest.approx(total)
    assert use.loc["clm", "targets"] == use.loc["clm", "steps"] * 8 * 32  # causal: every position


def test_a_ramp_moves_the_option_linearly_over_its_phase(tmp_path):
    Trainer(config("schedule", RAMP, "budget.steps=8"), tmp_path, progress=False).run()
    rows = [r for r in metrics(tmp_path) if r["step"] > 0]
    for r in rows:
        used = (r["step"] - 1) / 8
        assert r["mlm/mask_rate"] == pytest.approx(0.3 - 0.15 * used)
    assert rows[0]["mlm/mask_rate_applied"] > rows[-1]["mlm/mask_rate_applied"] + 0.05


@pytest.mark.parametrize("options, stop", [(CLM_THEN_MLM, 2), (CLM_THEN_MLM, 4), (RAMP, 3)])
def test_a_schedule_resumes_bit_identical_in_either_phase(tmp_path, options, stop):
    cfg = config("schedule", options, "budget.steps=6", "train.checkpoint_every=1", "train.grad_accum=2")
    Trainer(cfg, tmp_path / "full", progress=False).run()

    interrupted_run(cfg, tmp_path / "cut", step=stop)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_mixture_resumes_bit_identical(tmp_path):
    cfg = config("mixture", {**CLM_MLM, "by": "steps"}, "budget.steps=5", "train.checkpoint_every=1")
    Trainer(cfg, tmp_path / "full", progress=False).run()

    interrupted_run(cfg, tmp_path / "cut", step=2)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "full")
    assert all(math.isfinite(r["loss"]) for r in metrics(tmp_path / "full")[1:])


def test_the_hybrids_study_validates_with_every_composition():
    """The shipped study expresses a by-rows mixture, a phase switch, a ramp and a mixture of
    one objective's settings, and each arm builds on the study's shared tokenizer specials."""
    study = load_study(Path(__file__).parents[1] / "studies" / "hybrids.yaml")
    arms = {a.name: a for a in study.arms}
    assert {n: a.objective for n, a in arms.items()} == {
        "mlm": "mlm", "clm": "clm", "gpt-bert": "mixture", "clm-then-mlm": "schedule",
        "mask-anneal": "schedule", "ul2": "mixture", "mlm-from-clm": "mlm"}
    assert arms["mlm-from-clm"].init.arm == "clm" and arms["mlm-from-clm"].init.at == 0.5
    assert arms["clm-then-mlm"].options["phases"][0]["until"] == 0.4
    assert arms["mask-anneal"].options["phases"][0]["ramp"] == {"mask_rate": 0.15}
    assert {c["objective"] for c in arms["ul2"].options["components"]} == {"masked-ar"}
    assert study.budget.axis == "flops" and len(study.seeds) >= 3
