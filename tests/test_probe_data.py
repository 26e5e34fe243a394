"""Probe data: counts, leak-free splits, the Brown tag mapping, agreement pairs, cloze items and errors."""

from __future__ import annotations

from collections import Counter

import datasets
import huggingface_hub
import pyarrow.compute as pc
import pytest
from objbench.harness.corpora import find_verbatim, load_corpus
from objbench.harness.errors import ConfigError, DataError
from objbench.tasks import probe_data
from objbench.tasks.probe_data import (
    AGREEMENT_PHENOMENA,
    CLOZE_CANDIDATES,
    HFTaskSpec,
    cloze_variants,
    detokenize,
    load_agreement,
    load_cloze,
    load_hf_task,
    load_pos,
    load_sentiment,
    load_stsb,
    probe_provenance,
    universal_tag,
    validate_labelled,
)

UNIVERSAL = {"NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CONJ", "PRT", ".", "X"}


pytestmark = pytest.mark.usefixtures("fresh_cache")


def rows(ds: datasets.DatasetDict) -> dict[str, int]:
    return {split: data.num_rows for split, data in ds.items()}


# --- sentiment ----------------------------------------------------------------------------------

def test_sentiment_counts_and_labels():
    data = load_sentiment()
    assert sum(rows(data).values()) == 12_808
    assert rows(data) == {"train": 9_970, "validation": 1_337, "test": 1_501}
    labels = Counter(label for split in data.values() for label in split["label"])
    assert labels == {1: 7_403, 0: 5_405}  # fresh / rotten
    assert data["train"].column_names == ["text", "label", "movie"]
    assert probe_provenance("sentiment")["plot_rows_dropped"] == 1_097
    # four films share a review text with another film (el_crimen_del_padre_amaro is also listed
    # as the_crime_of_padre_amaro; others share stock snippets like "An absorbing documentary.")
    assert probe_provenance("sentiment")["films_sharing_reviews"] == 4


def test_sentiment_no_film_on_two_sides():
    films = {split: set(data["movie"]) for split, data in load_sentiment().items()}
    assert not films["train"] & films["validation"]
    assert not films["train"] & films["test"]
    assert not films["validation"] & films["test"]
    assert sum(map(len, films.values())) == 508
    reviews = {split: set(data["text"]) for split, data in load_sentiment().items()}
    assert not reviews["train"] & reviews["validation"] and not reviews["train"] & reviews["test"]
    assert not reviews["validation"] & reviews["test"]
    assert {s: len(f) for s, f in films.items()} == {"train": 394, "validation": 51, "test": 63}


# --- sts-b --------------------------------------------------------------------------------------

def test_stsb_counts_and_scores():
    data = load_stsb()
    assert rows(data) == {"train": 5_749, "validation": 1_500, "test": 1_379}
    assert probe_provenance("stsb")["dropped"] == {"train": {}, "validation": {}, "test": {}}
    for split in data.values():
        scores = list(split["score"])
        assert min(scores) == 0.0 and max(scores) == 5.0  # gold scores, test included
    first = data["train"][0]
    assert first["sentence1"] == "A plane is taking off."
    assert first["sentence2"] == "An air plane is taking off."
    assert first["score"] == 5.0


# --- pos ----------------------------------------------------------------------------------------

def test_pos_counts_and_tags():
    data = load_pos()
    assert sum(rows(data).values()) == 57_340
    assert rows(data) == {"train": 46_692, "validation": 3_927, "test": 6_721}
    docs = {split: set(d["doc"]) for split, d in data.items()}
    assert sum(map(len, docs.values())) == 500
    assert {s: len(d) for s, d in docs.items()} == {"train": 402, "validation": 37, "test": 61}
    assert not docs["train"] & docs["validation"] and not docs["train"] & docs["test"]
    assert not docs["validation"] & docs["test"]
    tags = Counter()
    for split in data.values():
        words, sentence_tags = split.data.column("words"), split.data.column("tags")
        assert pc.list_value_length(words).equals(pc.list_value_length(sentence_tags))
        assert pc.list_value_length(words).equals(pc.list_value_length(split.data.column("brown_tags")))
        tags.update(pc.list_flatten(sentence_tags).to_pylist())
    first = data["test"][0]
    assert [universal_tag(t) for t in first["brown_tags"]] == first["tags"]
    assert set(tags) == UNIVERSAL
    assert sum(tags.values()) == 1_161_192
    first = next(row for split in data.values() for row in split if row["doc"] == "ca01")
    assert first["words"][:4] == ["The", "Fulton", "County", "Grand"]  # The/at Fulton/np-tl ...
    assert first["tags"][:4] == ["DET", "NOUN", "NOUN", "ADJ"]


@pytest.mark.parametrize("brown, universal", [
    ("np-tl", "NOUN"), ("nns$", "NOUN"), ("fw-nn", "X"), ("fw-in+at-t", "X"), ("bez*", "VERB"),
    ("ppss+ber", "PRON"), ("md*", "VERB"), ("*", "ADV"), ("*-hl", "ADV"), ("---hl", "."),
    ("--", "."), ("``", "."), ("pp$$", "PRON"), ("nil", "X"), ("wdt", "DET"), ("wrb", "ADV"),
    ("cs", "ADP"), ("ex", "DET"), ("od", "ADJ"), ("rp", "PRT"), ("to", "PRT"), ("uh", "X"),
    ("ppss+ber-n", "PRON"), ("jj-hl", "ADJ"), ("cd$", "NUM"), ("abn", "DET"), ("ql", "ADV"),
])
def test_universal_tag(brown, universal):
    assert universal_tag(brown) == universal


def test_unknown_brown_tag():
    with pytest.raises(DataError, match="'zz' matches no prefix"):
        universal_tag("zz")


# --- agreement ----------------------------------------------------------------------------------

def test_agreement_counts_per_phenomenon():
    pairs = load_agreement()
    assert Counter(pairs["phenomenon"]) == {"be_past": 5_187, "be_present": 4_451, "verb_s": 4_227,
                                            "demonstrative": 2_456, "have": 1_462, "do": 281}
    assert set(pairs["phenomenon"]) == set(AGREEMENT_PHENOMENA)
    assert pairs.column_names == ["good", "bad", "phenomenon", "doc", "sentence_id"]


def test_agreement_pairs_differ_in_one_word():
    pairs = load_agreement()
    swapped = Counter()
    for good, bad, phenomenon in zip(pairs["good"], pairs["bad"], pairs["phenomenon"]):
        assert good != bad
        g, b = good.split(" "), bad.split(" ")
        differ = [(x, y) for x, y in zip(g, b) if x != y]
        assert len(g) == len(b) and len(differ) == 1, (good, bad)
        swapped[phenomenon, differ[0][0].strip("\"'.,;:?!()").lower(),
                differ[0][1].strip("\"'.,;:?!()").lower()] += 1
    forms = {(p, a, b) for p, a, b in swapped if p != "verb_s"}
    assert forms <= {
        ("be_present", "is", "are"), ("be_present", "are", "is"),
        ("be_past", "was", "were"), ("be_past", "were", "was"),
        ("have", "has", "have"), ("have", "have", "has"), ("do", "does", "do"), ("do", "do", "does"),
        ("demonstrative", "this", "these"), ("demonstrative", "that", "those"),
        ("demonstrative", "these", "this"), ("demonstrative", "those", "that")}
    assert all(a == b + "s" or b == a + "s" for p, a, b in swapped if p == "verb_s")
    assert not any(a in ("dare", "dares", "need", "needs") for p, a, _ in swapped if p == "verb_s")


def test_agreement_items_are_independent_and_real():
    pairs = load_agreement()
    assert len(set(pairs["sentence_id"])) == pairs.num_rows  # one pair per sentence
    assert len(set(pairs["good"])) == pairs.num_rows
    lengths = Counter(len(g.split()) for g in pairs["good"])
    assert max(lengths) <= 30
    by_id = {i: g for i, g in zip(pairs["sentence_id"], pairs["good"])}
    pos = load_pos()
    brown = {}  # sentence ids count sentences in Brown file order; load_pos splits them by doc
    for split in pos.values():
        for doc, words in zip(split.data.column("doc").to_pylist(), split.data.column("words").to_pylist()):
            brown.setdefault(doc, []).append(words)
    in_order = [words for doc in sorted(brown) for words in brown[doc]]
    assert all(by_id[i] == detokenize(in_order[i]) for i in by_id)


def test_agreement_keeps_capitalisation():
    pairs = load_agreement()
    starts = [(g.split()[0], b.split()[0]) for g, b in zip(pairs["good"], pairs["bad"])
              if g.split()[0] != b.split()[0]]
    assert ("These", "This") in starts and ("This", "These") in starts
    assert all(g[0].isupper() == b[0].isupper() for g, b in starts if g[0].isalpha())


def test_agreement_cap_is_deterministic_and_nested():
    small, large = load_agreement(50), load_agreement(200)
    assert Counter(small["phenomenon"]) == {p: 50 for p in AGREEMENT_PHENOMENA}
    assert set(small["sentence_id"]) <= set(large["sentence_id"])
    assert list(small["sentence_id"]) == sorted(small["sentence_id"])
    assert list(load_agreement(50)["sentence_id"]) == list(small["sentence_id"])
    assert Counter(load_agreement(1000)["phenomenon"])["do"] == 281
    with pytest.raises(ConfigError, match="max_per_phenomenon"):
        load_agreement(0)


# --- cloze --------------------------------------------------------------------------------------

def test_cloze_counts_and_slots():
    items = load_cloze()
    assert items.column_names == ["words", "position", "answer", "doc", "sentence_id"]
    assert Counter(items["answer"]) == {"of": 9_216, "in": 6_594, "to": 3_363, "for": 3_074, "with": 2_315,
                                        "on": 2_107, "at": 1_921, "by": 1_421}
    assert len(set(items["sentence_id"])) == items.num_rows  # one item per sentence
    for words, position, answer in zip(items["words"], items["position"], items["answer"]):
        assert 5 <= len(words) <= 30 and words[position].lower() == answer and answer in CLOZE_CANDIDATES


def test_cloze_variants_change_only_the_slot_and_keep_capitalisation():
    words = ["In", "the", "morning", "we", "sat", "on", "the", "porch", "."]
    variants = cloze_variants(words, 0)
    assert len(variants) == len(CLOZE_CANDIDATES)
    assert variants[1] == detokenize(words)  # CLOZE_CANDIDATES[1] is "in"
    assert variants[0] == "Of the morning we sat on the porch."
    assert cloze_variants(words, 5)[-1] == "In the morning we sat by the porch."


def test_cloze_cap_is_balanced_deterministic_and_nested():
    small, large = load_cloze(10), load_cloze(40)
    assert Counter(small["answer"]) == {c: 10 for c in CLOZE_CANDIDATES}
    assert set(small["sentence_id"]) <= set(large["sentence_id"])
    assert list(load_cloze(10)["sentence_id"]) == list(small["sentence_id"])
    with pytest.raises(ConfigError, match="max_per_answer"):
        load_cloze(0)


@pytest.mark.parametrize("words, text", [
    (["``", "Yes", ",", "sir", "''", "!"], '"Yes, sir"!'),
    (["He", "paid", "$", "5", "(", "or", "less", ")", "."], "He paid $5 (or less)."),
    (["It", "rose", "5", "%", ";", "then", "--", "fell", "?"], "It rose 5%; then -- fell?"),
    (["I", "don't", "like", "the", "Joneses", "'", "dog", "."], "I don't like the Joneses' dog."),
])
def test_detokenize(words, text):
    assert detokenize(words) == text


# --- no probe text in the pre-training corpus ---------------------------------------------------

@pytest.mark.slow  # every probe sentence against the whole corpus: ~6 s
def test_no_probe_sentence_in_news_corpus():
    news = load_corpus("news")
    sentiment = [t for split in load_sentiment().values() for t in split["text"]]
    sts = [s for split in load_stsb().values() for col in ("sentence1", "sentence2") for s in split[col]]
    agreement = list(load_agreement()["good"])
    probes = sentiment + sts + agreement
    found = find_verbatim(probes, news, min_words=8)
    checked = sum(len(p.split()) >= 8 for p in probes)
    assert checked > 25_000
    assert found == [], f"{len(found)} of {checked} probe sentences occur in news: {[probes[i] for i in found[:5]]}"


# --- validation and hub tasks -------------------------------------------------------------------

def labelled(**columns) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns)})


def test_validate_labelled_errors():
    validate_labelled(labelled(text=["a", "b"], label=[0, 1]), "toy", ["text"], "label")
    with pytest.raises(DataError, match="task 'toy': split 'train' has no field 'text'"):
        validate_labelled(labelled(sentence=["a", "b"], label=[0, 1]), "toy", ["text"], "label")
    with pytest.raises(DataError, match="task 'toy': split 'train' has no field 'label'"):
        validate_labelled(labelled(text=["a", "b"], y=[0, 1]), "toy", ["text"], "label")
    with pytest.raises(DataError, match="task 'toy': split 'train': label field 'label' has a single value -1"):
        validate_labelled(labelled(text=["a", "b"], label=[-1, -1]), "toy", ["text"], "label")
    empty = datasets.Dataset.from_dict({"text": [], "label": []})
    with pytest.raises(DataError, match="task 'toy': split 'data' is empty"):
        validate_labelled(empty, "toy", ["text"], "label")


def test_hf_task_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="needs Hugging Face hub access"):
        load_hf_task(HFTaskSpec(task="sst2", dataset="nyu-mll/glue", config="sst2", text_fields=("sentence",)))


def test_hf_task_spec_is_checked():
    with pytest.raises(ConfigError, match="one or two fields"):
        HFTaskSpec(task="x", dataset="d", text_fields=("a", "b", "c"))
    with pytest.raises(ConfigError, match="lacks \\['validation'\\]"):
        HFTaskSpec(task="x", dataset="d", splits={"train": "train"})


def test_hf_task_normalised(monkeypatch):
    def fake_hub(source, name, config):
        split = datasets.Dataset.from_dict({"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                                            "gold": ["entail", "contradict", "entail"], "idx": [0, 1, 2]})
        return datasets.DatasetDict({"train": split, "dev": split})

    monkeypatch.setattr(probe_data, "hub_dataset", fake_hub)
    spec = HFTaskSpec(task="nli", dataset="some/nli", text_fields=("premise", "hypothesis"),
                      label_field="gold", splits={"train": "train", "validation": "dev"})
    data = load_hf_task(spec)
    assert data["validation"].column_names == ["sentence1", "sentence2", "label"]
    assert list(data["train"]["label"]) == [1, 0, 1]  # sorted: contradict=0, entail=1
    with pytest.raises(DataError, match="has no split 'validation'"):
        load_hf_task(HFTaskSpec(task="nli", dataset="some/nli", text_fields=("premise",), label_field="gold"))
    with pytest.raises(DataError, match="task 'nli': split 'train' has no field 'sentence'"):
        load_hf_task(HFTaskSpec(task="nli", dataset="some/nli", text_fields=("sentence",),
                                label_field="gold", splits={"train": "train", "validation": "dev"}))
