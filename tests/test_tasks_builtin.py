"""Every registered task runs end to end on tiny models and returns well-formed rows and items."""

from __future__ import annotations

import math

import datasets
import pytest

from objbench.harness.config import validate
from objbench.harness.errors import DataError
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import OBJECTIVES, TASKS
from objbench.tasks import probe_data
from objbench.tasks.base import NOT_APPLICABLE, READING_DIAGNOSTICS
from objbench.tasks.base import ITEM_KEYS, ROW_KEYS, Task

FAST = {"epochs": 1, "lrs": [1e-3], "max_iter": 50}
TINY_OPTIONS = {
    "sentiment": {"max_train": 60, "max_validation": 40, "max_test": 40, "readings": ["probe", "finetune"], **FAST},
    "pos": {"max_train": 15, "max_validation": 8, "max_test": 8, "max_iter": 50},
    "sts-b": {"max_train": 40, "max_validation": 20, "max_test": 20, "readings": ["probe", "finetune"],
              **{k: v for k, v in FAST.items() if k != "max_iter"}},
    "agreement": {"max_per_phenomenon": 2},
    "cloze": {"max_per_answer": 1},
    "context": {"corpus": "ptb", "n_targets": 8, "k": [0, 2, "all"], "shuffle_beyond": [2]},
    "generation": {"corpus": "ptb", "n_prompts": 4, "prompt_tokens": 4, "length": 6, "steps": 3},
    "proper-nouns": {"max_train": 15, "max_validation": 8, "max_test": 8, "max_iter": 50},  # examples/
}
OFFLINE = [n for n in TASKS.names() if not TASKS.get(n).needs_hub]


def build(name: str, **options) -> Task:
    cls = TASKS.get(name)
    return cls(validate(cls.Options, {**TINY_OPTIONS.get(name, {}), **options}, where=f"task {name!r}"))


def test_the_built_in_tasks_are_registered():
    assert {"sentiment", "pos", "sts-b", "agreement", "cloze", "hf"} <= set(TASKS.names())
    for name in TASKS.names():
        cls = TASKS.get(name)
        assert issubclass(cls, Task) and cls.description and "\n" not in cls.description


@pytest.mark.parametrize("objective", ["mlm", "clm", "electra"])  # electra: modules, no sentence score
@pytest.mark.parametrize("name", OFFLINE)
def test_task_runs_end_to_end(tiny_run, name, objective):
    model = TrainedModel(tiny_run(objective))
    task = build(name)
    result = task.run(model, seed=0)
    assert result.rows, f"{name} returned no rows"
    n_layers = model.cfg.model.n_layers
    for row in result.rows:
        assert tuple(row) == ROW_KEYS
        assert row["task"] == task.name and isinstance(row["metric"], str)
        assert isinstance(row["value"], float) and math.isfinite(row["value"])
        assert isinstance(row["n"], int) and row["n"] > 0
        assert row["layer"] is None or 0 <= row["layer"] <= n_layers
        assert row["split"] in ("train", "validation", "test")
        assert isinstance(row["higher_is_better"], bool)
        if row["metric"].endswith(("acc", "acc_sum", "acc_mean", "mrr")):
            assert 0.0 <= row["value"] <= 1.0
    for item in result.items:
        assert tuple(item) == ITEM_KEYS and item["task"] == task.name and isinstance(item["item"], str)
    keys = [(r["metric"], r["layer"], r["pooling"], r["split"], r["group"]) for r in result.rows]
    assert len(keys) == len(set(keys)), "one row per value"
    items = [(i["metric"], i["layer"], i["pooling"], i["item"]) for i in result.items]
    assert len(items) == len(set(items)), "one value per item"
    # sentences are read by the objective's declared pooling (and mean), never by its name
    poolings = {r["pooling"] for r in result.rows} - {None}
    expected = {"sentiment": {model.objective.pooling, "mean"}, "sts-b": {model.objective.pooling, "mean"},
                "pos": {"first-subtoken"}, "agreement": set(), "cloze": set(), "context": set(),
                "generation": set()}
    if name in expected:
        assert poolings == expected[name]
    else:  # a plugin task: whatever it reads, it reads by the declared rules
        assert poolings <= {model.objective.pooling, "mean", "first-subtoken"}


def test_probe_rows_per_layer_and_pooling(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    rows = build("sentiment", readings=["probe"]).run(model, seed=0).rows
    layers = range(model.cfg.model.n_layers + 1)
    by = {(r["metric"], r["layer"], r["pooling"]): r["value"] for r in rows}
    for pooling in ("last", "mean"):
        for metric in ("probe_acc", "control_acc", "selectivity"):
            got = {r["layer"] for r in rows if r["metric"] == metric and r["pooling"] == pooling} - {None}
            assert got == set(layers), (metric, pooling)
        # one more probe_acc row: the layer chosen on validation, whose test value it repeats
        chosen = int(by["best_layer", None, pooling])
        assert by["probe_acc", None, pooling] == by["probe_acc", chosen, pooling]
    for baseline in ("majority", "bag-of-words"):
        [row] = [r for r in rows if r["metric"] == f"probe_acc@{baseline}"]
        assert row["layer"] is None and row["pooling"] is None and 0 < row["value"] < 1
    for layer in layers:
        assert by["selectivity", layer, "last"] == pytest.approx(
            by["probe_acc", layer, "last"] - by["control_acc", layer, "last"])


def test_same_seed_same_rows_and_subsets_do_not_follow_the_seed(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    task = build("sentiment", readings=["probe"])
    a, b, c = task.run(model, seed=1), task.run(model, seed=1), task.run(model, seed=2)
    assert a.rows == b.rows and a.items == b.items
    assert {i["item"] for i in a.items} == {i["item"] for i in c.items}  # same items: arms pair up


def test_pos_items_name_words_of_test_sentences(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    result = build("pos").run(model, seed=0)
    [majority] = [r for r in result.rows if r["metric"] == "probe_acc@majority"]
    probe_items = [i for i in result.items if i["metric"] == "probe_acc"]
    assert len(probe_items) == majority["n"]
    assert all(":" in i["item"] for i in result.items)


def splits(**columns) -> datasets.DatasetDict:
    return datasets.DatasetDict({s: datasets.Dataset.from_dict(columns) for s in ("train", "validation", "test")})


def test_a_single_label_class_is_a_clear_error(tiny_run, monkeypatch):
    monkeypatch.setattr(probe_data, "load_sentiment", lambda: splits(
        text=["a fine film", "dull", "great fun"], label=[1, 1, 1], movie=["x", "y", "z"]))
    with pytest.raises(DataError, match=r"sentiment.*'label'.*single value"):
        build("sentiment").run(TrainedModel(tiny_run("mlm")), seed=0)


def test_a_single_tag_is_a_clear_error(tiny_run, monkeypatch):
    monkeypatch.setattr(probe_data, "load_pos", lambda: splits(
        words=[["stocks", "fell"], ["bonds"]], tags=[["NOUN", "NOUN"], ["NOUN"]], doc=["a", "b"]))
    with pytest.raises(DataError, match=r"pos.*'tags'.*single value"):
        build("pos").run(TrainedModel(tiny_run("mlm")), seed=0)


def test_a_hub_task_fails_clearly_offline(tiny_run):
    task = build("hf", dataset="objbench-test/no-such-dataset", text_fields=["sentence"])
    assert task.name == "hf:objbench-test/no-such-dataset"
    with pytest.raises(DataError, match="hub"):
        task.run(TrainedModel(tiny_run("mlm")), seed=0)


@pytest.mark.parametrize("objective", OBJECTIVES.names())
def test_every_objective_is_read_by_its_own_rules(tiny_run, objective):
    """Third-party objectives included: tasks know only the declared pooling and scoring rule."""
    model = TrainedModel(tiny_run(objective))
    rows = build("sentiment", readings=["probe"], mean_pooling=False).run(model, seed=0).rows
    assert {r["pooling"] for r in rows} == {model.objective.pooling, None}
    rows = build("agreement", max_per_phenomenon=1).run(model, seed=0).rows
    scored = {r["metric"] for r in rows if "@" not in r["metric"]} - set(READING_DIAGNOSTICS)
    assert scored == ({NOT_APPLICABLE} if model.objective.score_kind == "none" else {"acc_sum", "acc_mean"})
    assert any(r["metric"] == "acc_sum@unigram" for r in rows)  # baselines whatever the objective


def test_pos_streams_layers_with_the_same_rows_and_caps_words(tiny_run, monkeypatch):
    """Reading one layer at a time (a small `FEATURE_BYTES`) gives the rows and items of
    reading every layer at once; `max_words` keeps whole sentences, the same for every model."""
    from objbench.tasks import builtin, probing

    model = TrainedModel(tiny_run("mlm"))
    reads = []
    real = model.word_features
    monkeypatch.setattr(model, "word_features", lambda *a, **k: reads.append(a[2]) or real(*a, **k))
    together = build("pos").run(model, seed=0)
    assert reads == [[0, 1, 2]] * 3  # every layer in one pass per split
    reads.clear()
    monkeypatch.setattr(probing, "FEATURE_BYTES", 1)
    one_at_a_time = build("pos").run(model, seed=0)
    assert reads == [[0]] * 3 + [[1]] * 3 + [[2]] * 3
    assert one_at_a_time.rows == together.rows and one_at_a_time.items == together.items

    data, ids = builtin.subsets(probe_data.load_pos(), build("pos").options.caps())
    capped, capped_ids = builtin.word_capped(data, ids, 60)
    for split in builtin.SPLITS:
        assert 0 < sum(len(w) for w in capped[split]["words"]) <= 60 < sum(len(w) for w in data[split]["words"])
        assert set(capped_ids[split]) < set(ids[split])
        positions = [ids[split].index(i) for i in capped_ids[split]]
        assert positions == sorted(positions)  # in split order, like every subset
    assert builtin.word_capped(data, ids, 10**6) == (data, ids)
    assert all(len(i) == 1 for i in builtin.word_capped(data, ids, 1)[1].values())  # one sentence at least
    other = TrainedModel(tiny_run("clm"))
    tested = lambda m: {i["item"].split(":")[0] for i in build("pos", max_words=60).run(m, seed=0).items}
    assert tested(model) == tested(other) <= set(capped_ids["test"])
