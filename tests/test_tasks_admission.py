"""Admission: the task's rules for long and empty sentences, counted, and what built-in tasks do with them."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from objbench.harness.cli import main
from objbench.harness.config import validate
from objbench.harness.errors import DataError, EmptyInputError
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import TASKS
from objbench.tasks import probe_data
from objbench.tasks.admission import Admission
from objbench.tasks.base import READING_DIAGNOSTICS
from objbench.tasks.base import ReadingOptions, TaskResult

TEXTS = ["the market fell", "the company said it expects higher sales next year", "shares rose",
         "a new york bank reported a loss of one billion dollars in the third quarter"]
NO_TOKEN = ["", " ", "\xa0", "\u3000"]  # words that yield no sub-token


def rows_of(admission: Admission) -> dict[tuple[str, str], dict]:
    result = TaskResult(admission.task)
    admission.add_rows(result)
    assert all(r["higher_is_better"] is False and r["metric"] in READING_DIAGNOSTICS for r in result.rows)
    return {(r["metric"], r["split"]): r for r in result.rows}


@pytest.fixture
def model(tiny_run) -> TrainedModel:
    model = TrainedModel(tiny_run("mlm"))
    model.max_tokens = 8  # two of TEXTS are longer
    return model


def test_long_sentences_are_truncated_and_counted_per_split(model):
    lengths = [len(model.tokens(t)) for t in TEXTS]
    assert sorted(lengths)[1] <= 8 < sorted(lengths)[2]
    admission = Admission(model, "demo", ReadingOptions())
    assert admission.sentences(TEXTS, "train").all()
    assert admission.sentences(TEXTS[:1], "test").all()
    rows = rows_of(admission)
    assert set(rows) == {(m, s) for m in ("sentences_truncated", "tokens_truncated") for s in ("train", "test")}
    assert rows["sentences_truncated", "train"]["value"] == 2 and rows["sentences_truncated", "train"]["n"] == 4
    assert rows["tokens_truncated", "train"]["value"] == sum(n - 8 for n in lengths if n > 8)
    assert rows["tokens_truncated", "test"]["value"] == 0 and rows["tokens_truncated", "test"]["n"] == 1


def test_long_sentences_can_be_skipped_instead(model):
    admission = Admission(model, "demo", ReadingOptions(long_sentences="skip"))
    keep = admission.sentences(TEXTS, "test")
    assert keep.tolist() == [len(model.tokens(t)) <= 8 for t in TEXTS] == [True, False, True, False]
    assert {k: r["value"] for k, r in rows_of(admission).items()} == {("sentences_skipped", "test"): 2}


def test_a_pair_counts_both_sentences_and_its_separators(model):
    pair = ("the market fell", "the company said it")
    a, b = (len(model.tokens(t)) for t in pair)
    assert a <= 8 and b <= 8 < a + b + 2  # each half fits alone; the pair does not
    admission = Admission(model, "demo", ReadingOptions())
    admission.sentences([pair], "test")
    assert rows_of(admission)["tokens_truncated", "test"]["value"] == a + b + 2 - 8


def test_an_empty_sentence_is_an_error_naming_task_split_and_item(model):
    admission = Admission(model, "demo", ReadingOptions())
    named = r"task 'demo', split 'validation', sentence 17: .*'\\xa0'.*empty_sentences: skip"
    with pytest.raises(EmptyInputError, match=named):
        admission.sentences(["the market", "\xa0"], "validation", ids=["3", "17"])
    with pytest.raises(EmptyInputError, match="sentence 1:"):  # a pair with an empty half is empty
        admission.sentences([("the market", "fell"), ("the market", "")], "test")


def test_empty_sentences_can_be_skipped_and_counted(model):
    admission = Admission(model, "demo", ReadingOptions(empty_sentences="skip"))
    assert admission.sentences(["the market", "", " \u3000", "fell"], "train").tolist() == [True, False, False, True]
    rows = rows_of(admission)
    assert rows["sentences_empty", "train"]["value"] == 2 and rows["sentences_empty", "train"]["n"] == 4


def test_nothing_readable_is_an_error(model):
    admission = Admission(model, "demo", ReadingOptions(long_sentences="skip"))
    with pytest.raises(DataError, match=r"'demo', split 'test': none of its 2 sentences.*2 longer than 8"):
        admission.sentences(TEXTS[1::2], "test")


def test_words_without_sub_tokens_are_counted(model):
    admission = Admission(model, "demo", ReadingOptions(empty_sentences="skip"))
    sentences = [["the", "", "market", "\xa0", "fell"], [" ", "\u3000"], ["shares", "rose"]]
    assert admission.words(sentences, "test").tolist() == [True, False, True]
    rows = rows_of(admission)
    assert rows["words_dropped", "test"]["value"] == 2 and rows["words_dropped", "test"]["n"] == 7
    assert rows["sentences_empty", "test"]["value"] == 1


# --- the built-in tasks ---------------------------------------------------------------------------

def build(name: str, **options):
    cls = TASKS.get(name)
    return cls(validate(cls.Options, options, where=f"task {name!r}"))


def test_every_built_in_task_has_the_reading_options():
    for name in TASKS.names():
        assert issubclass(TASKS.get(name).Options, ReadingOptions), name


def tagged_splits(seed: int = 0) -> datasets.DatasetDict:
    """Sentences whose tags follow from their words, with no-token words in the middle tagged X."""
    rng = np.random.default_rng(seed)
    lexicon = {"DET": ["the", "a"], "NOUN": ["market", "company", "bank", "shares"],
               "VERB": ["fell", "rose", "said"], "ADV": ["sharply", "also"]}
    out = {}
    for split, n in (("train", 40), ("validation", 10), ("test", 10)):
        words, tags = [], []
        for _ in range(n):
            ws, ts = [], []
            for tag in ("DET", "NOUN", "VERB", "ADV"):
                if ws and rng.random() < 0.5:
                    ws.append(str(rng.choice(NO_TOKEN)))
                    ts.append("X")
                ws.append(str(rng.choice(lexicon[tag])))
                ts.append(tag)
            words.append(ws)
            tags.append(ts)
        out[split] = datasets.Dataset.from_dict({"words": words, "tags": tags, "doc": [split] * n})
    return datasets.DatasetDict(out)


def test_pos_drops_words_without_sub_tokens_with_their_labels(tiny_run, monkeypatch):
    data = tagged_splits()
    monkeypatch.setattr(probe_data, "load_pos", lambda: data)
    result = build("pos", max_iter=100).run(TrainedModel(tiny_run("mlm")), seed=0)
    rows = {(r["metric"], r["layer"], r["split"]): r for r in result.rows}
    for split in ("train", "validation", "test"):
        tags = [t for ts in data[split]["tags"] for t in ts]
        assert rows["words_dropped", None, split]["value"] == tags.count("X") > 0
        assert rows["words_dropped", None, split]["n"] == len(tags)
    # every test word with a token is an item, named by its place in the sentence
    expected = {f"{i}:{j}" for i, ts in enumerate(data["test"]["tags"]) for j, t in enumerate(ts) if t != "X"}
    assert {i["item"] for i in result.items} == expected
    assert rows["probe_acc@majority", None, "test"]["n"] == len(expected)
    # labels stay with their words: word identity decides the tag, and the embeddings read it
    assert rows["probe_acc", 0, "test"]["value"] == 1.0


def test_a_skipped_test_item_leaves_the_items_and_the_rest_keep_their_ids(tiny_run, monkeypatch):
    long = " ".join(["a fine and moving film"] * 40)
    texts = ["a fine film", "dull", long, "great fun", "a mess", "moving"]
    split = datasets.Dataset.from_dict({"text": texts, "label": [1, 0, 1, 1, 0, 1], "movie": list("abcdef")})
    monkeypatch.setattr(probe_data, "load_sentiment", lambda: datasets.DatasetDict(
        train=split, validation=split, test=split))
    model = TrainedModel(tiny_run("mlm"))
    assert len(model.tokens(long)) > model.max_tokens
    skip = build("sentiment", long_sentences="skip", max_iter=20).run(model, seed=0)
    assert {i["item"] for i in skip.items} == {"0", "1", "3", "4", "5"}
    assert [r["value"] for r in skip.rows if r["metric"] == "sentences_skipped" and r["split"] == "test"] == [1]
    cut = build("sentiment", max_iter=20).run(model, seed=0)
    assert {i["item"] for i in cut.items} == {str(i) for i in range(6)}
    [truncated] = [r for r in cut.rows if r["metric"] == "tokens_truncated" and r["split"] == "test"]
    assert truncated["value"] == len(model.tokens(long)) - model.max_tokens and truncated["n"] == 6


def test_agreement_skips_a_pair_whole(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    pairs = probe_data.load_agreement(2)
    longer = [max(model.length(g), model.length(b)) for g, b in zip(pairs["good"], pairs["bad"])]
    model.max_tokens = limit = int(np.median(longer))  # about half the pairs fit
    fits = [n <= limit for n in longer]
    assert 0 < sum(fits) < len(fits)
    result = build("agreement", max_per_phenomenon=2, long_sentences="skip").run(model, seed=0)
    kept = {str(i) for i, ok in zip(pairs["sentence_id"], fits) if ok}
    assert {i["item"] for i in result.items if i["metric"] == "acc_sum"} == kept
    [skipped] = [r for r in result.rows if r["metric"] == "sentences_skipped"]
    too_long = sum(model.length(s) > limit for s in [*pairs["good"], *pairs["bad"]])
    assert skipped["value"] == too_long and skipped["n"] == 2 * len(fits)


def test_the_probe_command_reports_an_empty_sentence_in_one_line(tiny_run, monkeypatch, capsys):
    split = datasets.Dataset.from_dict({"text": ["a fine film", "dull", "\u3000", "great fun"],
                                        "label": [1, 0, 1, 0], "movie": list("abcd")})
    monkeypatch.setattr(probe_data, "load_sentiment", lambda: datasets.DatasetDict(
        train=split, validation=split, test=split))
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(tiny_run("mlm")), "--task", "sentiment"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "task 'sentiment', split 'train', sentence 2: no tokens" in err


def test_a_scored_task_names_an_empty_sentence_or_skips_its_pair(tiny_run, monkeypatch):
    pairs = datasets.Dataset.from_dict({
        "good": ["the market fell", "\u3000", "shares rose"], "bad": ["the markets fell", "is", "shares rises"],
        "phenomenon": ["verb_s"] * 3, "sentence_id": [4, 7, 9]})
    monkeypatch.setattr(probe_data, "load_agreement", lambda cap: pairs)
    model = TrainedModel(tiny_run("mlm"))
    with pytest.raises(EmptyInputError, match="task 'agreement', split 'test', sentence 7: no tokens"):
        build("agreement").run(model, seed=0)
    result = build("agreement", empty_sentences="skip").run(model, seed=0)
    assert {i["item"] for i in result.items} == {"4", "9"}
    [empty] = [r for r in result.rows if r["metric"] == "sentences_empty"]
    assert empty["value"] == 1 and empty["n"] == 6


def test_a_hub_task_admits_its_splits_like_the_others(tiny_run, monkeypatch):
    split = datasets.Dataset.from_dict({"text": ["a fine film", "dull", "", "great fun", "a mess"],
                                        "label": [1, 0, 1, 1, 0]})
    monkeypatch.setattr(probe_data, "load_hf_task", lambda spec: datasets.DatasetDict(
        train=split, validation=split, test=split))
    result = build("hf", dataset="local/reviews", empty_sentences="skip", max_iter=20).run(
        TrainedModel(tiny_run("mlm")), seed=0)
    assert {i["item"] for i in result.items} == {"0", "1", "3", "4"}
    assert {(r["split"], r["value"]) for r in result.rows if r["metric"] == "sentences_empty"} == {
        (s, 1) for s in ("train", "validation", "test")}
