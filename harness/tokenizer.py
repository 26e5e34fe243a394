"""A subword tokenizer trained once per (corpus, settings) with Hugging Face `tokenizers`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from objbench.harness.errors import DataError
from objbench.harness.sources import cache_dir
from objbench.objectives.base import Vocab


def tokenizer_key(corpus_hash: str, kind: str, vocab_size: int, specials: list[str]) -> str:
    blob = json.dumps([corpus_hash, kind, vocab_size, specials]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_tokenizer(train: Dataset, corpus_hash: str, kind: str, vocab_size: int,
                    specials: list[str]) -> tuple[Tokenizer, Path]:
    """Train (or load from the cache) a cased WordPiece/BPE tokenizer on the training split.

    Specials come first in the vocabulary, in the order given, so their ids are
    ``0 .. len(specials)-1`` for every tokenizer objbench builds.
    """
    path = cache_dir() / "tokenizers" / f"{tokenizer_key(corpus_hash, kind, vocab_size, specials)}.json"
    if path.exists():
        return Tokenizer.from_file(str(path)), path
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return tok, path


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


def vocab_of(tok: Tokenizer, specials: list[str]) -> Vocab:
    """What objectives may know: size, special ids, and which tokens start a word."""
    size = tok.get_vocab_size()
    word_start = torch.ones(size, dtype=torch.bool)
    for token, i in tok.get_vocab().items():
        if token.startswith("##"):
            word_start[i] = False
    return Vocab(size, {s: tok.token_to_id(s) for s in specials}, word_start)
