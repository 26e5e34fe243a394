"""Reading a trained model: words aligned by index, one length limit for every reader, no empty input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import normalizers

from objbench.harness.errors import EmptyInputError, ObjbenchError
from objbench.harness.reading import TrainedModel
from objbench.tasks.probing import pooled_features

# words that yield no sub-token under the runs' NFKC normaliser and BERT pre-tokenizer
NO_TOKEN = ["", " ", "\xa0", "\u3000"]


def by_hand(model: TrainedModel, words: list[str], limit: int | None = None) -> np.ndarray:
    """Every layer at each word's first sub-token, from one unpadded forward pass over the
    first ``limit`` tokens."""
    enc = model.encode_words(words)
    ids, word_ids = enc.ids[:limit], enc.word_ids[:limit]
    first = [word_ids.index(w) + 1 for w in sorted(set(word_ids))]  # +1 for [CLS]
    x = torch.tensor([[model.vocab["[CLS]"], *ids]])
    with torch.no_grad():
        layers = model.model(x, model.objective.reading_attention, None, torch.zeros_like(x), all_layers=True)
    return torch.stack(layers, 1)[0, :, first].transpose(0, 1).numpy()  # (words, layers, D)


def test_words_without_sub_tokens_are_dropped_and_labels_stay_aligned(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    words = ["the", NO_TOKEN[0], "market", NO_TOKEN[1], "fell", NO_TOKEN[2], "sharply", NO_TOKEN[3], "today"]
    tags = ["DET", "X1", "NOUN", "X2", "VERB", "X3", "ADV", "X4", "NOUN"]
    clean = [w for w in words if w.strip()]
    [read] = model.word_features([words])
    assert read.word_index.tolist() == [0, 2, 4, 6, 8]
    assert read.align(tags) == ["DET", "NOUN", "VERB", "ADV", "NOUN"]
    assert read.align(words) == clean
    np.testing.assert_allclose(read.features, by_hand(model, clean), atol=1e-5)
    # the words that remain read exactly as the sentence without the others
    [alone] = model.word_features([clean])
    np.testing.assert_allclose(read.features, alone.features, atol=1e-6)


def test_characters_the_normaliser_removes_drop_their_word(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    # a BERT-style normaliser (as a user's tokenizer file may have) deletes control characters
    model.tokenizer.normalizer = normalizers.Sequence([
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                   lowercase=False), normalizers.NFKC()])
    words, tags = ["shares", "\x00\ufffd", "rose", "\x07", "again"], ["NOUN", "X", "VERB", "X", "ADV"]
    [read] = model.word_features([words, ["a", "b"]], batch_size=2)[:1]
    assert read.word_index.tolist() == [0, 2, 4] and read.align(tags) == ["NOUN", "VERB", "ADV"]


def test_a_long_sentence_reads_its_first_words_to_the_limit(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    model.max_tokens = 6
    words = "the company said it expects higher sales next year".split()
    [read] = model.word_features([words])
    enc = model.encode_words(words)
    assert len(enc.ids) > 6
    within = sorted({w for w in enc.word_ids[:6]})
    assert read.word_index.tolist() == within
    np.testing.assert_allclose(read.features, by_hand(model, words, limit=6), atol=1e-5)


@pytest.mark.parametrize("objective", ["mlm", "masked-ar"])
def test_the_limit_is_the_objective_s_and_every_reader_keeps_to_it(tiny_run, objective):
    model = TrainedModel(tiny_run(objective))
    max_len = model.cfg.model.max_len
    assert model.max_tokens == model.objective.max_tokens(max_len) == max_len - (2 if objective == "masked-ar" else 1)
    long = " ".join(["the market fell sharply"] * 60)
    assert len(model.tokens(long)) > model.max_tokens
    assert model.inputs([long]).lengths.tolist() == [model.max_tokens + 1]
    _, counts = model.score([long])  # scoring rows fit the position table at the limit
    assert counts.tolist() == [model.max_tokens]
    [read] = model.word_features([long.split()])
    word_ids = model.encode_words(long.split()).word_ids
    assert read.word_index.tolist() == sorted(set(word_ids[: model.max_tokens])) != sorted(set(word_ids))


def test_a_pair_is_cut_longest_first_to_fit(tiny_run):
    model = TrainedModel(tiny_run("mlm"))
    model.max_tokens = 12
    long, short = "the company said it expects higher sales next year and more", "shares fell"
    a, b = model.pair_ids(long, short)
    assert b == model.tokens(short) and a == model.tokens(long)[: 12 - 2 - len(b)]
    a, b = model.pair_ids(long, long)
    assert len(a) + len(b) + 2 == 12 and abs(len(a) - len(b)) <= 1
    x = model.inputs([(long, short), "the market fell"])
    assert x.lengths.tolist() == [13, 4]  # [CLS] A [SEP] B [SEP] in 13 <= max_len positions
    assert model.length((long, short)) == len(model.tokens(long)) + len(model.tokens(short)) + 2


@pytest.mark.parametrize("empty", ["", " \xa0\u3000"])
def test_empty_input_is_refused_by_every_reader(tiny_run, empty):
    model = TrainedModel(tiny_run("mlm"))
    assert issubclass(EmptyInputError, ObjbenchError)
    for read in (lambda: model.inputs(["the market", empty]),
                 lambda: model.inputs([("the market", empty)]),
                 lambda: model.sentence_features([empty]),
                 lambda: pooled_features(model, ["the market", empty]),
                 lambda: model.score(["the market", empty]),
                 lambda: model.word_features([["the", "market"], [empty, empty]])):
        with pytest.raises(EmptyInputError, match="no (word has a )?token"):
            read()
    assert model.length(empty) == 0 and model.length(("the market", empty)) == 0
