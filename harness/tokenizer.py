"""A subword tokenizer trained once per (corpus, settings) with Hugging Face `tokenizers`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from objbench.harness.config import DataConfig
from objbench.harness.errors import DataError
from objbench.harness.integrity import cached_entry
from objbench.harness.sources import cache_dir
from objbench.objectives.base import Vocab, special_tokens


def tokenizer_key(corpus_hash: str, kind: str, vocab_size: int, specials: list[str]) -> str:
    blob = json.dumps([corpus_hash, kind, vocab_size, specials]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_tokenizer(train: Dataset, corpus_hash: str, kind: str, vocab_size: int,
                    specials: list[str]) -> tuple[Tokenizer, Path]:
    """Train (or load from the cache) a cased WordPiece/BPE tokenizer on the training split.

    Specials come first in the vocabulary, in the order given, so their ids are
    ``0 .. len(specials)-1`` for every tokenizer objbench builds. The cached file is checked
    against its recorded sha256 when first opened in a process, and rebuilt if it differs.
    """
    def build(path: Path) -> None:
        _train(train, kind, vocab_size, specials).save(str(path))

    key = tokenizer_key(corpus_hash, kind, vocab_size, specials)
    path = cached_entry(cache_dir() / "tokenizers" / f"{key}.json", build)
    return Tokenizer.from_file(str(path)), path


def _train(train: Dataset, kind: str, vocab_size: int, specials: list[str]) -> Tokenizer:
    """A cased WordPiece or BPE tokenizer trained on the ``text`` column of ``train``."""
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                            show_progress=False)
        tok.decoder = decoders.WordPiece()
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      continuing_subword_prefix="##", show_progress=False)
        tok.decoder = decoders.BPEDecoder()
    tok.normalizer = normalizers.NFKC()  # cased: the news corpus keeps its capitals
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator((b["text"] for b in train.iter(batch_size=1000)), trainer=trainer,
                            length=len(train))
    return tok


def load_tokenizer_file(path: str | Path, specials: list[str]) -> Tokenizer:
    """A user's tokenizer.json; it must already contain every special token we need."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"tokenizer file {p} does not exist (data.tokenizer_file)")
    tok = Tokenizer.from_file(str(p))
    missing = [s for s in specials if tok.token_to_id(s) is None]
    if missing:
        raise DataError(f"tokenizer {p} lacks the special tokens {missing}; add them, or leave "
                        f"data.tokenizer_file unset to train one")
    ids = [tok.token_to_id(s) for s in specials]
    if sorted(ids) != list(range(len(specials))):
        raise DataError(f"tokenizer {p}: special tokens must have the first ids 0..{len(specials)-1} "
                        f"(random replacements draw from the ids after them); got {dict(zip(specials, ids))}")
    return tok


def config_vocab(cfg: DataConfig) -> Vocab:
    """The vocabulary a data config promises before any tokenizer exists: ``data.vocab_size``
    ids with the specials first (as in every tokenizer objbench builds or accepts), each id a
    word start. Enough to build an objective and check a config against the model before
    any data is prepared; training reads `vocab_of` the real tokenizer."""
    specials = special_tokens(cfg.special_tokens)
    return Vocab(cfg.vocab_size, {s: i for i, s in enumerate(specials)},
                 torch.ones(cfg.vocab_size, dtype=torch.bool))


def vocab_of(tok: Tokenizer, specials: list[str]) -> Vocab:
    """What objectives may know: size, special ids, and which tokens start a word."""
    size = tok.get_vocab_size()
    word_start = torch.ones(size, dtype=torch.bool)
    for token, i in tok.get_vocab().items():
        if token.startswith("##"):
            word_start[i] = False
    return Vocab(size, {s: tok.token_to_id(s) for s in specials}, word_start)
