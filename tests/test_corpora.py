"""Pre-training corpora: counts, stable splits, repairs, caching and the errors users see."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import datasets
import huggingface_hub
import pandas as pd
import pytest
from objbench.harness import corpora
from objbench.harness.corpora import (
    corpus_fingerprint,
    find_verbatim,
    load_corpus,
    news_provenance,
    ptb_test,
    repair_news_text,
    stable_unit,
)
from objbench.harness.errors import ConfigError, DataError

from tests.conftest import REAL_ARCHIVES

pytestmark = pytest.mark.usefixtures("fresh_cache")


def texts(ds: datasets.DatasetDict) -> dict[str, list[str]]:
    return {split: list(data["text"]) for split, data in ds.items()}


# --- news ---------------------------------------------------------------------------------------

def test_news_has_every_article_with_text():
    news = load_corpus("news")
    provenance = news_provenance()
    assert provenance["articles"] == 3824
    # one row (article_id 1827, an Al Jazeera picture gallery) has neither title nor body
    assert provenance["empty_articles_dropped"] == 1
    assert {split: ds.num_rows for split, ds in news.items()} == {"train": 3645, "validation": 178}
    assert all(t.strip() == t and t for split in texts(news).values() for t in split)
    assert news["train"].column_names == ["text"]


def test_news_damage_is_repaired():
    joined = "\n".join(t for split in texts(load_corpus("news")).values() for t in split)
    # The bytes never held `â€™`-style mojibake: the marks were already flattened to `"`, `?`
    # and U+FFFD upstream. Check that none of those patterns survives.
    assert "â€" not in joined
    assert '"?' not in joined.replace('"? ', "")  # `"?` + space can be a real question
    assert '"\ufffd' not in joined
    assert "don\"t" not in joined and "don't" in joined
    assert news_provenance()["repairs"] == {"apostrophe": 1798, "closing_quote": 4101, "dash": 1630,
                                            "nbsp": 3997, "opening_quote": 289}
    # accented letters lost upstream (Dáil -> D\ufffd\ufffdil) stay, counted
    assert news_provenance()["unrepairable_replacement_chars"] == 2201


@pytest.mark.parametrize("damaged, repaired", [
    ('The Senate voted on DeVos"?highly contentious', "The Senate voted on DeVos' highly contentious"),
    ('"It is hard to imagine a worse choice,"?Sen. Warren', '"It is hard to imagine a worse choice," Sen. Warren'),
    ('could determine "?at least temporarily "?the fate', "could determine - at least temporarily - the fate"),
    ('of "true Detective"?fame', 'of "true Detective" fame'),
    ('he doesn"t and I"ve', "he doesn't and I've"),
    ('sings "�Finishing the Hat," Trump"�s', 'sings "Finishing the Hat," Trump\'s'),
    ("Source:-Al Jazeera. It was.-The end", "Source: Al Jazeera. It was. The end"),
    ('Republicans"�\xa0resistance', "Republicans' resistance"),
    ("Sinn F��in stays", "Sinn F��in stays"),
])
def test_repair_news_text(damaged, repaired):
    assert repair_news_text(damaged, Counter()) == repaired


@pytest.mark.slow  # cleans the news corpus twice from its archive: ~5 s
def test_news_split_is_by_article_hash_and_deterministic(tmp_path, monkeypatch):
    first = load_corpus("news")
    monkeypatch.setenv("OBJBENCH_CACHE", str(tmp_path))
    (tmp_path / "archives").symlink_to(REAL_ARCHIVES, target_is_directory=True)
    rebuilt = load_corpus("news")
    assert corpus_fingerprint(rebuilt) == corpus_fingerprint(first)
    assert not list((tmp_path / "corpora").glob(".*")), "a temporary build folder was left behind"
    # a different fraction is a different cache entry with a different split
    larger = load_corpus("news", validation_fraction=0.2)
    assert 0.17 < larger["validation"].num_rows / 3823 < 0.23
    assert set(texts(first)["validation"]) <= set(texts(larger)["validation"])


def test_stable_unit_is_pinned():
    # sha256-based, so identical on every machine and Python version
    assert stable_unit("news:1") == pytest.approx(0.960454, abs=1e-6)
    units = [stable_unit(f"k{i}") for i in range(2000)]
    assert 0.45 < sum(u < 0.5 for u in units) / len(units) < 0.55


def test_warm_load_reads_the_cache(monkeypatch):
    load_corpus("news")
    load_corpus("ptb")

    def fail(*_):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(corpora, "_build_news", fail)
    monkeypatch.setattr(corpora, "_build_ptb", fail)
    assert load_corpus("news")["validation"].num_rows == 178
    assert load_corpus("ptb")["validation"].num_rows == 3370


# --- ptb ----------------------------------------------------------------------------------------

def test_ptb_token_counts():
    ptb = load_corpus("ptb")
    splits = {"train": ptb["train"], "validation": ptb["validation"], "test": ptb_test()}
    lines = {name: ds.num_rows for name, ds in splits.items()}
    tokens = {name: sum(len(t.split()) for t in ds["text"]) for name, ds in splits.items()}
    # The published counts are whitespace tokens WITHOUT an end-of-line marker; one row per line.
    assert tokens == {"train": 887_521, "validation": 70_390, "test": 78_669}
    assert lines == {"train": 42_068, "validation": 3_370, "test": 3_761}
    # with an <eos> per line: the 929k / 73k / 82k usually quoted for PTB language modelling
    assert {n: tokens[n] + lines[n] for n in tokens} == {"train": 929_589, "validation": 73_760,
                                                         "test": 82_430}
    assert ptb["train"][1]["text"] == "pierre <unk> N years old will join the board as a nonexecutive director nov. N"


def test_ptb_fingerprint_is_pinned():
    # raw text with no cleaning: this only changes if the archive or the line splitting does
    assert corpus_fingerprint(load_corpus("ptb")) == (
        "e2cfc92f86bf7eb4373e0d262f5fac7936d0842f8f85307ff030e67b03a9a6c1")


# --- fingerprint --------------------------------------------------------------------------------

def test_fingerprint_tracks_content_and_split():
    a = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x y", "z"]}),
                              "validation": datasets.Dataset.from_dict({"text": ["w"]})})
    same = datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["w"]}),
                                 "train": datasets.Dataset.from_dict({"text": ["x y", "z"]})})
    moved = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x y"]}),
                                  "validation": datasets.Dataset.from_dict({"text": ["z", "w"]})})
    rejoined = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x", "y z"]}),
                                     "validation": datasets.Dataset.from_dict({"text": ["w"]})})
    assert corpus_fingerprint(a) == corpus_fingerprint(same)
    assert len({corpus_fingerprint(d) for d in (a, moved, rejoined)}) == 3


# --- local files --------------------------------------------------------------------------------

def write_docs(folder: Path, count: int) -> list[str]:
    docs = [f"document {i} line one\nline two of {i}" for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_bytes("\r\n\r\n\r\n".join(d.replace("\n", "\r\n") for d in docs[:10]).encode())
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jsonl").write_text(
        "\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs[10:20])) + '\n{"text": "  "}\n')
    pd.DataFrame({"text": docs[20:] + [None], "other": range(count - 19)}).to_parquet(folder / "c.parquet")
    (folder / "notes.md").write_text("ignored")
    return docs


def test_local_folder_of_mixed_files(tmp_path):
    docs = write_docs(tmp_path / "corpus", 40)
    ds = load_corpus(str(tmp_path / "corpus"), validation_fraction=0.25)
    got = texts(ds)
    assert sorted(got["train"] + got["validation"]) == sorted(docs)  # CRLF and blanks normalised
    assert 0 < len(got["validation"]) < 20
    # the splits are selections of one table: the fingerprint must see only the selected rows
    plain = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": t}) for s, t in got.items()})
    assert corpus_fingerprint(ds) == corpus_fingerprint(plain)
    # the carve depends on each document's text only: the same documents, alone, split the same way
    alone = texts(load_corpus(str(tmp_path / "corpus" / "a.txt"), validation_fraction=0.25))
    assert set(alone["validation"]) == set(got["validation"]) & set(docs[:10])


def test_tiny_corpus_still_gets_a_validation_document(tmp_path):
    (tmp_path / "two.txt").write_text("first doc\n\nsecond doc\n")
    ds = load_corpus(str(tmp_path / "two.txt"))
    assert ds["train"].num_rows == 1 and ds["validation"].num_rows == 1


@pytest.mark.parametrize("name, content, pattern", [
    ("missing.txt", None, "no file or folder at"),
    ("corpus.csv", "a,b\n", re.escape("type '.csv'; supported: .txt, .jsonl, .parquet")),
    ("blank.txt", "\n\n   \n\n", r"blank\.txt is empty: no text"),
    ("empty.txt", "", r"empty\.txt is empty"),
    ("nul.txt", "\0\0\0\0", r"nul\.txt is empty: no text, only whitespace or NUL bytes"),
    ("blanks.jsonl", '{"text": "  "}\n{"text": "\\u0000"}\n', "has no non-empty documents"),
    ("one.txt", "only one document\n", "at least 2 are needed"),
    ("fields.jsonl", '{"body": "x"}\n', re.escape("have no 'text' field; found ['body']")),
    ("broken.jsonl", '{"text": "ok"}\n\n{"text": oops\n', r"broken\.jsonl: line 3 is not valid JSON \(Expecting value, column 10\)"),
    ("list.jsonl", '{"text": "ok"}\n["text"]\n', r"list\.jsonl: line 2 is not a JSON object"),
    ("broken.parquet", "not parquet", r"cannot read .*broken\.parquet: Parquet magic bytes"),
])
def test_bad_local_input(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=pattern) as error:
        load_corpus(path)
    if content is None or name == "corpus.csv":
        assert str(path.resolve() if content is None else path) in str(error.value)


def test_undecodable_bytes_name_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine text\n\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"latin1\.txt: bytes at offset 14 are not valid UTF-8"):
        load_corpus(str(path))
    # an invalid byte straddling the 1 MiB read blocks is located exactly too
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * ((1 << 20) - 1) + "é".encode()[:1] + b"\xff")
    with pytest.raises(DataError, match=f"offset {(1 << 20) - 1} "):
        load_corpus(str(big))


def test_folder_without_corpus_files(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError, match="holds no corpus files"):
        load_corpus(str(tmp_path))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_validation_fraction_must_be_a_share(fraction):
    with pytest.raises(ConfigError, match="validation_fraction"):
        load_corpus("news", validation_fraction=fraction)


# --- hub ----------------------------------------------------------------------------------------

def test_hub_source_offline_explains_hub_access(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="needs Hugging Face hub access"):
        load_corpus("hf:wikitext/wikitext-103-raw-v1")


def test_hub_spec_must_parse():
    with pytest.raises(ConfigError, match="expected 'hf:<dataset>"):
        load_corpus("hf:a/b/c/d")


def test_hub_dataset_normalised(monkeypatch):
    calls = []

    def fake_hub(source, name, config):
        calls.append((name, config))
        rows = [f"story {i}" for i in range(60)] + ["", "  "]
        train = datasets.Dataset.from_dict({"story": rows, "n": list(range(62))})
        if config == "with-validation":
            return datasets.DatasetDict({"train": train, "validation": train.select(range(5))})
        return datasets.DatasetDict({"train": train})

    monkeypatch.setattr(corpora, "hub_dataset", fake_hub)
    carved = load_corpus("hf:owner/tiny/default#story", validation_fraction=0.2)
    assert calls[-1] == ("owner/tiny", "default")
    assert carved["train"].column_names == ["text"]
    assert carved["train"].num_rows + carved["validation"].num_rows == 60
    given = load_corpus("hf:tiny/with-validation#story")
    assert calls[-1] == ("tiny", "with-validation")
    assert list(given["validation"]["text"]) == [f"story {i}" for i in range(5)]
    with pytest.raises(DataError, match="no column 'text'; columns are \\['story', 'n'\\]"):
        load_corpus("hf:tiny")


# --- contamination helper -----------------------------------------------------------------------

def test_find_verbatim_ignores_case_and_punctuation():
    corpus = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": ["Before. The quick brown fox jumps over the lazy dog, again! After."]})})
    sentences = ["the quick brown fox jumps over the lazy dog again",  # found
                 "The quick brown fox jumps over the lazy cat again",  # one word differs
                 "quick brown fox",                                    # too short to count
                 "he quick brown fox jumps over the lazy dog"]         # not on word boundaries
    assert find_verbatim(sentences, corpus) == [0]
