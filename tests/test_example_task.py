"""The example third-party task (examples/objbench-proper-nouns), installed by conftest, read by hand."""

from __future__ import annotations

import numpy as np

from objbench.harness.reading import TrainedModel
from objbench.harness.registry import TASKS
from objbench.tasks import SPLITS, subsets
from objbench.tasks.probe_data import load_pos

OPTIONS = {"max_train": 30, "max_validation": 10, "max_test": 10, "max_iter": 50}


def test_the_example_task_is_a_registered_plugin():
    cls = TASKS.get("proper-nouns")
    assert cls.__module__ == "objbench_proper_nouns"  # from the installed package, not objbench
    noun_kind = __import__(cls.__module__).noun_kind
    assert [noun_kind(t) for t in ("np", "nps$", "np-tl", "nn-hl", "nns", "nr", "np+bez", "vb")] == [
        "proper", "proper", "proper", "common", "common", None, None, None]


def nouns(data, ids, split: str) -> list[tuple[str, str, bool]]:
    """(item id, word, is proper) of every noun in a split, straight from Brown's tags."""
    kind = lambda tag: tag.split("-")[0].rstrip("$")
    return [(f"{i}:{j}", w, kind(t) in ("np", "nps"))
            for i, words, tags in zip(ids[split], data[split]["words"], data[split]["brown_tags"])
            for j, (w, t) in enumerate(zip(words, tags)) if kind(t) in ("nn", "nns", "np", "nps")]


def test_the_example_task_probes_every_noun_against_the_capitalisation_baseline(tiny_run):
    cls = TASKS.get("proper-nouns")
    result = cls(cls.Options(**OPTIONS)).run(TrainedModel(tiny_run("mlm")), seed=0)
    rows = {(r["metric"], r["layer"], r["split"]): r for r in result.rows}
    data, ids = subsets(load_pos(), {s: OPTIONS[f"max_{s}"] for s in SPLITS})  # the sentences it keeps
    test, train = nouns(data, ids, "test"), nouns(data, ids, "train")
    assert {i["item"] for i in result.items} == {item for item, _, _ in test}
    proper = np.array([p for _, _, p in test])
    capitalised = np.array([w[0].isupper() for _, w, _ in test])
    assert rows["probe_acc@capitalised", None, "test"]["value"] == np.mean(capitalised == proper)
    train_majority = np.mean([p for _, _, p in train]) > 0.5
    assert rows["probe_acc@majority", None, "test"]["value"] == np.mean(proper == train_majority)
    assert 0 < proper.mean() < 1 and rows["probe_acc", 0, "test"]["n"] == len(test)
    assert {m for m, _, s in rows if s == "test"} >= {"words_dropped", "sentences_truncated", "tokens_truncated"}
